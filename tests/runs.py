"""Run folders for the tests of the modules that read them (kit.evaluation.audit, kit.report.page):
written by the
kit's own RunWriter, as a run writes them, on tiny images whose maps have known energy_in_box."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

from kit.core.detection import Detection
from kit.core.results import DetectionResult, ImageResult
from kit.evaluation.evaluate import Evaluator
from kit.evaluation.labels import load_labels
from kit.rundir.writer import RunSettings, RunWriter

H = W = 10
BOX = (0.0, 0.0, 5.0, 10.0)  # the left half: pixel columns 0..4
IMAGE = np.full((H, W, 3), 128, np.uint8)


def energy_map(energy: float) -> np.ndarray:
    """A map whose energy_in_box in ``BOX`` is ``energy``: ``energy`` left, ``1 - energy`` right."""
    cam = np.empty((H, W), np.float32)
    cam[:, :5], cam[:, 5:] = energy, 1.0 - energy
    return cam


def det(
    i: int,
    cls: int,
    score: float,
    maps: dict[str, np.ndarray | None],
    *,
    box: tuple[float, float, float, float] = BOX,
) -> DetectionResult:
    return DetectionResult(
        id=i,
        detection=Detection(image_index=0, box_xyxy=box, class_id=cls, score=score, row=i, level=0),
        class_name=["cat", "dog"][cls],
        maps=maps,
    )


def write_run(
    out: Path,
    images: dict[str, Sequence[DetectionResult]],
    layers: Sequence[str] = ("74",),
    *,
    image: np.ndarray = IMAGE,
) -> Path:
    with RunWriter(
        RunSettings(upstream="yolov7", weights="w.pt", method="gradcam", target="class-logit", layers=layers),
        out_dir=out,
    ) as writer:
        for name, dets in images.items():
            writer.write_image(source=Path("imgs") / name, image_bgr=image, detections=dets)
        writer.finish()
    return out


def eval_run(tmp_path: Path) -> Path:
    """A run with --eval as Explainer.run does it: the writer, then the Evaluator on the same results.

    a.png: det 0 on its ground truth (matched), det 1 elsewhere (unmatched); b.png: a ground truth of
    the other class (unmatched); c.png is not in the labels (not evaluated).
    """
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.25 0.5 0.5 1.0\n")
    (labels / "b.txt").write_text("1 0.25 0.5 0.5 1.0\n")
    sources = [Path("imgs") / n for n in ("a.png", "b.png", "c.png")]
    evaluator = Evaluator(
        labels=load_labels(labels, names=["cat", "dog"], sources=sources[:2]), detector=lambda x: [], curves=0
    )
    right = (5.0, 0.0, 10.0, 10.0)
    results = {
        # a.png det 1: its box is the right half, where energy_map(0.9) has 0.1 of its mass
        "a.png": [
            det(0, 0, 0.9, {"74": energy_map(0.7)}),
            det(1, 0, 0.8, {"74": energy_map(0.9)}, box=right),
        ],
        "b.png": [det(0, 0, 0.7, {"74": energy_map(0.3)})],
        "c.png": [det(0, 1, 0.6, {"74": energy_map(0.2)}), det(1, 1, 0.5, {"74": None})],
    }
    out = write_run(tmp_path / "run", results)
    for source in sources:
        dets = tuple(results[source.name])
        evaluator.add_image(source, IMAGE, ImageResult(str(source), W, H, dets, ("74",), image=IMAGE))
    evaluator.finish(out)
    return out


# A manifest of the first kind (no 'interrupted', maps also as a list), with records that lack fields
# or are not records at all.
OLD_MANIFEST: dict[str, Any] = {
    "upstream": "yolov7",
    "weights": "w.pt",
    "method": "gradcam",
    "target": "class_logit",
    "layers": ["74"],
    "images": [
        {
            "file": "a.png",
            "detections": [
                {"id": 0, "class_id": 3, "score": 0.5, "maps": {"74": {"energy_in_box": 0.25}}},
                {"id": 1, "class_name": "cat", "maps": [{"layer": "74", "energy_in_box": 0.75}]},
                {"id": 2, "class_id": 3, "class_name": "x", "score": 0.1, "maps": {}},
                {"id": 3, "class_id": 3, "class_name": "x", "maps": {"74": {"energy_in_box": None}}},
                "not a detection",
            ],
        },
        {"file": "b.png", "error": "cannot read"},
        ["not an image record"],
    ],
}


# ---- runs with pictures a person can look at (kit.report.page) -------------------------------------
SCENE_HW = (120, 160)
LEVELS = ("74", "75", "76")  # a YOLO head: a detection has gradient only at its own level


def scene(seed: int, hw: tuple[int, int] = SCENE_HW) -> np.ndarray:
    """A noisy background with a red disc and a blue square (BGR), different for every seed."""
    rng = np.random.default_rng(seed)
    h, w = hw
    picture = rng.integers(60, 110, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (h // 6) ** 2
    picture[disc] = (40, 40, 220)
    picture[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + h // 4] = (220, 90, 30)
    return picture


def blob(hw: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    """A Gaussian map in [0, 1] peaking at ``centre`` (x, y)."""
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    cam = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    return (cam / cam.max()).astype(np.float32)


def yolo_detection(
    i: int, cls: int, score: float, level: int, hw: tuple[int, int] = SCENE_HW, *, fused: bool = True
) -> DetectionResult:
    """A detection on the disc (cat) or the square (dog), with its map at its own head level only."""
    h, w = hw
    box = (w / 6, h / 6, w / 2, h / 2) if cls == 0 else (w / 2, h / 2, w / 2 + h / 4, 3 * h / 4)
    cam = blob(hw, ((box[0] + box[2]) / 2 + 6 * i, (box[1] + box[3]) / 2), 6.0 + 8 * level)
    maps: dict[str, np.ndarray | None] = {la: cam if k == level else None for k, la in enumerate(LEVELS)}
    if fused:
        maps["fused"] = cam
    return DetectionResult(
        id=i,
        detection=Detection(image_index=0, box_xyxy=box, class_id=cls, score=score, row=i, level=level),
        class_name=["cat", "dog"][cls],
        maps=maps,
    )


def picture_run(out: Path, names: Sequence[str] = ("street.jpg", "park.png", "empty.jpg")) -> Path:
    """A run of the YOLO kind at layers 74, 75, 76 with --fuse: the first image has three detections,
    the second two, the third none, and one image failed."""
    plans = [[(0, 0.91, 0), (1, 0.55, 1), (0, 0.32, 2)], [(1, 0.78, 2), (0, 0.66, 0)], []]
    with RunWriter(
        RunSettings(
            upstream="yolov7",
            weights="runs/train/exp/weights/best.pt",
            method="gradcam",
            target="class-logit",
            layers=LEVELS,
            extra={"img_size": 320, "conf_thres": 0.25, "iou_thres": 0.45},
        ),
        out_dir=out,
    ) as writer:
        for k, (name, plan) in enumerate(zip(names, plans)):
            dets = [yolo_detection(i, cls, score, level) for i, (cls, score, level) in enumerate(plan)]
            writer.write_image(source=Path("imgs") / name, image_bgr=scene(k), detections=dets)
        writer.add_error(Path("imgs") / "broken.jpg", "cannot read image 'imgs/broken.jpg': not an image")
        writer.finish()
    return out


def large_run(out: Path, images: int, *, per_image: int = 2) -> Path:
    """A run folder of ``images`` images laid out as RunWriter lays them out (its own records, header
    and final merge), each with ``per_image`` detections at layers 74, 75, 76 (one reached): every
    picture is one small JPEG linked under each name, so 5,000 images take a second or two, not
    minutes. The records go into manifest.json at once, which the writer's finish() merges as a
    resumed run's earlier images."""
    import cv2

    from kit.rundir.schema import DetectionRecord, ImageRecord, MapRecord

    ok, jpeg = cv2.imencode(".jpg", scene(0, (48, 64)))
    assert ok
    source = out / ".picture.jpg"
    records = []
    with RunWriter(
        RunSettings(upstream="yolov7", weights="w.pt", method="gradcam", target="class-logit", layers=LEVELS),
        out_dir=out,
    ) as writer:
        source.write_bytes(jpeg.tobytes())
        for n in range(images):
            stem = f"img{n:05d}"
            (out / stem).mkdir()
            dets = []
            for i in range(per_image):
                level = (n + i) % 3
                overlay = f"{stem}/det{i}_{LEVELS[level]}.jpg"
                os.link(source, out / overlay)
                maps = [
                    MapRecord(layer=la, overlay=overlay, energy_in_box=round((n * 7 + i) % 100 / 100, 2))
                    if k == level
                    else MapRecord(layer=la, overlay=None, energy_in_box=None, no_gradient=True)
                    for k, la in enumerate(LEVELS)
                ]
                score = round(0.25 + (n * 13 + i * 7) % 75 / 100, 3)
                box = [4.0, 4.0, 30.0, 40.0]
                dets.append(DetectionRecord(i, box, i % 2, ["cat", "dog"][i % 2], score, level, maps))
            os.link(source, out / f"{stem}_summary.jpg")
            record = ImageRecord(f"imgs/{stem}.jpg", 64, 48, dets, None, summary=f"{stem}_summary.jpg")
            records.append(record.to_json())
        writer.manifest_path.write_text(json.dumps(writer.manifest(records)), encoding="utf-8")
        writer.finish()
    source.unlink()
    return out


