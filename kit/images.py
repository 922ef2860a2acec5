"""Image sources: which files to explain, and reading each one as the detector would.

A folder lists every regular, non-hidden file in it, images or not: a stray ``notes.txt`` then
fails with its own message in the manifest instead of disappearing without a word.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from kit.errors import ImageReadError, SourceNotFoundError

# The formats YOLO's loaders accept (yolov7 utils/datasets.py img_formats); OpenCV reads them all.
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"})

PathLike = Union[str, Path]


def list_sources(source: PathLike) -> list[Path]:
    """Return the files named by ``source``: one file, a folder's files (sorted), or a glob pattern."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise SourceNotFoundError(f"image folder {str(source)!r} has no files; put images in it")
        return files
    if any(c in str(source) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
        if not files:
            raise SourceNotFoundError(f"glob pattern {str(source)!r} matches no file")
        return files
    if path.exists():
        raise SourceNotFoundError(f"image source {str(source)!r} is not a regular file or folder")
    raise SourceNotFoundError(
        f"image source {str(source)!r} does not exist; pass an image file, a folder of images, or a "
        "quoted glob pattern such as 'images/*.jpg'"
    )


def read_image(path: PathLike) -> np.ndarray:
    """Read ``path`` as a BGR uint8 (H, W, 3) array, exactly as ``cv2.imread(path)`` would.

    That is what the YOLO upstreams feed their detectors: grayscale becomes 3 equal channels,
    alpha is dropped, 16-bit is scaled to 8-bit, and EXIF orientation is applied. Decoding from
    bytes (``np.fromfile`` + ``cv2.imdecode``) also works for non-ASCII paths, where
    ``cv2.imread`` fails silently on some platforms.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"cannot read image {str(p)!r}: no such file")
    if not p.is_file():
        raise ImageReadError(f"cannot read image {str(p)!r}: not a regular file")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read image {str(p)!r}: {e.strerror or e}") from e
    if data.size == 0:
        raise ImageReadError(f"cannot read image {str(p)!r}: the file is empty (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        known = "" if p.suffix.lower() in IMAGE_SUFFIXES else f" (suffix {p.suffix or 'none'!r})"
        raise ImageReadError(
            f"cannot read image {str(p)!r}{known}: OpenCV cannot decode it; supported formats are "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return np.ascontiguousarray(image)
