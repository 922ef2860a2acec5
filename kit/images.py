"""Image sources: which files to explain, and reading each one as the detector would.

A folder lists every regular, non-hidden file in it, images or not: a stray ``notes.txt`` then
fails with its own message in the manifest instead of disappearing without a word.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from kit.errors import ImageReadError, SourceNotFoundError

# The formats YOLO's loaders accept (yolov7 utils/datasets.py img_formats); OpenCV reads them all.
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"})

PathLike = Union[str, Path]


def printable(name: PathLike) -> str:
    """``name`` as valid UTF-8 text: bytes of a file name that are not UTF-8 become ``\\xNN``.

    Python reads such a name as a str with surrogates (``os.fsdecode``'s surrogateescape), which
    cannot be written as UTF-8; ``b'\\xff\\xfe.jpg'`` is shown, and stored in the manifest, as
    ``\\xff\\xfe.jpg`` (backslashreplace). Other names are returned unchanged.
    """
    text = os.fspath(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no undecodable byte made
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text


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
    shown = f"'{printable(p)}'"
    if not p.exists():
        raise ImageReadError(f"cannot read image {shown}: no such file")
    if not p.is_file():
        raise ImageReadError(f"cannot read image {shown}: not a regular file")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read image {shown}: {e.strerror or e}") from e
    if data.size == 0:
        raise ImageReadError(f"cannot read image {shown}: the file is empty (0 bytes)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:  # e.g. a header announcing more pixels than OpenCV accepts
        why = " ".join(str(e).split())
        raise ImageReadError(f"cannot read image {shown}: OpenCV refuses it: {why}") from e
    if image is None:
        known = "" if p.suffix.lower() in IMAGE_SUFFIXES else f" (suffix {p.suffix or 'none'!r})"
        raise ImageReadError(
            f"cannot read image {shown}{known}: OpenCV cannot decode it; supported formats are "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return np.ascontiguousarray(image)