@pytest.fixture(scope="session")
def large_run_5000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 images, 10,000 detections (made once per session: 2-3 s)."""
    return large_run(tmp_path_factory.mktemp("large") / "run", 5000)


# File, class and weights names that would run script, break out of an attribute or a URL, or read
# as markup if the page did not escape them (the stems keep quotes, spaces, #, % and & where the
# run folder allows them: kit.rundir.writer.safe_stem replaces only <, >, " and separators).
HOSTILE_NAMES = (
    '"><script>alert(1)</script>.png',
    'it\'s "quoted".png',
    "ünïcødé 画像.png",
    "with space #1 100%.png",
    "<img src=x onerror=alert(2)>.png",
    "&amp;lt;.png",
)
HOSTILE_CLASS = "</option><script>alert(3)</script>"


def hostile_run(out: Path) -> Path:
    """A run of the HOSTILE_NAMES images; the first detection's class is HOSTILE_CLASS and the weights
    are named ``<b>w</b>.pt``."""
    images = {n: [yolo_detection(0, k % 2, 0.9 - k / 10, k % 3)] for k, n in enumerate(HOSTILE_NAMES)}
    write_run(out, images, layers=LEVELS, image=scene(7))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["images"][0]["detections"][0]["class_name"] = HOSTILE_CLASS
    manifest["weights"] = "<b>w</b>.pt"
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return out


# ---- a real browser (kit.report.page's page) --------------------------------------------------------
# Debian's chromium, driven by Playwright (its own browser download is never used). As root and
# offline, chromium needs --no-sandbox and no background networking (connections it would try are
# refused here, and logged as errors).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
REQUIRE_BROWSER = "KIT_REQUIRE_BROWSER"  # =1 (CI): a browser that cannot be found fails, never skips


def chromium_executable() -> str | None:
    """``$KIT_CHROMIUM``, else chromium (or chromium-browser) on the PATH, else None."""
    found = os.environ.get("KIT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")
    for candidate in found:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def browser_unavailable(reason: str) -> NoReturn:
    """Skip, saying what to install; fail instead where the browser tests must run (CI)."""
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{reason} ({REQUIRE_BROWSER}=1: these tests must run here, not skip)", pytrace=False)
    pytest.skip(reason)


def launch_chromium() -> Iterator[Any]:
    """A headless chromium for the tests of a module (yield from it in a module-scoped fixture)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("playwright is not installed: pip install -c constraints.txt -e '.[dev]'")
    executable = chromium_executable() or browser_unavailable(
        "no chromium found: apt-get install chromium (Debian), or set KIT_CHROMIUM=/path/to/chromium"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


@dataclass
class Opened:
    """A page of the browser, with what it said: console errors, uncaught exceptions, dialogs."""

    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def open_page(browser: Any, path: Path, *, width: int = 1400, height: int = 900) -> Opened:
    """``path`` from file://, in a new context of ``width`` x ``height`` CSS pixels (closed with it)."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    opened = Opened(page)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"uncaught: {e}"))

    def dialog(d: Any) -> None:
        opened.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.goto(path.as_uri(), wait_until="load")
    return opened


# Scroll every shown card and tile into view (the page puts its pictures in as they come near the
# screen), then wait for every visible picture to load or fail: [src, naturalWidth] of each.
LOAD_PICTURES = """async () => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  for (const el of document.querySelectorAll(".detection:not([hidden]), .image-head, ol.top li")) {
    el.scrollIntoView();
    await frame();
  }
  const shown = [...document.images].filter((img) => img.checkVisibility());
  const done = (img) => img.decode().catch(() => null);
  const late = new Promise((r) => setTimeout(r, 15000));
  await Promise.race([Promise.all(shown.map(done)), late]);
  window.scrollTo(0, 0);
  await frame();
  return shown.map((img) => [img.getAttribute("src"), img.naturalWidth]);
}"""


# The first screen, before any scrolling: each picture of it (the images with their boxes, the maps)
# with its place on the screen and whether it has loaded.
FIRST_SCREEN = """() => [...document.querySelectorAll(".boxes img, .detection figure img")].map((img) => {
  const r = img.getBoundingClientRect();
  const box = img.closest(".boxes");
  const shown = box ? box.getBoundingClientRect() : r;
  return {map: !box, top: shown.top, width: shown.width, height: shown.height, left: shown.left,
          loaded: img.complete && img.naturalWidth > 0};
}).filter((p) => p.top < innerHeight)"""


def colourful_share(png: Path, place: dict[str, float]) -> float:
    """The share of the screenshot ``png``'s pixels inside ``place`` (CSS pixels, device scale 1) that
    are coloured (HSV saturation above 80): a map's heatmap or a coloured box, never a grey placeholder."""
    import cv2

    shot = cv2.imread(str(png))
    x, y = max(0, int(place["left"])), max(0, int(place["top"]))
    w, h = int(place["width"]), int(min(place["height"], shot.shape[0] - y))
    region = shot[y : y + h, x : x + w]
    assert region.size, place
    saturation = cv2.cvtColor(region, cv2.COLOR_BGR2HSV)[..., 1]
    return float((saturation > 80).mean())
