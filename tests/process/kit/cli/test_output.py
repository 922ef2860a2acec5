"""An entry point's output by default: no line per image, one summary line per run (counts from
its manifest, the run folder), "1 detection" in the singular; --verbose adds the lines per image."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.children import REPO_ROOT, run_child

TOY = str(REPO_ROOT / "tests" / "toy_main.py")


def images(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        (folder / f"img{i}.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
    return folder


def test_a_run_prints_one_summary_line_and_no_line_per_image(tmp_path: Path) -> None:
    src = images(tmp_path / "src", 3)
    (src / "broken.png").write_text("not an image")
    command = [sys.executable, TOY, "--source", str(src), "--project", str(tmp_path), "--name", "run"]
    outcome = run_child(command)
    assert outcome.exit == 1, outcome.stderr  # one image failed
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    detections = sum(len(i["detections"]) for i in manifest["images"])
    maps = sum(
        1 for i in manifest["images"] for d in i["detections"] for m in d["maps"].values() if m["overlay"]
    )
    lines = outcome.stderr.splitlines()
    assert not [line for line in lines if re.search(r"img\d\.png: \d+ detection", line)]
    (summary,) = [line for line in lines if line.startswith("explained ")]
    expected = (
        f"explained 4 images: {detections} detections, {maps} maps, 1 failed; run folder {tmp_path / 'run'}"
    )
    assert summary.startswith(expected + " (open index.html), ") and summary.endswith(" s")
    assert detections > 1 and maps > 1  # the plural was put to the test


def test_verbose_adds_the_line_per_image_and_one_is_singular(tmp_path: Path) -> None:
    src = images(tmp_path / "src", 1)
    command = [sys.executable, TOY, "--source", str(src), "--project", str(tmp_path), "--name", "run"]
    outcome = run_child([*command, "--verbose"])
    assert outcome.exit == 0, outcome.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    n = len(manifest["images"][0]["detections"])
    word = "detection" if n == 1 else "detections"
    assert f"{src / 'img0.png'}: {n} {word}" in outcome.stderr.splitlines()
    assert f"explained 1 image: {n} {word}," in outcome.stderr
