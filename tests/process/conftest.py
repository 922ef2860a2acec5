"""The process tier: tests that start processes (the CLI and entry points as subprocesses, torchrun,
signals, Chromium, the attacked code in the children of tests/children.py). Its marker comes from
tests/conftest.py; the children these tests run are the modules of tests/process/children/."""
