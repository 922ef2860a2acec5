"""The ultralytics entry point as a user runs it: main_gradcam.py in a checkout, `yolo predict`'s
key=value arguments, a run folder; refusals exit 2 and run nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.children import REPO_ROOT, Outcome, run_child
from tests.hostile import g, raw, s, t
from tests.ultralytics_models import (
    import_package,
    package_root,
    random_detector,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout as the setup engine leaves it: the package, and main_gradcam.py at its root."""
    root = package_root()
    assert root is not None
    folder = tmp_path_factory.mktemp("ultralytics")
    (folder / "ultralytics").symlink_to(root / "ultralytics", target_is_directory=True)
    shutil.copy(REPO_ROOT / "entrypoints" / "ultralytics_main_gradcam.py", folder / "main_gradcam.py")
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "blocks.png"), np.kron(blocks, np.ones((20, 20, 1), np.uint8)))
    save_checkpoint(random_detector("yolo11n.yaml"), folder / "best.pt")
    return folder


def main_gradcam(checkout: Path, *args: str) -> Outcome:
    env = {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(checkout / "settings")}
    command = [sys.executable, str(checkout / "main_gradcam.py"), *args]
    return run_child(command, env=env, cwd=checkout, timeout=600)


def test_a_run_explains_the_checkpoints_detections_into_its_run_folder(checkout: Path) -> None:
    ran = main_gradcam(
        checkout, "model=best.pt", "source=blocks.png", "imgsz=160", "max_det=2", "device=cpu", "name=run"
    )
    assert ran.exit == 0, ran.stderr
    manifest = json.loads((checkout / "runs" / "cam" / "run" / "manifest.json").read_text())
    assert (manifest["upstream"], manifest["img_size"], manifest["iou_thres"]) == ("ultralytics", 160, 0.7)
    (image,) = manifest["images"]
    assert image["error"] is None and len(image["detections"]) == 2


def test_a_pickle_that_calls_os_system_exits_2_and_runs_nothing(checkout: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "yolo11n.pt"
    evil.write_bytes(raw(g("os", "system") + t(s(f"touch {marker}")) + b"R"))
    ran = main_gradcam(checkout, f"model={evil}", "source=blocks.png", f"project={tmp_path}")
    assert ran.exit == 2 and "os.system" in ran.stderr
    assert not marker.exists()


def test_a_segmentation_checkpoint_exits_2_naming_its_task(checkout: Path, tmp_path: Path) -> None:
    import_package()
    from ultralytics.nn.tasks import SegmentationModel

    path = save_checkpoint(SegmentationModel("yolo11n-seg.yaml", nc=3, verbose=False), tmp_path / "seg.pt")
    ran = main_gradcam(checkout, f"model={path}", "source=blocks.png", f"project={tmp_path}")
    assert ran.exit == 2 and "is an ultralytics segmentation checkpoint" in ran.stderr


def test_an_unknown_argument_exits_2_naming_it(checkout: Path) -> None:
    ran = main_gradcam(checkout, "modle=best.pt")
    assert ran.exit == 2 and "unknown argument modle=best.pt" in ran.stderr
