"""A child that ends as it is told: ``python -m tests.process.children.ends exit N`` (exit code N),
``... signal NAME`` (killed by its own signal NAME, e.g. SIGTERM), or ``... grow MB SECONDS`` (MB
megabytes written into its memory, then a wait of SECONDS, then exit 0)."""

from __future__ import annotations

import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    how, value, *more = argv
    if how == "grow":
        block = b"x" * (int(value) * 2**20)
        time.sleep(float(more[0]) if more else 0)
        return 0 if block else 1
    if how == "signal":
        os.kill(os.getpid(), signal.Signals[value])
        return 0  # not reached for a signal that ends the process
    return int(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
