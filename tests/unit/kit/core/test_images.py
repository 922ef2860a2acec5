"""Image sources and image reading, with the odd formats researchers actually have on disk."""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from kit.core.errors import ImageReadError, KitError, SourceNotFoundError
from kit.core.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    ImageLimits,
    header_size,
    list_sources,
    printable,
    read_image,
)
from kit.core.options import ArgumentError


def _write(path: Path, image: np.ndarray) -> Path:
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def test_color_png_round_trips(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = read_image(_write(tmp_path / "c.png", image))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, image)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_write(tmp_path / "g.png", gray))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_alpha_is_dropped(tmp_path: Path) -> None:
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0  # fully transparent
    out = read_image(_write(tmp_path / "a.png", bgra))
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])


def test_sixteen_bit_is_scaled_to_eight_bit(tmp_path: Path) -> None:
    deep = np.array([[0, 256 * 100, 65535]], np.uint16)
    out = read_image(_write(tmp_path / "d.png", deep))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 100, 255]])


def test_non_ascii_path(tmp_path: Path) -> None:
    out = read_image(_write(tmp_path / "bild_ä_画像.jpg", np.full((4, 4, 3), 128, np.uint8)))
    assert out.shape == (4, 4, 3)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.txt", b"not an image", r"suffix '\.txt'.*cannot decode"),
        ("fake.jpg", b"not a jpeg either", "cannot decode"),
        ("empty.png", b"", r"empty \(0 bytes\)"),
    ],
)
def test_unreadable_files_say_which_and_why(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(tmp_path / name)
    assert name in str(info.value)
    assert isinstance(info.value, KitError)


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="gone.jpg.*no such file"):
        read_image(tmp_path / "gone.jpg")


def test_folder_lists_regular_visible_files_sorted_including_non_images(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    assert [p.name for p in list_sources(tmp_path)] == ["a.png", "b.jpg", "notes.txt"]
    assert list_sources(str(tmp_path / "a.png")) == [tmp_path / "a.png"]


def test_glob_pattern(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.jpg", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    assert [p.name for p in list_sources(tmp_path / "*.jpg")] == ["a.jpg", "b.jpg"]
    assert [p.name for p in list_sources(f"{tmp_path}/**/*.jpg")] == ["a.jpg", "b.jpg", "d.jpg"]


def test_missing_sources_raise_naming_the_source(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="nowhere.*does not exist") as info:
        list_sources(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(SourceNotFoundError, match=r"\*\.bmp.*matches no file"):
        list_sources(tmp_path / "*.bmp")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFoundError, match="empty.*has no files"):
        list_sources(tmp_path / "empty")


def test_suffixes_are_lower_case_with_dot() -> None:
    assert {".jpg", ".png"} <= IMAGE_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_SUFFIXES)


def test_printable_names_are_valid_utf8_with_undecodable_bytes_as_escapes() -> None:
    name = os.fsdecode(b"dir/e_\xff\xfe.jpg")  # what os.listdir gives for a name that is not UTF-8
    assert printable(name) == "dir/e_\\xff\\xfe.jpg"
    assert printable(Path(name)) == "dir/e_\\xff\\xfe.jpg"
    assert printable("bild_ä_画像.jpg") == "bild_ä_画像.jpg"  # valid names are unchanged
    assert printable("\ud800x") == "\\ud800x"  # a lone surrogate that no byte made


def test_a_name_that_is_not_utf8_is_read_and_shown_escaped(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/\xff.png"
    _write(Path(os.fsdecode(raw)), np.full((4, 4, 3), 7, np.uint8))
    assert read_image(os.fsdecode(raw)).shape == (4, 4, 3)
    broken = os.fsencode(tmp_path) + b"/\xfe.png"
    with open(broken, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ImageReadError) as info:
        read_image(os.fsdecode(broken))
    assert str(info.value).startswith(f"cannot read image '{tmp_path}/\\xfe.png': OpenCV cannot decode it")
    str(info.value).encode("utf-8")  # printable as it is


# ---- header first: the pixel and file-size limits -------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` pixels and holds none (no IDAT): what a header
    check must judge without decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


ENCODABLE = [".bmp", ".jpg", ".png", ".tif", ".webp", ".ppm", ".pgm", ".pbm", ".pam", ".pfm", ".ras", ".jp2"]
ENCODABLE += [".hdr", ".avif", ".gif"]


@pytest.mark.parametrize("suffix", ENCODABLE)
def test_header_size_of_every_format_opencv_decodes(suffix: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    if suffix in (".pgm", ".pbm"):
        image = image[..., 0]
    encoded = image.astype(np.float32) / 255 if suffix in (".pfm", ".hdr") else image
    try:
        ok, data = cv2.imencode(suffix, encoded)
    except cv2.error:
        pytest.skip(f"this OpenCV cannot write {suffix}")
    assert ok
    assert header_size(data.tobytes()) == (53, 37)
    assert cv2.imdecode(data, cv2.IMREAD_COLOR).shape[:2] == (37, 53)  # what the header must match


def test_an_image_beyond_the_pixel_limit_is_refused_naming_image_size_limit_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_header(11000, 11000))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == (
        f"cannot read image '{path}': its header gives 11000 x 11000 pixels (121,000,000), more than the "
        "limit of 89,478,485 pixels; it was not decoded. Raise the limit with --max-image-pixels N "
        "(image_limits=ImageLimits(pixels=N) in Python) for an image you trust"
    )


def test_the_pixel_limit_admits_a_64_megapixel_photo_and_counts_exactly(tmp_path: Path) -> None:
    assert 9248 * 6936 <= ImageLimits().pixels == MAX_IMAGE_PIXELS
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = _write(tmp_path / "small.png", image)
    np.testing.assert_array_equal(read_image(path, limits=ImageLimits(pixels=600)), image)  # 600 = 20 x 30
    with pytest.raises(ImageReadError, match=r"30 x 20 pixels \(600\), more than the limit of 599 pixels"):
        read_image(path, limits=ImageLimits(pixels=599))


def test_pixels_are_exactly_opencvs_whatever_reads_the_header(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (41, 29, 3), dtype=np.uint8)
    for suffix in (".jpg", ".png", ".webp", ".tif"):
        path = _write(tmp_path / f"x{suffix}", image)
        np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)))


