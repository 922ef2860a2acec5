"""Image sources and image reading, with the odd formats researchers actually have on disk."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from kit.errors import ImageReadError, KitError, SourceNotFoundError
from kit.images import IMAGE_SUFFIXES, list_sources, printable, read_image


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
