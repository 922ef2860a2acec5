"""`make bench ARGS=--large-image`: its child runner measures and bounds a child's memory, and its
images are what it says. No figure is asserted here: the memory is measured by the bench."""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.bench import driver
from scripts.bench import large_image as bench


def test_a_childs_peak_memory_is_read_and_a_child_above_the_bound_is_killed(tmp_path: Path) -> None:
    grow = "import time; block = b'x' * (400 * 2**20); time.sleep(60)"  # 400 MB written, then waits
    killed = bench.run_child([sys.executable, "-c", grow], cwd=tmp_path, max_rss_gb=0.2)
    assert killed["exit"] == -9 and killed["killed_over_gb"] == 0.2
    assert killed["seconds"] < 50  # killed, not waited for
    small = bench.run_child(
        [sys.executable, "-c", "block = b'x' * (100 * 2**20)"], cwd=tmp_path, max_rss_gb=4
    )
    assert small["exit"] == 0 and small["killed_over_gb"] is None and small["peak_mb"] >= 100


def test_the_photo_is_64_megapixels_of_the_demo_shapes_and_the_png_is_small_on_disk() -> None:
    photo = bench.photo((300, 400))
    assert photo.shape == (300, 400, 3) and photo.dtype.name == "uint8" and photo.std() > 10
    assert bench.PHOTO_HW[0] * bench.PHOTO_HW[1] >= 64_000_000
    assert bench.flat_png(1000).shape == (1000, 1000, 3)


def test_the_driver_hands_large_image_to_it() -> None:
    args = driver.build_parser().parse_args(["--large-image", "--max-rss-gb", "3"])
    assert args.large_image and args.max_rss_gb == 3.0
