"""kit.cli.output: the summary line's counts and words, the missed objects by reason, and the
upstream's output held back while the model loads (and shown when loading fails)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kit.cli import output
from kit.evaluation.missed import REASONS
from kit.run.progress import _Line

MAP = {"overlay": "a/det0_74.jpg"}
NO_MAP = {"overlay": None}


def manifest(*images: dict[str, Any]) -> dict[str, Any]:
    return {"images": list(images)}


def test_the_summary_counts_images_detections_and_maps_written() -> None:
    one = manifest({"detections": [{"maps": {"74": MAP, "75": NO_MAP}}]})
    line = output.summary_line(one, failed=0, out_dir="runs/x", seconds=1.25)
    assert (
        line == "explained 1 image: 1 detection, 1 map, 0 failed; run folder runs/x (open index.html), 1.2 s"
    )
    many = manifest(
        {"detections": [{"maps": {"74": MAP, "fused": MAP}}, {"maps": {"74": MAP}}]},
        {"detections": [], "error": "cannot read"},
        {"detections": [], "missed": [{"candidate": {"why": "suppressed", "maps": {"74": MAP}}}]},
    )
    line = output.summary_line(many, failed=1, out_dir="o", seconds=0)
    assert line.startswith("explained 3 images: 2 detections, 4 maps, 1 failed; run folder o")
    assert output.summary_line({}, failed=0, out_dir="o", seconds=0).startswith(
        "explained 0 images: 0 detections"
    )


def test_missed_objects_are_counted_by_reason() -> None:
    whys = ["suppressed", "below_threshold", "suppressed", "no_candidate"]
    run = manifest(
        {"missed": [{"candidate": {"why": w}} for w in whys[:3]]},
        {"missed": [{"candidate": {"why": whys[3]}}]},
    )
    line = output.missed_line(run, reasons=REASONS)
    order = [r.replace("_", " ") for r in REASONS]
    expected = sorted(
        ["1 below threshold", "2 suppressed", "1 no candidate"], key=lambda c: order.index(c[2:])
    )
    assert line == f"missed 4 objects ({', '.join(expected)}); why, per object: the manifest's 'missed'"
    assert output.missed_line(manifest({"detections": []}), reasons=REASONS).startswith("missed 0 objects")


def test_loading_is_quiet_and_its_output_shown_when_it_fails(capsys: pytest.CaptureFixture[str]) -> None:
    table = logging.getLogger("models.yolo")
    with output.quiet_loading(verbose=False):
        print("Fusing layers... ")
        table.info("  0  -1  1  928  models.common.Conv")
        table.warning("a warning still shows")
    assert capsys.readouterr().out == ""
    assert logging.root.manager.disable == logging.NOTSET  # restored
    with pytest.raises(RuntimeError), output.quiet_loading(verbose=False):
        print("what the upstream said before it failed")
        raise RuntimeError("load failed")
    assert "what the upstream said before it failed" in capsys.readouterr().err
    with output.quiet_loading(verbose=True):
        print("Model Summary: 208 layers")
    assert capsys.readouterr().out == "Model Summary: 208 layers\n"


def test_the_held_output_keeps_its_tail_only() -> None:
    tail = output._Tail()
    tail.write("x" * (3 * output.KEPT_CHARS))
    tail.write("end")
    assert len(tail.getvalue()) <= 2 * output.KEPT_CHARS and tail.getvalue().endswith("x" + "end")


def test_the_progress_line() -> None:
    line = _Line("explained", total=8)
    assert line.text(0) == "explained 0/8 images [" + "-" * 24 + "]"
    assert line.text(2) == "explained 2/8 images [" + "#" * 6 + "-" * 18 + "]"
    assert line.text(9) == "explained 9/8 images [" + "#" * 24 + "]"
