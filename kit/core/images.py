"""Image sources: which files to explain, and reading each one as the detector would.

A folder lists every non-hidden entry in it that could be meant as an image: regular files, images
or not, and also FIFOs, sockets, devices, broken links and folders named like an image
(``x.jpg/``). None of these is skipped without a word: a stray ``notes.txt`` or a FIFO then fails
with its own message in the manifest (a FIFO, socket or device is never opened: opening a FIFO
blocks until someone writes to it). Other folders are not images and are left out.

An image is refused before it is decoded when its file is larger than ``--max-image-bytes``
(its size on disk, checked before a byte is read: a sparse multi-GB file is never read) or its
header announces more than ``--max-image-pixels`` pixels (:func:`header_size`; Pillow's
decompression-bomb bound by default). OpenCV still decodes every image, so the pixels are exactly
``cv2.imread``'s.
"""

from __future__ import annotations

import glob
import io
import os
import stat
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from kit.core.errors import ArgumentError, ImageReadError, SourceNotFoundError
from kit.core.files import read_at_most

# The formats YOLO's loaders accept (yolov7 utils/datasets.py img_formats); OpenCV reads them all.
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"})
# Pillow's decompression-bomb bound (PIL.Image.MAX_IMAGE_PIXELS): a 64-megapixel photo fits.
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_BYTES = 256 * 2**20
# How the limits' errors name the options that raise them (the CLI's flags and the API's keywords).
LIMIT_NAMES = {
    "pixels": "--max-image-pixels N (image_limits=ImageLimits(pixels=N) in Python)",
    "bytes": "--max-image-bytes N (image_limits=ImageLimits(bytes=N) in Python)",
}
# The formats OpenCV decodes whose header Pillow reads (Pillow's names); the kit reads the rest:
# Radiance HDR, PAM and PFM.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "PPM", "SUN", "JPEG2000", "AVIF")
HEADER_BYTES = 65536  # where a text header (PAM, PFM, Radiance) must give the size
# Where a JPEG's frame header or a PNG's IHDR must be: Pillow walks their segments and chunks in
# Python, so a 256 MiB file of tiny chunks would take a minute; 16 MiB takes a few seconds. TIFF,
# JPEG 2000 and AVIF are read by offsets and boxes (a TIFF's directory is often at its end): whole.
HEADER_WINDOW = 16 * 2**20
SEEKING_FORMATS = frozenset({"TIFF", "JPEG2000", "AVIF"})
# Never block on open (a FIFO put in a file's place) nor take a terminal as controlling tty.
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
OPEN_FLAGS |= getattr(os, "O_BINARY", 0)

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ImageLimits:
    """The largest image a run reads: ``pixels`` (width x height, from the header) and ``bytes``
    (the file's size on disk). An image beyond either is that image's error; the run goes on."""

    pixels: int = MAX_IMAGE_PIXELS
    bytes: int = MAX_IMAGE_BYTES

    def checked(self, names: dict[str, str] | None = None) -> ImageLimits:
        """These limits, or an ArgumentError naming the bad one as ``names`` calls it
        (``{"pixels": "--max-image-pixels", "bytes": "--max-image-bytes"}``; default the field's)."""
        shown = {"pixels": "ImageLimits.pixels", "bytes": "ImageLimits.bytes", **(names or {})}
        for key, default in (("pixels", MAX_IMAGE_PIXELS), ("bytes", MAX_IMAGE_BYTES)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(
                    f"{shown[key]} must be a positive whole number of {key}, got {value!r}; "
                    f"the default is {default}"
                )
        return self


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
    """Return the entries named by ``source``: one file, a folder's entries (sorted), or a glob pattern.

    Of a folder (or a glob's matches), every entry but hidden names and folders not named like an
    image: a FIFO, socket, device, broken link or ``x.jpg/`` folder is listed so that reading it
    fails with its own message (:func:`read_image` never opens it), instead of vanishing.
    """
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and _may_be_image(p))
        if not files:
            raise SourceNotFoundError(f"image folder {str(source)!r} has no files; put images in it")
        return files
    if any(c in str(source) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if _may_be_image(Path(p)))
        if not files:
            raise SourceNotFoundError(f"glob pattern {str(source)!r} matches no file")
        return files
    if path.exists():
        raise SourceNotFoundError(f"image source {str(source)!r} is not a regular file or folder")
    raise SourceNotFoundError(
        f"image source {str(source)!r} does not exist; pass an image file, a folder of images, or a "
        "quoted glob pattern such as 'images/*.jpg'"
    )


