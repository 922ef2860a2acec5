"""kit.report.pictures: the size of a JPEG from its header, and the first tile of a summary sheet as
the kit's writer draws it (real sheets of 0 to 14 detections, wide and tall images)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from kit.core.render import summary, tile_size
from kit.report.pictures import first_panel, jpeg_size


def write_jpeg(path: Path, image: np.ndarray) -> Path:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 13, 14])
@pytest.mark.parametrize("hw", [(48, 64), (120, 40), (37, 91)])
def test_the_first_tile_of_a_real_sheet_is_found(tmp_path: Path, n: int, hw: tuple[int, int]) -> None:
    h, w = hw
    picture = np.full((h, w, 3), 90, np.uint8)
    tiles = [(np.full((h, w), 0.5, np.float32), [1.0, 1.0, w / 2, h / 2], f"cat {i}") for i in range(n)]
    many = n > 12  # as RunWriter._write_files draws a crowded image's sheet
    width = 240 if many else 480
    sheet = summary(picture, tiles=tiles, max_cols=8 if many else 4, tile_width=width)
    path = write_jpeg(tmp_path / "s.jpg", sheet)
    assert jpeg_size(path) == (sheet.shape[1], sheet.shape[0])
    panel = first_panel((sheet.shape[1], sheet.shape[0]), detections=n, image=(w, h))
    assert panel is not None and (panel.width, panel.height) == tile_size((h, w), width)


def test_sizes_that_do_not_fit_the_grid_give_no_panel() -> None:
    assert first_panel((964, 360), detections=1, image=(64, 48)) is not None  # 2 tiles of 480 x 360
    assert first_panel((964, 360), detections=1, image=(48, 64)) is None  # a tall image's tiles are not
    assert first_panel((1000, 360), detections=1, image=(64, 48)) is None  # not 2 tiles and a gap
    assert first_panel((0, 0), detections=0, image=(64, 48)) is None
    assert first_panel((480, 360), detections=0, image=(0, 48)) is None


def test_a_file_that_is_not_a_jpeg_has_no_size(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    ok, data = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    png.write_bytes(data.tobytes())
    assert jpeg_size(png) is None and jpeg_size(tmp_path / "missing.jpg") is None
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert jpeg_size(tmp_path / "cut.jpg") is None
    (tmp_path / "loop.jpg").write_bytes(b"\xff\xd8" + b"\xff\xe1\x00\x00" * 10)  # a length of 0
    assert jpeg_size(tmp_path / "loop.jpg") is None


def test_a_link_or_a_pipe_is_not_read(tmp_path: Path) -> None:
    import os

    sheet = write_jpeg(tmp_path / "s.jpg", np.zeros((6, 8, 3), np.uint8))
    assert jpeg_size(sheet) == (8, 6)
    (tmp_path / "link.jpg").symlink_to(sheet)
    os.mkfifo(tmp_path / "pipe.jpg")  # opened for reading, it would block
    assert jpeg_size(tmp_path / "link.jpg") is None and jpeg_size(tmp_path / "pipe.jpg") is None
