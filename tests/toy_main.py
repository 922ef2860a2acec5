"""A main_gradcam.py for the toy detector of conftest.py: the kit's flags and run folder, no upstream.

Run as ``python tests/toy_main.py --source DIR --project P --name N [kit flags]`` or under
``torchrun --nproc-per-node 2 tests/toy_main.py ...``, as a real entry point is. For the tests
that stop a run at a chosen moment, ``TOY_KILL_AT=K`` makes the process SIGKILL itself at the
K-th file it writes into the run folder (``TOY_KILL_RANK``: only that rank), and ``TOY_DELAY``
slows each forward pass (seconds).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kit.api import Explainer  # noqa: E402
from kit.cli import main as cli  # noqa: E402
from kit.rundir import writer as outputs
from kit.upstreams.loaders import Loaded  # noqa: E402
from tests.conftest import ToyAdapter  # noqa: E402


def kill_at(count: int) -> None:
    """SIGKILL this process when it is about to put its ``count``-th file in place."""
    real = os.replace
    calls = [0]

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls[0] += 1
        if calls[0] >= count:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    outputs.os.replace = replace  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--project", default="runs/cam")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")
    parser.add_argument("--img-size", type=int, default=32)
    cli.add_kit_arguments(parser)
    opt = parser.parse_args(argv)
    cli.setup_logging(verbose=opt.verbose)
    cli.check_kit_arguments(opt)
    cli.check_output_folder(
        Path(opt.project) / opt.name,
        flag="--project",
        exist_ok=opt.exist_ok,
        resume=opt.resume,
        overwrite=opt.overwrite,
    )
    kill = os.environ.get("TOY_KILL_AT")
    if kill and os.environ.get("TOY_KILL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        kill_at(int(kill))
    adapter = ToyAdapter(img_size=opt.img_size, delay=float(os.environ.get("TOY_DELAY", "0")))
    explainer = Explainer(
        Loaded(adapter=adapter, weights="toy.pt", settings={"img_size": opt.img_size}), upstream="toy"
    )
    out_dir = cli.run_folder(explainer, Path(opt.project) / opt.name, opt=opt)
    return cli.explain_sources(explainer, opt=opt, source=opt.source, out_dir=out_dir)


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
