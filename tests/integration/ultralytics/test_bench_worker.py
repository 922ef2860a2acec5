"""`make bench`'s ultralytics worker, its Ultralytics-CAM side (the kit side needs the ultralytics
loader: kit.load("ultralytics", ...)): conf set so that exactly n predictions are explained."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from scripts.bench import common
from scripts.demo import shapes


@pytest.fixture(scope="module")
def demo_yolo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-settings")))
    pytest.importorskip("ultralytics")
    from kit.upstreams import demo as kit_demo
    from kit.upstreams.loaders import ultralytics as ultralytics_loader

    return ultralytics_loader.demo_yolo(kit_demo.demo_weights(stem=kit_demo.ULTRALYTICS_STEM))


def test_ultralytics_cam_rows_explain_exactly_n_predictions_and_none_above_16(
    demo_yolo: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts.bench import ultralytics_worker

    backward: list[int] = []
    real = torch.autograd.grad

    def counted(*args: Any, **kwargs: Any) -> Any:
        backward.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    image, _ = shapes.make_image(0, split="eval")
    records = common.Records(upstream="ultralytics", model="yolo11n-shapes", img_size=shapes.IMAGE_SIZE)
    args = argparse.Namespace(img_size=shapes.IMAGE_SIZE, detections="3,17", repeat=1)
    ultralytics_worker.bench_ultralytics_cam(
        records, "head", yolo=demo_yolo, image=image, args=args, plain=0.5
    )
    assert [(r["detections"], r["method"], r["layers"]) for r in records.items] == [
        (3, "ultralytics-cam", "head")
    ]
    assert records.items[0]["ratio_to_plain"] == round(records.items[0]["seconds"] / 0.5, 2)
    assert len(backward) == 2 * 3  # common.timed: a warm-up run and one timed run, 3 backward passes each
    assert "explains 16 predictions at most; n=17 skipped" in capsys.readouterr().err


def test_best_scores_are_every_prediction_s_best_class_score_descending(demo_yolo: Any) -> None:
    from scripts.bench.ultralytics_worker import best_scores

    batch = torch.rand(1, 3, 64, 64)
    scores = best_scores(demo_yolo.model, batch)
    assert len(scores) == 8 * 8 + 4 * 4 + 2 * 2  # strides 8, 16, 32 at 64 px
    assert torch.all(scores[:-1] >= scores[1:]) and 0.0 <= float(scores[-1]) <= float(scores[0]) <= 1.0


def test_a_random_checkpoint_is_written_as_the_trainer_writes_one(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel

    from kit.upstreams.loaders.ultralytics import ALLOWED_MODULES
    from kit.upstreams.safeload import safe_load
    from scripts.bench.ultralytics_worker import build_checkpoint

    path = build_checkpoint("yolo11n.yaml", tmp_path)
    ckpt = safe_load(path, allowed_modules=ALLOWED_MODULES)  # no code runs to read it
    assert isinstance(ckpt["model"], DetectionModel) and ckpt["model"].model[-1].nc == 80
    assert ckpt["model"].names[79] == "class79"
