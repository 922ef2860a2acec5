"""Where the image with its boxes lies on a summary sheet, for :mod:`kit.report.page`.

A summary sheet (``<stem>_summary.jpg``, :func:`kit.core.render.summary` as
:class:`kit.rundir.writer.RunWriter` calls it) is a grid: the image with every box first, then one
tile per detection, ``max_cols`` tiles a row with a 4-pixel gap. The page shows that first tile
alone, large, by cropping the sheet: its place follows from the sheet's size in pixels (read from
the JPEG's header, never decoded) and the image's detection count. A sheet whose size does not fit
that grid (another writer, a damaged file) is shown whole instead: the crop is never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kit.rundir.naming import LinkError, open_regular

GAP = 4  # pixels between tiles (kit.core.render._grid)
MANY = 12  # more detections than this: 8 tiles a row (RunWriter._write_files), else 4
HEADER_BYTES = 1 << 18  # where a JPEG's frame header must be; a sheet the kit writes has it first


@dataclass(frozen=True)
class Panel:
    """The first tile of a sheet: its size, and the sheet's, in pixels."""

    width: int
    height: int
    sheet_width: int
    sheet_height: int


def jpeg_size(path: Path) -> Optional[tuple[int, int]]:
    """(width, height) from a JPEG's start-of-frame header, reading at most HEADER_BYTES; None
    for a file that is not a JPEG, whose header is not found there, a link or a pipe."""
    try:
        with open_regular(path, what="a summary sheet the page reads") as f:  # never through a link
            data = f.read(HEADER_BYTES)
    except (OSError, LinkError):
        return None
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        if length < 2:
            return None
        i += 2 + length
    return None


def first_panel(sheet: tuple[int, int], *, detections: int, image: tuple[int, int]) -> Optional[Panel]:
    """The first tile of a sheet of ``sheet`` (width, height) pixels holding ``detections`` tiles
    after it, for an image of ``image`` (width, height); None when the sizes do not fit the grid."""
    sheet_w, sheet_h = sheet
    image_w, image_h = image
    if detections < 0 or min(sheet_w, sheet_h, image_w, image_h) <= 0:
        return None
    tiles = detections + 1
    cols = min(8 if detections > MANY else 4, tiles)
    rows = math.ceil(tiles / cols)
    width, left = divmod(sheet_w - (cols - 1) * GAP, cols)
    height, left_h = divmod(sheet_h - (rows - 1) * GAP, rows)
    if left or left_h or width <= 0 or height <= 0:
        return None
    if abs(width / height - image_w / image_h) > 0.02 * image_w / image_h + 2 / height:
        return None  # not the image's shape: not a sheet of this grid
    return Panel(width, height, sheet_w, sheet_h)
