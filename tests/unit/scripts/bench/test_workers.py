"""`make bench`'s driver and its workers agree: every model has a worker that takes the driver's flags.

No timing here: speed is measured by `make bench`, never asserted in a test.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

from kit.core.targets import TARGETS
from scripts.bench import common as bench_common
from scripts.bench import driver as bench


@pytest.mark.parametrize(("upstream", "cfg", "deep", "image"), bench.MODELS, ids=lambda v: str(v))
def test_every_model_has_a_worker_that_parses_the_drivers_flags(
    upstream: str, cfg: str, deep: str, image: str
) -> None:
    assert upstream in bench.WORKERS, f"no worker for {upstream}: add it to scripts/bench/driver.py WORKERS"
    worker = importlib.import_module(bench.WORKERS[upstream])  # imports no upstream code
    assert callable(worker.main)
    # the worker parses with worker_parser: the flags the driver's arguments are for
    assert worker.common is bench_common and "common.worker_parser(" in inspect.getsource(worker.main)
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


def test_the_eval_row_is_a_line_of_its_own_with_its_median() -> None:
    eval_record = {"model": "yolov7-tiny (demo)", "layers": "head", "method": "eval", "images": 8}
    eval_record |= {"detections": 18, "runs": 3, "seconds": 27.04, "cpu_seconds": 45.5}
    lines = bench.table([eval_record]).splitlines()
    assert len(lines) == 2 and lines[0].startswith("model")  # not a row of the methods' table
    assert lines[1] == (
        "eval, yolov7-tiny (demo), 8 images (18 detections): median 27.0 s wall, 45.5 CPU s, "
        "of 3 whole runs (goal < 30 s)"
    )


def test_baselines_are_checked_before_anything_is_measured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--baselines", "seed,sed"]) == 2
    assert "unknown ['sed']" in capsys.readouterr().err
    assert bench.main(["--models", "yolov9"]) == 2
    assert "--models: unknown ['yolov9']" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytorch_grad_cam" else real(name, *a)
    )
    assert bench.main([]) == 2
    err = capsys.readouterr().err
    assert "needs the grad-cam package" in err and "make bench" in err and "--baselines seed" in err


def test_the_folder_measurement_explains_every_image_at_each_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    from kit.methods import cam
    from tests.unit.kit.adapters.test_yolo import make_adapter

    adapter = make_adapter()
    seen: list[tuple[int, tuple[str, ...]]] = []
    real = cam.explain_batch

    def spy(adapter: object, images: list, **kwargs: object) -> object:
        seen.append((len(images), tuple(kwargs["layers"])))  # type: ignore[arg-type]
        return real(adapter, images, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cam, "explain_batch", spy)
    records = bench_common.Records(upstream="yolov7", model="toy", img_size=64)
    sets = {"head": adapter.resolve_layers(["2", "3"]), "deep": adapter.resolve_layers(["1"])}
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    bench_common.measure_folder(
        records,
        adapter=adapter,
        image=image,
        count=5,
        layer_sets=sets,
        target=TARGETS["class-logit"],
        detections=3,
        batch_sizes=(1, 4),
    )
    assert adapter.max_det == 3
    # per set and batch size: one warm-up batch, then the folder of 5 in batches
    head, deep = ("2", "3"), ("1",)
    assert seen == [(1, head)] + [(1, head)] * 5 + [(4, head), (4, head), (1, head)] + [(1, deep)] + [
        (1, deep)
    ] * 5 + [(4, deep), (4, deep), (1, deep)]
    assert [(r["layers"], r["method"], r["images"], r["detections"]) for r in records.items] == [
        ("head", "kit-gradcam-folder-batch1", 5, 3),
        ("head", "kit-gradcam-folder-batch4", 5, 3),
        ("deep", "kit-gradcam-folder-batch1", 5, 3),
        ("deep", "kit-gradcam-folder-batch4", 5, 3),
    ]
    assert all(r["images_per_second"] > 0 for r in records.items)


def test_the_odam_set_times_the_odam_method_at_the_level_layers() -> None:
    import argparse

    import numpy as np

    from tests.unit.kit.adapters.test_yolo import make_adapter

    adapter = make_adapter(spatial=True)
    layers = bench_common.set_layers(adapter, bench_common.ODAM_SET, deep="")
    assert list(layers) == ["0", "1"]  # the inputs of the modules feeding the head
    records = bench_common.Records(upstream="yolov7", model="toy", img_size=64)
    batch, _ = adapter.preprocess([np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)])
    args = argparse.Namespace(detections="1,3", repeat=1)
    steps = bench_common.measure_kit(records, "odam", adapter, batch, layers, TARGETS["class-logit"], args)
    assert [step.n for step in steps] == [1, 3]
    assert [(r["layers"], r["detections"], r["method"]) for r in records.items] == [
        ("odam", 1, "plain"),
        ("odam", 1, "kit-odam"),
        ("odam", 3, "plain"),
        ("odam", 3, "kit-odam"),
    ]