def test_a_file_beyond_the_byte_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sparse = tmp_path / "sparse.jpg"
    with open(sparse, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GiB of holes: reading it would take 3 GiB of memory
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    with pytest.raises(ImageReadError) as info:
        read_image(sparse)
    assert str(info.value) == (
        f"cannot read image '{sparse}': the file is 3,221,225,472 bytes (3.0 GiB), more than the limit of "
        "268,435,456 bytes (256.0 MiB); it was not read. Raise the limit with --max-image-bytes N "
        "(image_limits=ImageLimits(bytes=N) in Python) for a file you trust"
    )
    assert opened == []  # refused from its size on disk, never opened
    small = _write(tmp_path / "small.png", np.zeros((4, 4, 3), np.uint8))
    size = small.stat().st_size
    assert read_image(small, limits=ImageLimits(bytes=size)).shape == (4, 4, 3)
    with pytest.raises(ImageReadError, match=f"the file is {size} bytes .*limit of {size - 1} bytes"):
        read_image(small, limits=ImageLimits(bytes=size - 1))


def test_a_file_that_grows_past_the_limit_after_its_size_was_checked_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "grows.png", np.zeros((4, 4, 3), np.uint8))
    real_stat = os.stat

    def stale_stat(p: object, *args: object, **kwargs: object) -> os.stat_result:
        info = real_stat(p, *args, **kwargs)  # type: ignore[arg-type]
        return os.stat_result((info.st_mode, *[0] * 5, 10, *[0] * 3))  # claims 10 bytes

    monkeypatch.setattr(os, "stat", stale_stat)
    with pytest.raises(ImageReadError, match=r"grows.png': the file is 11 bytes .*limit of 10 bytes"):
        read_image(path, limits=ImageLimits(bytes=10))  # at most limit + 1 bytes are read
    monkeypatch.undo()
    with open(path, "ab") as f:
        f.write(b"\0" * 100)  # grown by 100 bytes after being looked at, as below
    monkeypatch.setattr(os, "stat", stale_stat)
    assert read_image(path, limits=ImageLimits(bytes=10**6)).shape == (4, 4, 3)  # read on to its end


def test_a_huge_byte_limit_does_not_allocate_it(tmp_path: Path) -> None:
    """One read(limit + 1) would allocate the limit at once: 10**18 bytes is a MemoryError."""
    path = _write(tmp_path / "a.png", np.zeros((3, 3, 3), np.uint8))
    assert read_image(path, limits=ImageLimits(bytes=10**18)).shape == (3, 3, 3)