def _may_be_image(path: Path) -> bool:
    """Anything but a folder, and a folder named like an image (``x.jpg/``): listed, to be reported."""
    return not path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: PathLike, *, limits: ImageLimits | None = None) -> np.ndarray:
    """Read ``path`` as a BGR uint8 (H, W, 3) array, exactly as ``cv2.imread(path)`` would.

    That is what the YOLO upstreams feed their detectors: grayscale becomes 3 equal channels,
    alpha is dropped, 16-bit is scaled to 8-bit, and EXIF orientation is applied. Decoding from
    bytes (``cv2.imdecode``) also works for non-ASCII paths, where ``cv2.imread`` fails silently
    on some platforms.

    ``limits`` (default :class:`ImageLimits`): a file larger than ``limits.bytes`` is refused
    before it is read, an image whose header announces more than ``limits.pixels`` pixels before
    it is decoded. A file whose header gives no size (:func:`header_size`) is decoded by OpenCV
    within OpenCV's own bound (2^30 pixels) and refused after when it is larger. Anything but a
    regular file (a FIFO, socket, device, folder) is refused without being opened.
    """
    limits = limits or ImageLimits()
    p = Path(path)
    shown = f"'{printable(p)}'"
    data = _read_bytes(p, shown, limits.bytes)
    try:
        size = header_size(data)
    except ImageReadError as e:
        raise ImageReadError(f"cannot read image {shown}: {e}") from e
    if size is not None:
        _check_pixels(shown, size, limits.pixels)
    array = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    except cv2.error as e:  # e.g. a header announcing more pixels than OpenCV accepts
        why = " ".join(str(e).split())
        raise ImageReadError(f"cannot read image {shown}: OpenCV refuses it: {why}") from e
    if image is None:
        known = "" if p.suffix.lower() in IMAGE_SUFFIXES else f" (suffix {p.suffix or 'none'!r})"
        raise ImageReadError(
            f"cannot read image {shown}{known}: OpenCV cannot decode it; supported formats are "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    _check_pixels(shown, (image.shape[1], image.shape[0]), limits.pixels, decoded=True)
    return np.ascontiguousarray(image)


def _read_bytes(path: Path, shown: str, limit: int) -> bytes:
    """The file's bytes, at most ``limit`` of them: its size is checked before it is opened, and it is
    opened without blocking and checked again, so a FIFO put in its place is never read from."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        why = "a symbolic link to a file that does not exist" if os.path.lexists(path) else "no such file"
        raise ImageReadError(f"cannot read image {shown}: {why}") from None
    except OSError as e:  # a link loop, a name too long, a folder we may not enter
        raise ImageReadError(f"cannot read image {shown}: {e.strerror or e}") from e
    _check_regular(shown, info.st_mode)
    _check_bytes(shown, info.st_size, limit)
    flags = (
        os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ImageReadError(f"cannot read image {shown}: {e.strerror or e}") from e
    try:
        with open(fd, "rb", closefd=False) as f:
            _check_regular(shown, os.fstat(fd).st_mode)  # replaced after the first look
            data = read_at_most(f, limit + 1, expected=info.st_size)
    except OSError as e:
        raise ImageReadError(f"cannot read image {shown}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    _check_bytes(shown, len(data), limit)  # a file that grew since
    if not data:
        raise ImageReadError(f"cannot read image {shown}: the file is empty (0 bytes)")
    return data


KINDS = (
    (stat.S_ISDIR, "a folder, not an image file; pass the folder itself to explain its images"),
    (stat.S_ISFIFO, "a FIFO (named pipe), not an image file; it was not opened"),
    (stat.S_ISSOCK, "a socket, not an image file; it was not opened"),
    (stat.S_ISCHR, "a character device, not an image file; it was not opened"),
    (stat.S_ISBLK, "a block device, not an image file; it was not opened"),
)


def _check_regular(shown: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    what = next((kind for test, kind in KINDS if test(mode)), "not a regular file; it was not opened")
    raise ImageReadError(f"cannot read image {shown}: it is {what}")


def _check_bytes(shown: str, size: int, limit: int) -> None:
    if size > limit:
        raise ImageReadError(
            f"cannot read image {shown}: the file is {size:,} bytes ({_binary(size)}), more than the "
            f"limit of {limit:,} bytes ({_binary(limit)}); it was not read. Raise the limit with "
            f"{LIMIT_NAMES['bytes']} for a file you trust"
        )


def _check_pixels(shown: str, size: tuple[int, int], limit: int, *, decoded: bool = False) -> None:
    width, height = size
    what = "it decodes to" if decoded else "its header gives"
    if width * height > limit:
        raise ImageReadError(
            f"cannot read image {shown}: {what} {width} x {height} pixels ({width * height:,}), more "
            f"than the limit of {limit:,} pixels{'' if decoded else '; it was not decoded'}. Raise the "
            f"limit with {LIMIT_NAMES['pixels']} for an image you trust"
        )


def _binary(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as the image's header announces it, read without decoding a pixel;
    None when no reader knows the format (OpenCV may still decode it).

    Pillow reads the headers of the formats OpenCV decodes (:data:`PILLOW_FORMATS`; its plugins
    are called directly, so Pillow's own decompression-bomb check and global limit play no part),
    the kit's own readers where Pillow refuses a JPEG, PNG, BMP, GIF or TIFF (:data:`FALLBACKS`);
    the kit reads the three formats Pillow lacks: Radiance HDR, PAM and PFM. A file whose
    signature names a format but whose header gives no size (a text header not within its first
    64 KiB) is refused (:class:`ImageReadError`): OpenCV would decode it with no limit but its own.
    """
    for read in (_text_header_size, _pillow_size):
        size = read(data)
        if size is not None:
            return size
    return None


def _text_header_size(data: bytes) -> tuple[int, int] | None:
    """Radiance HDR (``#?RADIANCE``, ``#?RGBE``), PAM (``P7``) and PFM (``PF``, ``Pf``) headers."""
    head = data[:HEADER_BYTES]
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        kind, size = "Radiance HDR", _radiance(head)
    elif head.startswith(b"P7"):
        kind, size = "PAM", _pam(head)
    elif head.startswith((b"PF", b"Pf")):
        kind, size = "PFM", _pfm(head)
    else:
        return None
    if size is None:
        raise ImageReadError(
            f"its {kind} header does not give its width and height in its first "
            f"{HEADER_BYTES // 1024} KiB; it was not decoded"
        )
    return size


def _radiance(head: bytes) -> tuple[int, int] | None:
    """The resolution line after the blank line that ends the header: ``-Y H +X W`` (or ``X`` first)."""
    lines = head.split(b"\n")
    for k, line in enumerate(lines[:-1]):
        if line.strip() == b"" and k > 0:
            parts = lines[k + 1].split()
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
                first, second = int(parts[1]), int(parts[3])
                return (second, first) if parts[0].endswith(b"Y") else (first, second)
            return None
    return None


def _pam(head: bytes) -> tuple[int, int] | None:
    fields: dict[bytes, int] = {}
    for line in head.split(b"\n")[1:]:
        words = line.split(b"#", 1)[0].split()
        if words[:1] == [b"ENDHDR"]:
            break
        if len(words) == 2 and words[0] in (b"WIDTH", b"HEIGHT") and words[1].isdigit():
            fields[words[0]] = int(words[1])
    if b"WIDTH" in fields and b"HEIGHT" in fields:
        return fields[b"WIDTH"], fields[b"HEIGHT"]
    return None


def _pfm(head: bytes) -> tuple[int, int] | None:
    words = b" ".join(line.split(b"#", 1)[0] for line in head[2:].split(b"\n")).split()
    if len(words) >= 2 and words[0].isdigit() and words[1].isdigit():
        return int(words[0]), int(words[1])
    return None


def _pillow_size(data: bytes) -> tuple[int, int] | None:
    """The size in the header of one of :data:`PILLOW_FORMATS`, as Pillow reads it, else as the
    kit's own reader of that format does (:data:`FALLBACKS`); None when no format's signature
    matches. A file whose signature matches but whose header neither can read is refused: OpenCV
    might read it otherwise, with no limit but its own."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency of the kit
        return None
    Image.init()
    prefix = data[:16]
    for name in PILLOW_FORMATS:
        if name not in Image.OPEN:
            continue  # a Pillow built without it (AVIF)
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept is not None else True
        if not verdict or isinstance(verdict, str):
            continue  # not this format
        head = data if name in SEEKING_FORMATS else data[:HEADER_WINDOW]  # (see HEADER_WINDOW)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "possibly corrupt EXIF" and the like
                with factory(io.BytesIO(head), "") as opened:  # reads the header, not the pixels
                    return int(opened.size[0]), int(opened.size[1])
        except Exception as error:  # a header Pillow cannot read: an exotic TIFF, junk in a JPEG
            fallback = FALLBACKS.get(name)
            size = fallback(head) if fallback is not None else None
            if size is None:
                why = " ".join(str(error).split()) or type(error).__name__
                raise ImageReadError(
                    f"its {name} header cannot be read ({why}); it was not decoded"
                ) from error
            return size
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame header's size, markers walked as libjpeg walks them: bytes before a marker
    skipped, standalone markers (TEM, RSTn) stepped over, segments skipped by their length."""
    at, end = 2, len(data)
    while at < end:
        if data[at] != 0xFF:  # bytes before a marker: skipped, as libjpeg does
            at = data.find(b"\xff", at)
            if at < 0:
                return None
        while at < end and data[at] == 0xFF:  # fill bytes
            at += 1
        if at >= end:
            return None
        marker = data[at]
        at += 1
        if marker in SOF_MARKERS and at + 7 <= end:
            height, width = struct.unpack(">HH", data[at + 3 : at + 7])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        if marker not in STANDALONE_MARKERS and at + 2 <= end:
            at += struct.unpack(">H", data[at : at + 2])[0]
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    """IHDR, the chunk every PNG starts with (libpng refuses one without)."""
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    """The DIB header's size: 16-bit for the OS/2 core header (12 bytes), else signed 32-bit."""
    if len(data) < 26:
        return None
    (header,) = struct.unpack("<I", data[14:18])
    width, height = struct.unpack(
        "<HH" if header == 12 else "<ii", data[18:22] if header == 12 else data[18:26]
    )
    return abs(width), abs(height)


def _gif_size(data: bytes) -> tuple[int, int] | None:
    """The logical screen (OpenCV refuses a frame outside it)."""
    if len(data) < 10:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return width, height


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of a TIFF's first directory (the page OpenCV decodes)."""
    from PIL import TiffImagePlugin

    try:
        ifh = data[:16] if data[2:4] in (b"+\x00", b"\x00+") else data[:8]  # BigTIFF's is 16 bytes
        directory = TiffImagePlugin.ImageFileDirectory_v2(ifh)
        stream = io.BytesIO(data)
        stream.seek(directory.next)
        directory.load(stream)
        width, height = directory.get(256), directory.get(257)
    except Exception:
        return None
    if isinstance(width, int) and isinstance(height, int):
        return width, height
    return None


# The kit's own reader of a format, where Pillow cannot read a header OpenCV might decode.
FALLBACKS: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "JPEG": _jpeg_size,
    "PNG": _png_size,
    "BMP": _bmp_size,
    "GIF": _gif_size,
    "TIFF": _tiff_size,
}
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
STANDALONE_MARKERS = frozenset({0x00, 0x01, *range(0xD0, 0xD8)})
