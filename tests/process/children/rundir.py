"""The run folder in a child: hold a run's lock, read a part file or a manifest under memory limits.

``python -m tests.process.children.rundir hold-lock OUT``: a RunWriter on OUT prints ``locked`` and
holds the folder until stdin closes (or the process is killed).
``... read-part PATH``: one JSON line: the records read, the peak (MB) of parsing one dense line of
the file (the yardstick) and the peak of ``journal.read_part`` over the whole file.
``... load-manifest RUN [--spare-bytes N]``: one JSON line: the manifest, or the error that refused
it; with ``--spare-bytes``, the address space is capped at what the child has mapped plus N.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

from kit.core.errors import OutputError
from kit.rundir import journal, reader


def hold_lock(out: Path) -> int:
    from kit.rundir.writer import RunSettings, RunWriter  # torch: not for the readers (little memory)

    writer = RunWriter(
        RunSettings(
            upstream="toy", weights="toy.pt", method="gradcam", target="class-logit", layers=["feat"]
        ),
        out_dir=out,
    )
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin or kills this process
    writer.finish()
    return 0


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def read_part(path: Path) -> int:
    with path.open("rb") as f:  # what parsing one dense line costs in this process: the yardstick
        f.readline(), f.readline()
        one = json.loads(f.readline())
    del one
    yardstick = peak_mb()
    part = journal.read_part(path, keys=journal.keys_of(["a.jpg", "b.jpg", "c.jpg"]))
    print(
        json.dumps({"entries": len(part.entries), "one_line_mb": yardstick, "peak_mb": peak_mb()}), flush=True
    )
    return 0


def load_manifest(run: Path, *, spare_bytes: int | None) -> int:
    if spare_bytes is not None:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + spare_bytes, mapped + spare_bytes))
    try:
        print(json.dumps({"manifest": reader.load_manifest(run)}))
    except OutputError as error:
        print(json.dumps({"refused": str(error)}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.process.children.rundir")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("hold-lock").add_argument("out", type=Path)
    commands.add_parser("read-part").add_argument("path", type=Path)
    load = commands.add_parser("load-manifest")
    load.add_argument("run", type=Path)
    load.add_argument("--spare-bytes", type=int)
    args = parser.parse_args(argv)
    if args.command == "hold-lock":
        return hold_lock(args.out)
    if args.command == "read-part":
        return read_part(args.path)
    return load_manifest(args.run, spare_bytes=args.spare_bytes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
