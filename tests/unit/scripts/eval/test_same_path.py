"""`make eval` and a run's --eval score with the same code: the same images, detector and method
through scripts/eval's path and through main_gradcam.py's (kit.cli.main.explain_sources)
give the
same matches, PG, EBPG and deletion/insertion AUC."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit.api import Explainer
from kit.cli import main as cli
from kit.core.detection import Detection
from kit.core.targets import get_target
from kit.evaluation.evaluate import Evaluator
from kit.evaluation.labels import load_labels
from kit.methods.cam import get_cam_method
from kit.upstreams.loaders import Loaded
from scripts.eval import measures, table
from tests.conftest import ToyAdapter


class TwiceToyAdapter(ToyAdapter):
    """The toy detector with a second, weaker detection of the same object (a duplicate NMS kept):
    the content box shifted by a quarter of its width, read one pixel to the right of the centre."""

    def detect(self, output: Any) -> list[Detection]:
        out = []
        for d in super().detect(output):
            x1, y1, x2, y2 = d.box_xyxy
            shift = (x2 - x1) / 4
            twin = Detection(
                image_index=d.image_index,
                box_xyxy=(x1 + shift, y1, x2 + shift, y2),
                class_id=d.class_id,
                score=0.6,
                row=d.row + 1,
                level=d.level,
            )
            out += [twin, d]  # the weaker one first: matching must go by score, not by order
        return out


def write_data(folder: Path, count: int) -> tuple[Path, Path]:
    """``count`` 24x32 images of a bright rectangle (IoU 0.6-0.8 with the toy's whole-image box, as
    with its shifted twin), YOLO labels with that rectangle as class 0."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 60, size=(24, 32, 3), dtype=np.uint8)
        x1, y1, w, h = 2 + i, 2, 28 - 2 * i, 20
        image[y1 : y1 + h, x1 : x1 + w] = 220 - 40 * i
        cv2.imwrite(str(images / f"im{i}.png"), image)
        cx, cy = (x1 + w / 2) / 32, (y1 + h / 2) / 24
        (labels / f"im{i}.txt").write_text(f"0 {cx:.6f} {cy:.6f} {w / 32:.6f} {h / 24:.6f}\n")
    return images, labels


def test_make_eval_scores_as_a_run_with_eval_does(tmp_path: Path) -> None:
    """The same images, detector and method through `make eval`'s code and through --eval (the run
    loop with the Evaluator as kit.cli.main builds it): the same matches, PG, EBPG and curves."""
    images, labels_dir = write_data(tmp_path, 3)
    opt = argparse.Namespace(**vars(cli_options()))
    opt.eval, opt.eval_curves, opt.eval_steps, opt.method = str(labels_dir), 2, 4, "gradcam"
    explainer = Explainer(Loaded(adapter=TwiceToyAdapter(), weights="w.pt"), upstream="toy")  # type: ignore[arg-type]
    assert (
        cli.explain_sources(explainer, opt=opt, source=str(images), out_dir=tmp_path / "run") == cli.EXIT_OK
    )
    run = json.loads((tmp_path / "run" / "eval.json").read_text())

    paths = sorted(images.glob("*.png"))
    settings = measures.EvalSettings(
        labels=load_labels(labels_dir, names=["blob", "other"], sources=paths),
        layer_sets={"feat": ["feat"]},
        target=get_target("class-logit"),
        methods=(get_cam_method("gradcam"),),
        curves=2,
        steps=4,
        batch_size=1,
    )
    measured = measures.measure(TwiceToyAdapter(), paths, settings=settings, keep=2)
    evaluators, samples = measured.evaluators, measured.samples
    made: Evaluator = evaluators[("gradcam", "feat")]
    report = made.report()
    # one detection per box: the 0.9 detection of each image, never its 0.6 duplicate
    assert run["summary"]["matched"] == report["summary"]["matched"] == 3
    assert run["summary"]["detections"] == report["summary"]["detections"] == 6
    assert [(r["file"], r["id"], r["score"]) for r in run["detections"]] == [
        (r["file"], r["id"], r["score"]) for r in report["detections"]
    ]
    assert all(r["score"] == 0.9 for r in report["detections"])
    for ours, theirs in zip(report["detections"], run["detections"]):
        assert set(ours["maps"]) == {"fused"}  # a layer set is its fused map
        for key in ("pg", "ebpg", "deletion_auc", "insertion_auc"):
            assert (key in ours["maps"]["fused"]) == (key in theirs["maps"]["fused"])
            assert ours["maps"]["fused"].get(key) == pytest.approx(theirs["maps"]["fused"].get(key), abs=1e-6)
    fused = run["summary"]["layers"][-1]
    (row,) = table.table_rows(evaluators, {})
    assert fused["layer"] == "fused" and (row["n"], row["n_curves"]) == (fused["n"], fused["n_curves"]) == (
        3,
        2,
    )
    for key in ("pg", "ebpg", "deletion_auc", "insertion_auc"):
        assert row[key] == pytest.approx(fused[key], abs=1e-6)
    # the kept samples are the first matched detections, with their set maps for the randomization
    assert [s.image for s in samples] == [0, 1] and all(s.detection.score == 0.9 for s in samples)
    assert all(s.maps[("gradcam", "feat")] is not None for s in samples)


def cli_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_kit_arguments(parser)
    return parser.parse_args([])
