"""`make bench`'s driver and its workers agree: every model has a worker that takes the driver's flags.

No timing here: speed is measured by `make bench`, never asserted in a test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from scripts import bench, bench_common


@pytest.mark.parametrize(("upstream", "cfg", "deep", "image"), bench.MODELS, ids=lambda v: str(v))
def test_every_model_has_a_worker_that_parses_the_drivers_flags(
    upstream: str, cfg: str, deep: str, image: str
) -> None:
    assert upstream in bench.WORKERS, f"no worker for {upstream}: add it to scripts/bench.py WORKERS"
    worker = importlib.import_module(bench.WORKERS[upstream])  # imports no upstream code
    assert callable(worker.main)
    assert worker.worker_parser is bench_common.worker_parser  # the flags the driver's arguments are for
    options = bench.build_parser().parse_args(["--detections", "1,10", "--baselines", ""])
    argv = bench_common.worker_arguments(
        checkout=Path("upstreams") / upstream,
        upstream=upstream,
        cfg=cfg,
        deep=deep,
        image=image,
        options=options,
    )
    args = bench_common.worker_parser(worker.__doc__).parse_args(argv)
    assert (args.upstream, args.cfg, args.deep, args.image) == (upstream, cfg, deep, image)
    assert (args.detections, args.baselines, args.img_size) == ("1,10", "", 640)


def test_the_models_filter_names_each_model_once() -> None:
    stems = [Path(cfg).stem for _, cfg, _, _ in bench.MODELS]
    assert len(stems) == len(set(stems)), "--models takes cfg stems; two models share one"
    assert set(bench.WORKERS) >= {upstream for upstream, _, _, _ in bench.MODELS}


def test_the_table_fits_long_model_names() -> None:
    records = bench_common.Records(upstream="detectron2", model="faster_rcnn_R_50_FPN_3x", img_size=640)
    records.add("head", 1, "plain", 2.0, 100.0, 2.0)
    records.add("head", 1, "kit-gradcam", 3.0, 120.0, 2.0)
    lines = bench.table(records.items).splitlines()
    assert len({line.index(" head ") for line in lines[1:]}) == 1
    assert lines[2].split()[-3:] == ["3.000", "1.5", "120"]
