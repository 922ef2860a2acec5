"""`make bench ARGS=--large-image`: peak memory of one run of one large image, per case, in a child.

Each case runs yolov7's entry point (``main_gradcam.py --weights demo``, the kit's demo detector)
on one image in a process of its own and reads its peak resident memory (``ru_maxrss`` of the
child, from ``os.wait4``). The cases:

- ``model``: the photo at the size the model sees (1024 x 768): the model, one forward and its
  maps, and the kit; the other rows are read against it ("on top of the model");
- ``photo-16mp``, ``photo-64mp``: 4624 x 3468 and 9248 x 6936 photo-like images (tiles of
  ``scripts/demo/shapes.py``, scaled up, so the demo detector finds dozens of objects);
- ``png-11000``: an 11000 x 11000 PNG of flat colour with a few shapes (about 1 MB on disk),
  refused by the default ``--max-image-pixels``, then explained with the limit raised.

A child whose resident memory passes ``--max-rss-gb`` is killed (SIGKILL) and its row says so,
so the measurement never takes a shared machine down. Figures are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scripts.demo import shapes
from scripts.upstream.config import REPO_ROOT, checkout_path, load_project

PHOTO_HW = (6936, 9248)  # 64 megapixels, 4:3
HUGE_SIDE = 11000
IMG_SIZE = 1024  # the demo detector's input here: tiles of about 256 px each, as it was trained
GRID = (3, 4)  # rows x columns of shapes tiles in the photo


def photo(hw: tuple[int, int] = PHOTO_HW) -> np.ndarray:
    """A photo-like image of ``hw`` pixels: a grid of the demo's shapes images, scaled up."""
    rows, cols = GRID
    tiles = [shapes.make_image(i, split="eval")[0] for i in range(rows * cols)]
    grid = np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)])
    return cv2.resize(grid, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def flat_png(side: int = HUGE_SIDE) -> np.ndarray:
    """A square image of flat colour with a few large shapes: compresses to about 1 MB as PNG."""
    image = np.full((side, side, 3), (90, 140, 60), np.uint8)
    step = side // 4
    for k in range(3):
        centre = (step * (k + 1), step * (k + 1))
        cv2.circle(image, centre, step // 3, (30 + 80 * k, 200, 255 - 60 * k), -1)
    return image


def run_child(command: Sequence[str], *, cwd: Path, max_rss_gb: float) -> dict[str, Any]:
    """Run ``command``; its exit code, seconds and peak RSS in MB (killed above ``max_rss_gb``)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    killed = threading.Event()

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                text = status.read_text()
            except OSError:
                return
            rss_kb = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS")), 0)
            if rss_kb > max_rss_gb * 1024 * 1024:
                killed.set()
                os.kill(process.pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
    watcher.join()
    return {
        "exit": process.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_mb": round(usage.ru_maxrss / 1024),  # Linux: kilobytes
        "killed_over_gb": max_rss_gb if killed.is_set() else None,
        "last_lines": stderr.strip().splitlines()[-3:],
    }


def detections(run: Path) -> int | None:
    """Detections of the run's one image, from its manifest (None without one)."""
    try:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return sum(len(image.get("detections") or []) for image in manifest.get("images", []))


def cases(folder: Path) -> list[tuple[str, Path, list[str]]]:
    """(name, image, extra flags) of each measured run; the images are written into ``folder``."""
    big = photo()
    paths = {
        "model": folder / "model.jpg",
        "photo16": folder / "photo-16mp.jpg",
        "photo": folder / "photo-64mp.jpg",
        "huge": folder / "png-11000.png",
    }
    for key, hw in (
        ("model", (IMG_SIZE * 3 // 4, IMG_SIZE)),
        ("photo16", (PHOTO_HW[0] // 2, PHOTO_HW[1] // 2)),
    ):
        cv2.imwrite(str(paths[key]), cv2.resize(big, (hw[1], hw[0]), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(paths["photo"]), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del big
    cv2.imwrite(str(paths["huge"]), flat_png())
    return [
        ("model", paths["model"], []),
        ("photo-16mp", paths["photo16"], []),
        ("photo-64mp", paths["photo"], []),
        ("png-11000", paths["huge"], []),
        ("png-11000 (limit raised)", paths["huge"], ["--max-image-pixels", str(HUGE_SIDE * HUGE_SIDE)]),
    ]


def measure(checkout: Path, *, max_rss_gb: float, only: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One record per case: its image's size on disk, exit code, seconds, peak MB, detections."""
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kit-bench-large-") as tmp:
        folder = Path(tmp)
        for name, image, extra in cases(folder):
            if only and name.split()[0] not in only:
                continue
            run = folder / "runs" / f"case{len(records)}"
            command = [
                sys.executable, str(checkout / "main_gradcam.py"), "--weights", "demo", "--device", "cpu",
                "--img-size", str(IMG_SIZE), "--source", str(image), "--project", str(run.parent),
                "--name", run.name, *extra,
            ]  # fmt: skip
            result = run_child(command, cwd=checkout, max_rss_gb=max_rss_gb)
            record = {
                "case": name,
                "image_mb": round(image.stat().st_size / 2**20, 1),
                "detections": detections(run),
                **result,
            }
            print(f"{name}: {json.dumps(record)}", flush=True)
            records.append(record)
    return records


def format_table(records: Sequence[dict[str, Any]]) -> str:
    base = next((r["peak_mb"] for r in records if r["case"] == "model"), None)
    lines = [
        f"{'case':26} {'file MB':>7} {'exit':>4} {'dets':>5} {'seconds':>7} {'peak MB':>8} {'+model':>7}"
    ]
    for r in records:
        extra = "-" if base is None else f"{r['peak_mb'] - base:+d}"
        dets = "-" if r["detections"] is None else str(r["detections"])
        note = f"  killed above {r['killed_over_gb']} GB" if r["killed_over_gb"] else ""
        lines.append(
            f"{r['case']:26} {r['image_mb']:>7} {r['exit']:>4} {dets:>5} {r['seconds']:>7} "
            f"{r['peak_mb']:>8} {extra:>7}{note}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.large_image", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=None, help="the yolov7 checkout (default: set up)")
    parser.add_argument("--max-rss-gb", type=float, default=12.0, help="kill a child above this RSS")
    parser.add_argument(
        "--cases", default="", help="comma-separated: model, photo-16mp, photo-64mp, png-11000 (default all)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the records here (JSON)")
    args = parser.parse_args(argv)
    checkout = args.checkout or checkout_path(load_project(), "yolov7")
    if not (checkout / "main_gradcam.py").is_file():
        print(f"yolov7 is not set up ({checkout}); run `make setup-yolov7`", file=sys.stderr)
        return 1
    records = measure(checkout, max_rss_gb=args.max_rss_gb, only=[c for c in args.cases.split(",") if c])
    print()
    print(format_table(records))
    print("RECORDS " + json.dumps(records))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"large_image": records}, indent=2) + "\n")
    return 0 if records and all(r["killed_over_gb"] is None for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
