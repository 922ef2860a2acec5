"""`make bench ARGS=--large-image`: its child runner measures and bounds a child's memory, and its
images are what it says. No figure is asserted here: the memory is measured by the bench."""

from __future__ import annotations

from scripts.bench import driver
from scripts.bench import large_image as bench


def test_the_photo_is_64_megapixels_of_the_demo_shapes_and_the_png_is_small_on_disk() -> None:
    photo = bench.photo((300, 400))
    assert photo.shape == (300, 400, 3) and photo.dtype.name == "uint8" and photo.std() > 10
    assert bench.PHOTO_HW[0] * bench.PHOTO_HW[1] >= 64_000_000
    assert bench.flat_png(1000).shape == (1000, 1000, 3)


def test_the_driver_hands_large_image_to_it() -> None:
    args = driver.build_parser().parse_args(["--large-image", "--max-rss-gb", "3"])
    assert args.large_image and args.max_rss_gb == 3.0