def test_pillows_own_limit_plays_no_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # an upstream may change Pillow's global
    assert header_size(png_header(20000, 20000)) == (20000, 20000)  # > 2 x Pillow's default bound too
    path = _write(tmp_path / "a.png", np.zeros((5, 5, 3), np.uint8))
    assert read_image(path).shape == (5, 5, 3)


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("huge.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 90000\n"),
        ("huge.pam", b"P7\nWIDTH 90000\nHEIGHT 100000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"),
        ("huge.pfm", b"PF\n90000 100000\n-1.0\n"),
        ("huge.tif", None),  # a float TIFF: Pillow cannot open it, its first directory is read instead
    ],
)
def test_formats_pillow_lacks_are_refused_from_their_header(tmp_path: Path, name: str, header: bytes) -> None:
    if header is None:
        ok, data = cv2.imencode(".tiff", np.zeros((100, 90, 3), np.float32))
        assert ok
        with pytest.raises(ImageReadError, match="90 x 100 pixels"):
            read_image(_raw(tmp_path / name, data.tobytes()), limits=ImageLimits(pixels=8999))
        return
    with pytest.raises(ImageReadError, match=r"its header gives 90000 x 100000 pixels \(9,000,000,000\)"):
        read_image(_raw(tmp_path / name, header + b"\x00" * 64))


def test_a_text_header_without_its_size_is_refused(tmp_path: Path) -> None:
    path = _raw(tmp_path / "odd.hdr", b"#?RADIANCE\n" + b"# comment\n" * 7000 + b"\n-Y 10 +X 10\n")
    with pytest.raises(ImageReadError, match="odd.hdr': its Radiance HDR header does not give its width"):
        read_image(path)


def test_an_image_whose_header_gives_no_size_is_decoded_then_held_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule for a format no header reader knows: OpenCV decodes it (its own bound, 2^30
    pixels), and the decoded image is held to the same limit."""
    import kit.core.images

    monkeypatch.setattr(kit.core.images, "header_size", lambda data: None)
    path = _write(tmp_path / "x.png", np.zeros((20, 30, 3), np.uint8))
    assert read_image(path, limits=ImageLimits(pixels=600)).shape == (20, 30, 3)
    refusal = r"x.png': it decodes to 30 x 20 pixels \(600\), more than the limit of 599 pixels. Raise"
    with pytest.raises(ImageReadError, match=refusal):
        read_image(path, limits=ImageLimits(pixels=599))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100"])
def test_limits_must_be_positive_whole_numbers(bad: object) -> None:
    with pytest.raises(ArgumentError, match=r"ImageLimits.pixels must be a positive whole number of pixels"):
        ImageLimits(pixels=bad).checked()  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"--max-image-bytes must be a positive whole number of bytes"):
        ImageLimits(bytes=bad).checked({"bytes": "--max-image-bytes"})  # type: ignore[arg-type]


# ---- what a folder holds besides files --------------------------------------------------------


def test_a_folder_lists_fifos_sockets_links_and_image_named_folders_to_report_them(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "x.jpg").mkdir()
    (tmp_path / "plain").mkdir()  # a folder of other things: not an image, left out as before
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "null.png").symlink_to("/dev/null")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.sock"))
        names = [p.name for p in list_sources(tmp_path)]
        assert names == ["a.jpg", "gone.png", "null.png", "pipe.jpg", "s.sock", "x.jpg"]
        assert [p.name for p in list_sources(tmp_path / "*.jpg")] == ["a.jpg", "pipe.jpg", "x.jpg"]
        reasons = {
            "pipe.jpg": "it is a FIFO (named pipe), not an image file; it was not opened",
            "x.jpg": "it is a folder, not an image file; pass the folder itself to explain its images",
            "gone.png": "a symbolic link to a file that does not exist",
            "null.png": "it is a character device, not an image file; it was not opened",
            "s.sock": "it is a socket, not an image file; it was not opened",
        }
        for name, reason in reasons.items():
            with pytest.raises(ImageReadError) as info:
                read_image(tmp_path / name)
            assert str(info.value) == f"cannot read image '{tmp_path / name}': {reason}"
    finally:
        server.close()


def test_a_fifo_put_in_a_files_place_after_the_check_is_not_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the look (stat) and the open the file became a FIFO: the open does not block, and
    the opened file is checked again (run in a thread: a regression would block, not pass)."""
    fifo = tmp_path / "swapped.jpg"
    os.mkfifo(fifo)
    regular = _write(tmp_path / "r.png", np.zeros((2, 2, 3), np.uint8))
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(regular if Path(p) == fifo else p, *a, **k))
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _capture(outcome, lambda: read_image(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
        with open(fifo, "wb"):  # unblock the reader so the test process can end
            pass
        pytest.fail("read_image blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ImageReadError)
    assert "it is a FIFO (named pipe), not an image file; it was not opened" in str(outcome[0])


def _capture(into: list[BaseException], call: Callable[[], object]) -> None:
    try:
        call()
    except BaseException as error:
        into.append(error)


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _jpeg_with_tem(image: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """A JPEG with a TEM marker (FF 01) after SOI: libjpeg steps over it, Pillow gives up. ``size``:
    write another (width, height) into its frame header."""
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    data = bytearray(encoded.tobytes())
    if size is not None:
        at = data.index(b"\xff\xc0") + 5  # SOF0: length (2), precision (1), then height, width
        data[at : at + 4] = struct.pack(">HH", size[1], size[0])
    return b"\xff\xd8\xff\x01" + bytes(data[2:])


def test_a_jpeg_pillow_cannot_read_is_read_as_libjpeg_reads_it(tmp_path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    image = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data = _jpeg_with_tem(image)
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))
    assert header_size(data) == (40, 24)
    path = _raw(tmp_path / "tem.jpg", data)
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)))
    # ... so a frame header announcing a bomb behind such a marker is refused before decoding
    bomb = _raw(tmp_path / "bomb.jpg", _jpeg_with_tem(image, size=(30000, 30000)))
    with pytest.raises(ImageReadError, match=r"its header gives 30000 x 30000 pixels \(900,000,000\)"):
        read_image(bomb)


