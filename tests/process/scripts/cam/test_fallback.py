"""make cam without network and without WEIGHTS: the demo detector instead of a stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.core.errors import DownloadError
from scripts.cam import launch as cam
from tests.conftest import installed_checkout


@pytest.mark.parametrize("name", ["yolov7", "yolov3", "yolov5"])
def test_make_cam_falls_back_to_the_demo_detector_offline(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def offline(name: str) -> Path:
        raise DownloadError("could not reach https://example.invalid/yolov7.pt; pass it with --weights PATH")

    monkeypatch.setattr(cam, "checkout_path", installed_checkout(tmp_path / "checkouts"))
    monkeypatch.setattr(cam, "default_weights", offline)
    monkeypatch.setattr(cam, "demo_sample", lambda: tmp_path / "sample")
    monkeypatch.setattr(cam, "run_child", lambda command, cwd, env=None: calls.append(command) or 0)
    assert cam.run_cam(name, weights=None, source=None, out=str(tmp_path / "run"), extra=[]) == 0
    (command,) = calls
    assert command[command.index("--weights") + 1] == "demo"
    assert command[command.index("--source") + 1] == str(tmp_path / "sample")
    err = capsys.readouterr().err
    assert "could not reach" in err and "demo detector" in err and "WEIGHTS=" in err
    assert f"({cam.SPECS[name].demo}, kept in kit/upstreams/demo" in err

    # Your own source is kept; an upstream without a demo still stops with the download error.
    calls.clear()
    cam.run_cam(name, weights=None, source=str(tmp_path / "mine"), out=str(tmp_path / "run"), extra=[])
    assert calls[0][calls[0].index("--source") + 1] == str(tmp_path / "mine")
    monkeypatch.setattr(cam, "DEMO_FALLBACK", tuple(n for n in cam.DEMO_FALLBACK if n != name))
    with pytest.raises(DownloadError):
        cam.run_cam(name, weights=None, source=None, out=str(tmp_path / "run"), extra=[])


def test_make_cam_for_detectron2_falls_back_to_its_faster_rcnn_demo_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def offline(name: str) -> Path:
        raise DownloadError(
            "could not reach https://example.invalid/model_final.pkl; pass it with --weights PATH"
        )

    monkeypatch.setattr(cam, "checkout_path", installed_checkout(tmp_path / "checkouts"))
    monkeypatch.setattr(cam, "default_weights", offline)
    monkeypatch.setattr(cam, "demo_sample", lambda: tmp_path / "sample")
    monkeypatch.setattr(cam, "run_child", lambda command, cwd, env=None: calls.append(command) or 0)
    assert cam.run_cam("detectron2", weights=None, source=None, out=str(tmp_path / "run"), extra=[]) == 0
    (command,) = calls
    # the entry point's loader reads MODEL.WEIGHTS demo as the kept Faster R-CNN and its own config
    assert command[command.index("MODEL.WEIGHTS") + 1] == "demo"
    assert command[command.index("--input") + 1] == str(tmp_path / "sample")
    err = capsys.readouterr().err
    assert "could not reach" in err and "faster-rcnn-fpn-shapes" in err and "WEIGHTS=" in err
