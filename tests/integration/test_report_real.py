"""The run report of a real run: the demo detector (yolov7-tiny) through kit.load on the yolov7
checkout, with --eval and the audit, opened in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO_ROOT, run_child_in_checkout
from tests.runs import FIRST_SCREEN, LOAD_PICTURES, colourful_share, launch_chromium, open_page

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


def test_a_real_runs_report_opens_with_every_picture(
    yolov7_checkout: Path, tmp_path: Path, browser: Any
) -> None:
    out = tmp_path / "run"
    done = run_child_in_checkout(
        yolov7_checkout, "report_run", str(tmp_path / "shapes"), str(out), str(REPO_ROOT)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    index = Path(done.stdout.strip().splitlines()[-1])
    assert index == out / "index.html"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    expected = [
        (image["summary"][: -len("_summary.jpg")], str(d["id"]), d["class_name"], d["score"])
        for image in manifest["images"]
        for d in image["detections"]
    ]
    assert expected  # the demo detector finds the shapes

    opened = open_page(browser, index, width=1400, height=1000)
    page = opened.page
    page.evaluate("() => Promise.all([...document.images].map((i) => i.decode().catch(() => null)))")
    first = page.evaluate(FIRST_SCREEN)  # before any scrolling: the first image's boxes and maps
    page.screenshot(path=str(tmp_path / "first-screen-1400px.png"))
    assert [p for p in first if not p["map"]] and len([p for p in first if p["map"]]) >= 2, first
    assert all(p["loaded"] and p["width"] >= 200 for p in first), first
    assert colourful_share(tmp_path / "first-screen-1400px.png", first[0]) > 0.05  # shapes, not grey
    cards = page.evaluate(
        """() => [...document.querySelectorAll(".detection")].map((c) =>
        [c.dataset.image, c.dataset.id, c.dataset.class, parseFloat(c.dataset.score)])"""
    )
    assert [tuple(c) for c in cards] == expected
    loaded = page.evaluate(LOAD_PICTURES)
    assert loaded and all(width > 0 for _, width in loaded), [src for src, width in loaded if not width]
    assert page.is_visible("#eval") and page.is_visible("#audit")
    assert page.locator("#eval svg[role=img]").count() == 2  # deletion and insertion curves
    page.add_style_tag(content=".detection, .image-head { content-visibility: visible }")
    page.screenshot(path=str(tmp_path / "real-run-1400px.png"), full_page=True)
    assert opened.errors == [] and opened.dialogs == []
    page.context.close()
