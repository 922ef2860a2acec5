"""Many images on the real yolov7 checkout with the demo detector: `make cam NPROC=2` (torchrun, 2
CPU processes, gloo) and a run killed by SIGKILL then resumed write what one uninterrupted
process writes: the same images, detections and order, maps within float16 rounding, one eval.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.conftest import CHILDREN, REPO_ROOT
from tests.integration.helpers import Upstream, make_cam

pytestmark = pytest.mark.integration

YOLOV7 = Upstream(name="yolov7", unsafe_checkpoint=("", ""))
ARGS = ("--max-det", "3", "--img-size", "256", "--eval-curves", "2", "--eval-steps", "2")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scripts.demo import shapes

    return shapes.write_split(tmp_path_factory.mktemp("shapes"), count=4, split="eval").parent


def main_gradcam(checkout: Path, *args: str, killed_at: int | None = None) -> Any:
    """``python main_gradcam.py ARGS`` in the checkout; with ``killed_at``, SIGKILLed at that file
    the run puts in place (children/torchrun_killed_at.py)."""
    script = (
        ["main_gradcam.py"]
        if killed_at is None
        else [str(CHILDREN / "torchrun_killed_at.py"), str(killed_at)]
    )
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, *script, *args]
    return subprocess.run(command, cwd=checkout, capture_output=True, text=True, env=environ, timeout=900)


def flags(data: Path, out: Path, *more: str) -> list[str]:
    source, labels = str(data / "images"), str(data / "labels")
    return ["--weights", "demo", "--source", source, "--project", str(out.parent), "--name", out.name,
            "--eval", labels, *ARGS, *more]  # fmt: skip


@pytest.fixture(scope="module")
def reference(yolov7_checkout: Path, data: Path) -> Path:
    out = data / "runs" / "one"
    result = main_gradcam(yolov7_checkout, *flags(data, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def assert_same_run(out: Path, reference: Path) -> None:
    mine, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert mine["finished"] is True and not (out / ".kit-parts").exists()
    assert [i["file"] for i in mine["images"]] == [i["file"] for i in theirs["images"]]
    detections = 0
    for a, b in zip(mine["images"], theirs["images"]):
        assert len(a["detections"]) == len(b["detections"]) and a["summary"] == b["summary"]
        for da, db in zip(a["detections"], b["detections"]):
            detections += 1
            assert (da["class_id"], da["level"]) == (db["class_id"], db["level"])
            np.testing.assert_allclose(da["box_xyxy"], db["box_xyxy"], atol=0.02)
            assert da["score"] == pytest.approx(db["score"], abs=2e-5)
            assert {k: m["no_gradient"] for k, m in da["maps"].items()} == {
                k: m["no_gradient"] for k, m in db["maps"].items()
            }
        npz_a, npz_b = np.load(out / a["maps_file"]), np.load(reference / b["maps_file"])
        assert sorted(npz_a) == sorted(npz_b)
        for key in npz_a:
            np.testing.assert_allclose(npz_a[key].astype(np.float32), npz_b[key], atol=2e-3)
    assert detections > 0
    eval_a, eval_b = (json.loads((d / "eval.json").read_text()) for d in (out, reference))
    for key in ("ground_truth", "detections", "matched"):
        assert eval_a["summary"][key] == eval_b["summary"][key]
    assert [(r["file"], r["id"]) for r in eval_a["detections"]] == [
        (r["file"], r["id"]) for r in eval_b["detections"]
    ]
    curves = [r["id"] for r in eval_a["detections"] if "deletion_auc" in r["maps"]["fused"]]
    assert curves == [r["id"] for r in eval_b["detections"] if "deletion_auc" in r["maps"]["fused"]]
    assert eval_a["summary"]["ebpg"] == pytest.approx(eval_b["summary"]["ebpg"], abs=1e-3)


def test_make_cam_nproc_2_writes_what_one_process_writes(
    yolov7_checkout: Path, data: Path, reference: Path
) -> None:
    out = data / "runs" / "two"
    result = make_cam(
        YOLOV7, yolov7_checkout, weights=Path("demo"), out=out, source=data / "images",
        args=[*ARGS, "--eval", str(data / "labels")], variables=["NPROC=2"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node 2 main_gradcam.py" in result.stderr
    assert result.stderr.count("explained 4 of 4 images (2 processes) (all ranks done)") == 1
    assert result.stdout.count("eval: 4 images") == 1
    assert_same_run(out, reference)
    manifest = json.loads((out / "manifest.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=yolov7_checkout, capture_output=True, text=True)
    assert manifest["upstream_commit"] == head.stdout.strip()
    assert len(manifest["weights_sha256"]) == 64 and manifest["fuse"] is False


def test_killed_by_sigkill_then_resumed(yolov7_checkout: Path, data: Path, reference: Path) -> None:
    out = data / "runs" / "killed"
    killed = main_gradcam(yolov7_checkout, *flags(data, out), killed_at=9)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = main_gradcam(yolov7_checkout, *flags(data, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "images are done" in resumed.stderr
    assert_same_run(out, reference)
    other = main_gradcam(yolov7_checkout, *flags(data, out, "--resume", "--conf-thres", "0.5"))
    assert other.returncode == 2
    assert "conf_thres: the run has 0.25, this run 0.5" in other.stderr
