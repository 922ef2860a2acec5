"""``make cam``'s driver with a slow entry point below it, for the Ctrl-C tests.

``python -m tests.process.children.cam driver DONE [--grace S]``: ``scripts.cam.launch.run_child`` runs
``... entry DONE`` and exits with its code. The entry point, as main_gradcam.py does on Ctrl-C, takes
a moment to write what it finished (DONE) and exits 130; it writes ``DONE.ready`` once it waits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from scripts.cam import launch


def entry(done: Path) -> int:
    def stop(signum: int, frame: FrameType | None) -> None:
        time.sleep(0.5)  # finishing the manifest takes a moment
        done.write_text("manifest")
        sys.exit(130)

    signal.signal(signal.SIGINT, stop)
    Path(f"{done}.ready").write_text("")
    time.sleep(60)
    return 0


def driver(done: Path, grace: float | None) -> int:
    if grace is not None:
        launch.INTERRUPT_GRACE_SECONDS = grace
    command = [sys.executable, "-m", "tests.process.children.cam", "entry", str(done)]
    return launch.run_child(command, cwd=Path.cwd())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.process.children.cam")
    parser.add_argument("role", choices=("driver", "entry"))
    parser.add_argument("done", type=Path)
    parser.add_argument("--grace", type=float)
    args = parser.parse_args(argv)
    return driver(args.done, args.grace) if args.role == "driver" else entry(args.done)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
