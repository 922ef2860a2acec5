"""A deterministic synthetic detection dataset: circles, squares and triangles on noise.

Image ``i`` of a split depends only on ``(seed, split, i)``, so the training stream, the
evaluation set and the images `make cam` falls back to offline are the same on every machine.
Needs NumPy and OpenCV only (no upstream code), so `make cam` can draw the images itself.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle")
SPLITS = {"train": 0, "eval": 1}
DEFAULT_SEED = 0
IMAGE_SIZE = 256
MIN_SIDE, MAX_SIDE = 20, 96  # object sizes in pixels at IMAGE_SIZE
MAX_OBJECTS = 4


def make_image(
    index: int, *, split: str = "train", seed: int = DEFAULT_SEED, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 image and its labels, (n, 5): class, cx, cy, w, h normalized (YOLO format).

    A noisy background of a random colour, then 1..MAX_OBJECTS filled shapes of random colours
    (far enough from the background to be seen), sizes and positions, never overlapping.
    """
    rng = np.random.default_rng([seed, SPLITS[split], index])
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0.0, 18.0, size=(size, size, 3))
    image = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[tuple[int, float, float, float, float]] = []
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(wanted * 20):
        if len(boxes) == wanted:
            break
        side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        x1, y1 = (int(v) for v in rng.integers(0, size - side, size=2))
        x2, y2 = x1 + side, y1 + side
        if any(
            x1 < bx2 + 2 and bx1 < x2 + 2 and y1 < by2 + 2 and by1 < y2 + 2 for bx1, by1, bx2, by2 in boxes
        ):
            continue
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).sum() < 120:
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        fill = tuple(int(c) for c in colour)
        if cls == 0:
            cv2.circle(image, (x1 + side // 2, y1 + side // 2), side // 2, fill, -1, cv2.LINE_AA)
        elif cls == 1:
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), fill, -1)
        else:
            points = np.array([[x1 + side // 2, y1], [x2 - 1, y2 - 1], [x1, y2 - 1]], dtype=np.int32)
            cv2.fillPoly(image, [points], fill, cv2.LINE_AA)
        boxes.append((x1, y1, x2, y2))
        labels.append((cls, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, side / size, side / size))
    return image, np.array(labels, dtype=np.float64).reshape(-1, 5)


def write_split(out_dir: Path, *, count: int, split: str = "eval", seed: int = DEFAULT_SEED) -> Path:
    """Write ``count`` images to ``out_dir/images`` and YOLO labels to ``out_dir/labels``."""
    images, labels = out_dir / "images", out_dir / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, rows = make_image(i, split=split, seed=seed)
        stem = f"{split}_{i:04d}"
        cv2.imwrite(str(images / f"{stem}.png"), image)
        text = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)
        (labels / f"{stem}.txt").write_text(text)
    (out_dir / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    return images
