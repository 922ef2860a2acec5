"""make cam's default weights: the release of each pin, downloaded once into weights/<upstream>/,
up to the network call (kit.upstreams.download.download, replaced here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import kit.upstreams.download
from scripts.cam import launch as cam

# The released file of each YOLO pin: its tag, never "latest".
RELEASES = {
    "yolov7": "https://github.com/WongKinYiu/yolov7/releases/download/v0.1/yolov7.pt",
    "yolov3": "https://github.com/ultralytics/yolov3/releases/download/v9.6.0/yolov3.pt",
    "yolov5": "https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5s.pt",
    # the assets release the pinned ultralytics 8.4.190 downloads from (attempt_download_asset's v8.4.0)
    "ultralytics": "https://github.com/ultralytics/assets/releases/download/v8.4.0/yolo11n.pt",
}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_default_weights_are_the_pinned_release_downloaded_into_weights_dir(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Path]] = []
    monkeypatch.setenv(cam.WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    monkeypatch.delenv(f"KIT_{name.upper()}_WEIGHTS_URL", raising=False)
    monkeypatch.setattr(
        kit.upstreams.download, "download", lambda url, dest: calls.append((url, dest)) or dest
    )
    assert cam.default_weights(name) == tmp_path / "w" / name / RELEASES[name].rsplit("/", 1)[1]
    assert calls == [(RELEASES[name], tmp_path / "w" / name / RELEASES[name].rsplit("/", 1)[1])]

    mirror = f"https://mirror.example/{name}/best.pt"
    monkeypatch.setenv(f"KIT_{name.upper()}_WEIGHTS_URL", mirror)
    assert cam.default_weights(name) == tmp_path / "w" / name / "best.pt"
    assert calls[-1] == (mirror, tmp_path / "w" / name / "best.pt")


def test_every_yolo_upstream_of_make_cam_has_its_release() -> None:
    yolo = {name for name, d in cam.CAM_DEFAULTS.items() if d.config is None}
    assert yolo == set(RELEASES)
    assert all("latest" not in cam.CAM_DEFAULTS[name].weights_url for name in yolo)
