"""``python torchrun_killed_at.py K ARGS...`` in a checkout (yolov7's, ultralytics'):
``main_gradcam.py ARGS`` as ``python main_gradcam.py ARGS`` runs it, except that the process
SIGKILLs itself when the run folder's writer is about to put its K-th file in place
(kit.rundir.naming does it with os.replace), as a power cut or the OOM killer would stop a run part
way. Exits by that signal (or as main_gradcam.py does, had the run fewer files)."""

from __future__ import annotations

import os
import runpy
import signal
import sys
from typing import Any


def main(argv: list[str]) -> int:
    kill_at, *args = argv
    if int(kill_at) < 1:
        raise ValueError(f"K is the file to be killed at, counted from 1: got {kill_at}")
    sys.path.insert(0, os.getcwd())  # the checkout, as main_gradcam.py's own folder is
    real, calls = os.replace, [0]

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] >= int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, **kwargs)

    os.replace = replace
    sys.argv = ["main_gradcam.py", *args]
    runpy.run_path("main_gradcam.py", run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
