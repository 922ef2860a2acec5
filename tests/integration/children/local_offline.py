"""``python local_offline.py LOG MODE ARGS...``: code under test with the network blocked and every
subprocess recorded. An audit hook, installed before the code under test is imported, appends each
network or process-starting event to LOG (one JSON ``[event, args]`` a line) and refuses every
network event with OSError.

MODE ``attempt_load WEIGHTS``: the upstream's attempt_load (its checkout on PYTHONPATH) on WEIGHTS
as given, after an ``["attempt_load", WEIGHTS]`` line in LOG, so that what it did is what follows;
prints the model's class and largest stride as JSON. MODE ``run ENTRY ARGS...``: ENTRY (a
main_gradcam.py) as ``python ENTRY ARGS`` runs it.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from typing import Any

NETWORK = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request")
SPAWN = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork")
MODES = ("attempt_load", "run")


def block_network(log: str) -> None:
    """From now on: network refused, network and process events recorded in ``log``."""

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event in NETWORK or event in SPAWN:
            with open(log, "a") as f:
                f.write(json.dumps([event, repr(args)[:300]]) + "\n")
        if event in NETWORK:
            raise OSError(f"network is blocked in this test ({event})")

    sys.addaudithook(audit)


def attempt_load(log: str, weights: str) -> None:
    from models.experimental import attempt_load

    with open(log, "a") as f:
        f.write(json.dumps(["attempt_load", weights]) + "\n")
    model = attempt_load(weights)  # on the CPU: where each repo's default puts it here
    print(json.dumps({"class": type(model).__name__, "stride": int(model.stride.max())}))


def run(entry: str, args: list[str]) -> None:
    sys.argv = [entry, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(entry))  # as `python ENTRY` has it
    runpy.run_path(entry, run_name="__main__")


def main(argv: list[str]) -> int:
    log, mode, *rest = argv
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    block_network(log)
    if mode == "attempt_load":
        (weights,) = rest
        attempt_load(log, weights)
    else:
        entry, *args = rest
        run(entry, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