def _bad_crc_png() -> bytes:
    header = bytearray(png_header(30000, 30000))
    header[29] ^= 0xFF  # IHDR's CRC: Pillow refuses the file, the size is still in IHDR
    return bytes(header)


FALLBACK_CASES = {
    "crc.png": _bad_crc_png(),
    "rle.bmp": b"BM"
    + struct.pack("<IHHI", 0, 0, 0, 54)  # compression 99: Pillow refuses it
    + struct.pack("<IiiHHIIiiII", 40, 30000, -30000, 1, 24, 99, 0, 0, 0, 0, 0),
    "junk.gif": b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0, 0, 0) + b"\x99junk",
}


@pytest.mark.parametrize("name", sorted(FALLBACK_CASES))
def test_a_header_pillow_refuses_is_read_by_the_kits_own_reader(tmp_path: Path, name: str) -> None:
    data = FALLBACK_CASES[name]
    assert header_size(data) == (30000, 30000)
    with pytest.raises(ImageReadError, match="its header gives 30000 x 30000 pixels"):
        read_image(_raw(tmp_path / name, data))


def test_a_known_signature_with_a_header_no_reader_can_read_is_refused(tmp_path: Path) -> None:
    """The file says it is a WebP, but no size can be read: OpenCV would otherwise decode it with no
    bound but its own 2^30 pixels."""
    path = _raw(tmp_path / "odd.webp", b"RIFF\x20\x00\x00\x00WEBPVP8X" + b"\xff" * 24)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value).startswith(f"cannot read image '{path}': its WEBP header cannot be read (")
    assert str(info.value).endswith("); it was not decoded")


def test_headers_are_read_within_a_window_except_where_formats_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow walks PNG chunks and JPEG segments in Python (a 256 MiB PNG of tiny chunks took it a
    minute): it gets the first HEADER_WINDOW bytes, and a PNG whose IDAT lies beyond is read from
    its IHDR. A TIFF, whose directory often follows its pixels, is read whole."""
    from PIL import Image

    import kit.core.images

    monkeypatch.setattr(kit.core.images, "HEADER_WINDOW", 1000)
    given: list[int] = []
    factory, accept = Image.OPEN["PNG"]
    monkeypatch.setitem(
        Image.OPEN, "PNG", (lambda fp, name: given.append(len(fp.getvalue())) or factory(fp, name), accept)
    )
    crowded = png_header(30000, 30000)[:33] + _chunk(b"tEXt", b"a\x00b") * 1000 + _chunk(b"IEND", b"")
    assert header_size(crowded) == (30000, 30000) and given == [1000]
    ok, tiff = cv2.imencode(".tiff", np.zeros((100, 90, 3), np.uint8), [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    data = tiff.tobytes()
    assert ok and struct.unpack("<I", data[4:8])[0] > 1000  # its first directory, after the pixels
    assert header_size(data) == (90, 100)
