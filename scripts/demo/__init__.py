"""`make demo` (`python -m scripts demo`): the demo detector trained (`train`) on synthetic `shapes`."""
