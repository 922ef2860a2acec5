"""The run: request, runner, distributed runs, progress."""
