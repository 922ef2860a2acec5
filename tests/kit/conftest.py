"""Run folders for the tests of the modules that read them (kit.audit, kit.report): written by the
kit's own RunWriter, as a run writes them, on tiny images whose maps have known energy_in_box."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kit.evaluate import Evaluator
from kit.labels import load_labels
from kit.outputs import RunWriter
from kit.results import DetectionResult, ImageResult

H = W = 10
BOX = (0.0, 0.0, 5.0, 10.0)  # the left half: pixel columns 0..4
IMAGE = np.full((H, W, 3), 128, np.uint8)


def energy_map(energy: float) -> np.ndarray:
    """A map whose energy_in_box in ``BOX`` is ``energy``: ``energy`` left, ``1 - energy`` right."""
    cam = np.empty((H, W), np.float32)
    cam[:, :5], cam[:, 5:] = energy, 1.0 - energy
    return cam


def det(
    i: int,
    cls: int,
    score: float,
    maps: dict[str, np.ndarray | None],
    *,
    box: tuple[float, float, float, float] = BOX,
) -> DetectionResult:
    return DetectionResult(
        id=i, box_xyxy=box, class_id=cls, class_name=["cat", "dog"][cls], score=score, level=0, maps=maps
    )


def write_run(
    out: Path,
    images: dict[str, Sequence[DetectionResult]],
    layers: Sequence[str] = ("74",),
    *,
    image: np.ndarray = IMAGE,
) -> Path:
    with RunWriter(
        out_dir=out, upstream="yolov7", weights="w.pt", method="gradcam", target="class-logit", layers=layers
    ) as writer:
        for name, dets in images.items():
            writer.write_image(source=Path("imgs") / name, image_bgr=image, detections=dets)
        writer.finish()
    return out


def eval_run(tmp_path: Path) -> Path:
    """A run with --eval as Explainer.run does it: the writer, then the Evaluator on the same results.

    a.png: det 0 on its ground truth (matched), det 1 elsewhere (unmatched); b.png: a ground truth of
    the other class (unmatched); c.png is not in the labels (not evaluated).
    """
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.25 0.5 0.5 1.0\n")
    (labels / "b.txt").write_text("1 0.25 0.5 0.5 1.0\n")
    sources = [Path("imgs") / n for n in ("a.png", "b.png", "c.png")]
    evaluator = Evaluator(
        labels=load_labels(labels, names=["cat", "dog"], sources=sources[:2]), detector=lambda x: [], curves=0
    )
    right = (5.0, 0.0, 10.0, 10.0)
    results = {
        # a.png det 1: its box is the right half, where energy_map(0.9) has 0.1 of its mass
        "a.png": [
            det(0, 0, 0.9, {"74": energy_map(0.7)}),
            det(1, 0, 0.8, {"74": energy_map(0.9)}, box=right),
        ],
        "b.png": [det(0, 0, 0.7, {"74": energy_map(0.3)})],
        "c.png": [det(0, 1, 0.6, {"74": energy_map(0.2)}), det(1, 1, 0.5, {"74": None})],
    }
    out = write_run(tmp_path / "run", results)
    for source in sources:
        dets = tuple(results[source.name])
        evaluator.add_image(source, IMAGE, ImageResult(str(source), W, H, dets, ("74",), image=IMAGE))
    evaluator.finish(out)
    return out


# A manifest of the first kind (no 'interrupted', maps also as a list), with records that lack fields
# or are not records at all.
OLD_MANIFEST: dict[str, Any] = {
    "upstream": "yolov7",
    "weights": "w.pt",
    "method": "gradcam",
    "target": "class_logit",
    "layers": ["74"],
    "images": [
        {
            "file": "a.png",
            "detections": [
                {"id": 0, "class_id": 3, "score": 0.5, "maps": {"74": {"energy_in_box": 0.25}}},
                {"id": 1, "class_name": "cat", "maps": [{"layer": "74", "energy_in_box": 0.75}]},
                {"id": 2, "class_id": 3, "class_name": "x", "score": 0.1, "maps": {}},
                {"id": 3, "class_id": 3, "class_name": "x", "maps": {"74": {"energy_in_box": None}}},
                "not a detection",
            ],
        },
        {"file": "b.png", "error": "cannot read"},
        ["not an image record"],
    ],
}


# ---- runs with pictures a person can look at (kit.report) -------------------------------------
SCENE_HW = (120, 160)
LEVELS = ("74", "75", "76")  # a YOLO head: a detection has gradient only at its own level


def scene(seed: int, hw: tuple[int, int] = SCENE_HW) -> np.ndarray:
    """A noisy background with a red disc and a blue square (BGR), different for every seed."""
    rng = np.random.default_rng(seed)
    h, w = hw
    picture = rng.integers(60, 110, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (h // 6) ** 2
    picture[disc] = (40, 40, 220)
    picture[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + h // 4] = (220, 90, 30)
    return picture


def blob(hw: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    """A Gaussian map in [0, 1] peaking at ``centre`` (x, y)."""
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    cam = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    return (cam / cam.max()).astype(np.float32)


def yolo_detection(
    i: int, cls: int, score: float, level: int, hw: tuple[int, int] = SCENE_HW, *, fused: bool = True
) -> DetectionResult:
    """A detection on the disc (cat) or the square (dog), with its map at its own head level only."""
    h, w = hw
    box = (w / 6, h / 6, w / 2, h / 2) if cls == 0 else (w / 2, h / 2, w / 2 + h / 4, 3 * h / 4)
    cam = blob(hw, ((box[0] + box[2]) / 2 + 6 * i, (box[1] + box[3]) / 2), 6.0 + 8 * level)
    maps: dict[str, np.ndarray | None] = {la: cam if k == level else None for k, la in enumerate(LEVELS)}
    if fused:
        maps["fused"] = cam
    return DetectionResult(
        id=i,
        box_xyxy=box,
        class_id=cls,
        class_name=["cat", "dog"][cls],
        score=score,
        level=level,
        maps=maps,
    )


def picture_run(out: Path, names: Sequence[str] = ("street.jpg", "park.png", "empty.jpg")) -> Path:
    """A run of the YOLO kind at layers 74, 75, 76 with --fuse: the first image has three detections,
    the second two, the third none, and one image failed."""
    plans = [[(0, 0.91, 0), (1, 0.55, 1), (0, 0.32, 2)], [(1, 0.78, 2), (0, 0.66, 0)], []]
    with RunWriter(
        out_dir=out,
        upstream="yolov7",
        weights="runs/train/exp/weights/best.pt",
        method="gradcam",
        target="class-logit",
        layers=LEVELS,
        extra={"img_size": 320, "conf_thres": 0.25, "iou_thres": 0.45},
    ) as writer:
        for k, (name, plan) in enumerate(zip(names, plans)):
            dets = [yolo_detection(i, cls, score, level) for i, (cls, score, level) in enumerate(plan)]
            writer.write_image(source=Path("imgs") / name, image_bgr=scene(k), detections=dets)
        writer.add_error(Path("imgs") / "broken.jpg", "cannot read image 'imgs/broken.jpg': not an image")
        writer.finish()
    return out


def large_run(out: Path, images: int, *, per_image: int = 2) -> Path:
    """A run folder of ``images`` images laid out as RunWriter lays them out (its own records and
    manifest), each with ``per_image`` detections at layers 74, 75, 76 (one reached): every picture
    is one small JPEG linked under each name, so 5,000 images take a second or two, not minutes."""
    import cv2

    from kit.outputs import DetectionRecord, ImageRecord, MapRecord

    ok, jpeg = cv2.imencode(".jpg", scene(0, (48, 64)))
    assert ok
    source = out / ".picture.jpg"
    with RunWriter(
        out_dir=out, upstream="yolov7", weights="w.pt", method="gradcam", target="class-logit", layers=LEVELS
    ) as writer:
        source.write_bytes(jpeg.tobytes())
        for n in range(images):
            stem = f"img{n:05d}"
            (out / stem).mkdir()
            dets = []
            for i in range(per_image):
                level = (n + i) % 3
                overlay = f"{stem}/det{i}_{LEVELS[level]}.jpg"
                os.link(source, out / overlay)
                maps = [
                    MapRecord(layer=la, overlay=overlay, energy_in_box=round((n * 7 + i) % 100 / 100, 2))
                    if k == level
                    else MapRecord(layer=la, overlay=None, energy_in_box=None, no_gradient=True)
                    for k, la in enumerate(LEVELS)
                ]
                score = round(0.25 + (n * 13 + i * 7) % 75 / 100, 3)
                box = [4.0, 4.0, 30.0, 40.0]
                dets.append(DetectionRecord(i, box, i % 2, ["cat", "dog"][i % 2], score, level, maps))
            os.link(source, out / f"{stem}_summary.jpg")
            writer.images.append(
                ImageRecord(f"imgs/{stem}.jpg", 64, 48, dets, None, summary=f"{stem}_summary.jpg")
            )
        writer.finish()
    source.unlink()
    return out


@pytest.fixture(scope="session")
def large_run_5000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 images, 10,000 detections (made once per session: 2-3 s)."""
    return large_run(tmp_path_factory.mktemp("large") / "run", 5000)
