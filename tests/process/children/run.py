"""A run of the toy detector in a child, as an entry point runs it: ``python -m
tests.process.children.run OUT SOURCE... [--delay S] [--max-file-bytes N]``.

``--delay`` slows each forward (time to interrupt it), ``--max-file-bytes`` sets RLIMIT_FSIZE (a
full disk: writing past it fails with EFBIG; Python ignores SIGXFSZ). The exit code is the entry
points' (``kit.cli.main.guarded``): 0, 1 when an image failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from kit.cli import main as cli
from kit.core.targets import get_target
from kit.methods.registry import get_method
from kit.run.runner import LoopSettings, run
from kit.rundir.writer import RunSettings, RunWriter
from tests.conftest import ToyAdapter

if TYPE_CHECKING:
    from kit.core.contract import Adapter


def explain(out: Path, sources: list[Path], *, delay: float) -> int:
    writer = RunWriter(
        RunSettings(upstream="toy", weights="none", method="gradcam", target="class-logit", layers=["feat"]),
        out_dir=out,
    )
    adapter = cast("Adapter", ToyAdapter(delay=delay))  # a duck-typed toy detector
    settings = LoopSettings(layers=["feat"], target=get_target("class-logit"), method=get_method("gradcam"))
    failed = run(adapter, sources=sources, writer=writer, settings=settings)
    writer.finish()
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.process.children.run")
    parser.add_argument("out", type=Path)
    parser.add_argument("sources", type=Path, nargs="+")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-file-bytes", type=int)
    args = parser.parse_args(argv)
    if args.max_file_bytes is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_bytes, args.max_file_bytes))
    return cli.guarded(lambda: explain(args.out, args.sources, delay=args.delay))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
