"""Large and hostile images through a whole run (the toy entry point, ``tests/toy_main.py``, in a
process of its own): refused by their header or size on disk as that image's error, the run going
on (exit 1); a FIFO among the images reported without blocking; peak memory of the process measured
(``ru_maxrss`` from ``os.wait4``) against a budget a decoded image would break."""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.children import run_child
from tests.conftest import picture

ROOT = Path(__file__).resolve().parents[4]
TOY_MAIN = ROOT / "tests" / "toy_main.py"
GIB = 2**30


def flat_png(path: Path, width: int, height: int, colour: tuple[int, int, int] = (90, 140, 60)) -> Path:
    """A valid RGB PNG of one colour, written row by row: a few MB on disk however many pixels it
    has (20000 x 20000 is 1.2 GB decoded), made without holding the image in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(colour) * width  # filter byte 0, then the pixels
    packer = zlib.compressobj(1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for start in range(0, height, 256):
            data = packer.compress(row * min(256, height - start))
            if data:
                f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IDAT", packer.flush()) + chunk(b"IEND", b""))
    return path


def run_toy(args: list[str], *, timeout: float = 180, address_space: int = 8 * GIB) -> dict[str, Any]:
    """The toy entry point in a child under RLIMIT_AS ``address_space`` (a regression fails there, it
    cannot take the machine): its exit code, peak RSS in MB, stderr; killed after ``timeout`` s."""
    outcome = run_child(
        [sys.executable, str(TOY_MAIN), *args], address_space=address_space, timeout=timeout,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return {"exit": outcome.exit, "peak_mb": outcome.peak_mb, "stderr": outcome.stderr}


def manifest_of(run: Path) -> dict[str, dict[str, Any]]:
    images = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["images"]
    return {Path(entry["file"]).name: entry for entry in images}


def test_a_folder_of_bombs_sparse_files_and_a_fifo_is_explained_around_them(tmp_path: Path) -> None:
    source = tmp_path / "images"
    source.mkdir()
    cv2.imwrite(str(source / "ok.png"), picture(0))
    flat_png(source / "bomb.png", 20000, 20000)  # 400 Mpx: within OpenCV's own bound, 1.2 GB decoded
    with open(source / "sparse.jpg", "wb") as f:
        f.truncate(3 * GIB)
    os.mkfifo(source / "pipe.jpg")  # opening it to read would block the run for ever
    (source / "x.jpg").mkdir()
    (source / "labels").mkdir()  # not named like an image: left out, as before
    alone = run_toy(["--source", str(source / "ok.png"), "--project", str(tmp_path), "--name", "alone"])
    assert alone["exit"] == 0, alone["stderr"]
    done = run_toy(["--source", str(source), "--project", str(tmp_path), "--name", "run"])
    assert done["exit"] == 1, done["stderr"]  # some images failed; the run finished
    entries = manifest_of(tmp_path / "run")
    assert sorted(entries) == ["bomb.png", "ok.png", "pipe.jpg", "sparse.jpg", "x.jpg"]
    assert entries["ok.png"]["error"] is None and len(entries["ok.png"]["detections"]) == 1
    errors = {name: entry["error"] for name, entry in entries.items() if name != "ok.png"}
    assert errors["bomb.png"] == (
        f"cannot read image '{source / 'bomb.png'}': its header gives 20000 x 20000 pixels (400,000,000), "
        "more than the limit of 89,478,485 pixels; it was not decoded. Raise the limit with "
        "--max-image-pixels N (image_limits=ImageLimits(pixels=N) in Python) for an image you trust"
    )
    assert errors["sparse.jpg"].startswith(
        f"cannot read image '{source / 'sparse.jpg'}': the file is 3,221,225,472 bytes (3.0 GiB), more "
        "than the limit of 268,435,456 bytes (256.0 MiB); it was not read. Raise the limit with "
        "--max-image-bytes N"
    )
    assert errors["pipe.jpg"].endswith("it is a FIFO (named pipe), not an image file; it was not opened")
    assert errors["x.jpg"].endswith(
        "it is a folder, not an image file; pass the folder itself to explain its images"
    )
    for name, error in errors.items():
        assert error in done["stderr"]  # each also said on stderr as it happened
        assert entries[name]["detections"] == []
    # Decoding the bomb would take 1.2 GB, reading the sparse file 3 GB: neither happened.
    assert done["peak_mb"] < alone["peak_mb"] + 300, (done["peak_mb"], alone["peak_mb"])


def test_invalid_limits_are_refused_before_the_run(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "ok.png"), picture(0))
    for flag, value in (("--max-image-pixels", "0"), ("--max-image-bytes", "-3")):
        done = run_toy(["--source", str(tmp_path / "ok.png"), "--project", str(tmp_path), flag, value])
        assert done["exit"] == 2
        assert f"error: {flag} must be a positive whole number" in done["stderr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]  # no run folder made


def test_an_11000_pixel_png_is_refused_by_default_and_explained_at_a_bounded_size_when_allowed(
    tmp_path: Path,
) -> None:
    """The issue's image: refused from its header by default; with --max-image-pixels raised it is
    explained, its maps, overlays and npz at 2048 x 2048, and the process's peak memory is the
    decoded image and a bounded amount more (full-size maps took several GB for this one image)."""
    source = tmp_path / "images"
    source.mkdir()
    big = flat_png(source / "big.png", 11000, 11000)
    refused = run_toy(["--source", str(big), "--project", str(tmp_path), "--name", "refused"])
    assert refused["exit"] == 1 and "its header gives 11000 x 11000 pixels (121,000,000)" in refused["stderr"]
    cv2.imwrite(str(tmp_path / "small.png"), picture(0))
    alone = run_toy(["--source", str(tmp_path / "small.png"), "--project", str(tmp_path), "--name", "alone"])
    args = ["--source", str(big), "--project", str(tmp_path), "--name", "allowed"]
    done = run_toy([*args, "--max-image-pixels", str(11000 * 11000)])
    assert done["exit"] == 0, done["stderr"]
    entry = manifest_of(tmp_path / "allowed")["big.png"]
    assert (entry["width"], entry["height"]) == (11000, 11000)
    (det,) = entry["detections"]
    assert det["box_xyxy"] == [0.0, 0.0, 11000.0, 11000.0] and det["maps"]["feat"]["energy_in_box"] == 1.0
    assert cv2.imread(str(tmp_path / "allowed" / det["maps"]["feat"]["overlay"])).shape == (2048, 2048, 3)
    with np.load(tmp_path / "allowed" / entry["maps_file"]) as arrays:
        assert arrays["det0_feat"].shape == (2048, 2048)
    image_mb = 11000 * 11000 * 3 / 2**20  # 346 MB of pixels, held while the image is explained
    assert done["peak_mb"] < alone["peak_mb"] + 2.5 * image_mb, (done["peak_mb"], alone["peak_mb"])
