"""The ultralytics package (8.4.190 sdist) end to end: the checkout's main_gradcam.py run as a user
runs it (``model=... source=... imgsz=... conf=...`` plus the kit's flags) on random-weight YOLO11n
and RT-DETR checkpoints written in the package's trainer format (tests/ultralytics_models.py).

One checkpoint of each and one reference run serve many checks (module fixtures): targets, D-RISE,
--eval with labels made from the reference's own boxes, --explain-missed, --audit and the report,
--resume of a killed run, torchrun with two processes, kit.load outside the checkout, and what a
careless user types.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scripts.upstream.checkout import UPSTREAM_HEAD
from tests.integration.conftest import CHILDREN, REPO_ROOT, run_child_in_checkout
from tests.integration.helpers import Upstream, check_run
from tests.ultralytics_models import NAMES

pytestmark = pytest.mark.integration

SIZE = ("imgsz=160", "max_det=3")  # yolo predict's keys; 256 px pictures
YOLO11 = Upstream(
    name="ultralytics",
    unsafe_checkpoint=("evil.pt", "torch"),
    manifest={"img_size": 160, "max_det": 3, "conf_thres": 0.25, "iou_thres": 0.7},
    detections_per_image=3,  # random weights score more than 3 boxes above 0.25 on each picture
    class_name=NAMES.__getitem__,
)
RTDETR = Upstream(
    name="ultralytics",
    unsafe_checkpoint=("evil.pt", "torch"),
    manifest={"img_size": 160, "max_det": 3, "conf_thres": 0.5},
    class_name=NAMES.__getitem__,
)
YOLO11_LAYERS = ["16", "19", "22"]  # yolo11n.yaml's Detect inputs (P3, P4, P5)
RTDETR_LAYERS = ["15", "18", "21"]  # the small RT-DETR's decoder inputs


@pytest.fixture(scope="module")
def env(ultralytics_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Offline, the package's settings in a temporary folder, the kit importable from this tree."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(tmp_path_factory.mktemp("yolo-settings")),
        "KIT_UPSTREAMS_DIR": str(ultralytics_checkout.parent),
    }


def main_gradcam(
    checkout: Path, env: dict[str, str], *args: str, killed_at: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``python main_gradcam.py ARGS`` in the checkout; with ``killed_at``, SIGKILLed at that file
    the run puts in place (children/torchrun_killed_at.py)."""
    script = (
        ["main_gradcam.py"]
        if killed_at is None
        else [str(CHILDREN / "torchrun_killed_at.py"), str(killed_at)]
    )
    return subprocess.run(
        [sys.executable, *script, *args], cwd=checkout, env=env, capture_output=True, text=True, check=False,
        timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 256 px pictures of the demo's shapes (``images/``)."""
    from scripts.demo import shapes

    return shapes.write_split(tmp_path_factory.mktemp("shapes"), count=3, split="eval").parent


def write_checkpoint(checkout: Path, env: dict[str, str], kind: str, out: Path, *image: str) -> Path:
    with pytest.MonkeyPatch.context() as patch:  # the child: offline, and this checkout's package
        for key in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "PYTHONPATH", "KIT_UPSTREAMS_DIR"):
            patch.setenv(key, env[key])
        result = run_child_in_checkout(checkout, "ultralytics_save_checkpoint", kind, str(out), *image)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"kind": kind, "path": str(out)}
    return out


@pytest.fixture(scope="module")
def yolo11(ultralytics_checkout: Path, env: dict[str, str], data: Path) -> Path:
    image = str(data / "images" / "eval_0000.png")  # its logits scaled so that a few cells score > 0.25
    return write_checkpoint(ultralytics_checkout, env, "yolo11n", data / "yolo11n-random.pt", image)


@pytest.fixture(scope="module")
def rtdetr(ultralytics_checkout: Path, env: dict[str, str], data: Path) -> Path:
    return write_checkpoint(ultralytics_checkout, env, "rtdetr", data / "rtdetr-random.pt")


def run_args(weights: Path, source: Path, out: Path, *more: str, conf: str = "0.25") -> list[str]:
    return [f"model={weights}", f"source={source}", *SIZE, f"conf={conf}", f"project={out.parent}",
            f"name={out.name}", *more]  # fmt: skip


@pytest.fixture(scope="module")
def reference(ultralytics_checkout: Path, env: dict[str, str], yolo11: Path, data: Path) -> Path:
    """One uninterrupted run of yolo11n on the three pictures: the run the others are held to."""
    out = data / "runs" / "reference"
    result = main_gradcam(ultralytics_checkout, env, *run_args(yolo11, data / "images", out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def manifest_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_setup_applies_the_series_on_the_sdist(ultralytics_checkout: Path) -> None:
    """The unpacked sdist's commit, then one commit per patch (the pin is a version, not a commit)."""
    log = subprocess.run(
        ["git", "rev-list", f"{UPSTREAM_HEAD}..HEAD"],
        cwd=ultralytics_checkout, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(log.stdout.split()) == YOLO11.patches
    assert (ultralytics_checkout / "main_gradcam.py").is_file()


def test_yolo11_run_writes_every_detections_maps_at_its_level(
    ultralytics_checkout: Path, reference: Path, yolo11: Path, data: Path
) -> None:
    manifest = check_run(YOLO11, reference, layers=YOLO11_LAYERS, layer_per_level=True)
    assert manifest["finished"] is True and manifest["method"] == "gradcam"
    assert [Path(i["file"]).name for i in manifest["images"]] == [f"eval_000{k}.png" for k in range(3)]
    assert manifest["weights"] == str(yolo11) and len(manifest["weights_sha256"]) == 64
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ultralytics_checkout, capture_output=True, text=True
    )
    assert manifest["upstream_commit"] == head.stdout.strip()
    assert (reference / "index.html").is_file()


def write_labels(reference: Path, labels: Path) -> int:
    """YOLO labels of the reference's own boxes (each must match), and one small triangle in a
    corner of each picture that no detection matches (a miss). Returns how many boxes match."""
    labels.mkdir()
    matched = 0
    for image in manifest_of(reference)["images"]:
        w, h = image["width"], image["height"]
        lines = []
        for det in image["detections"]:
            x1, y1, x2, y2 = det["box_xyxy"]
            lines.append(
                f"{det['class_id']} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
            )
            matched += 1
        lines.append(f"2 {6 / w} {6 / h} {8 / w} {8 / h}")
        (labels / f"{Path(image['file']).stem}.txt").write_text("\n".join(lines) + "\n")
    return matched


def test_box_target_eval_explain_missed_audit_and_report(
    ultralytics_checkout: Path, env: dict[str, str], reference: Path, yolo11: Path, data: Path
) -> None:
    labels = data / "labels-from-reference"
    matched = write_labels(reference, labels)
    out = data / "runs" / "box-eval"
    more = ["--target", "box", "--eval", str(labels), "--explain-missed", "--audit"]
    more += ["--eval-curves", "2", "--eval-steps", "2"]
    result = main_gradcam(ultralytics_checkout, env, *run_args(yolo11, data / "images", out, *more))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = check_run(YOLO11, out, layers=YOLO11_LAYERS, target="box", layer_per_level=True)
    theirs = manifest_of(reference)["images"]
    for mine, ref in zip(manifest["images"], theirs):  # the target changes the maps, not what is detected
        assert [d["box_xyxy"] for d in mine["detections"]] == [d["box_xyxy"] for d in ref["detections"]]
    summary = json.loads((out / "eval.json").read_text())["summary"]
    assert (summary["ground_truth"], summary["detections"], summary["matched"]) == (
        matched + 3,
        matched,
        matched,
    )
    assert 0.0 <= summary["pg"] <= 1.0 and 0.0 <= summary["ebpg"] <= 1.0
    assert summary["deletion_auc"] is not None and summary["insertion_auc"] is not None
    from kit.evaluation.missed import REASONS

    assert manifest["explain_missed"] is True
    for image in manifest["images"]:  # the corner triangle: the last label line
        (miss,) = image["missed"]
        assert (miss["class_id"], miss["class_name"]) == (2, "triangle")
        assert miss["gt_box"] == pytest.approx([2, 2, 10, 10], abs=0.5)
        assert miss["candidate"]["why"] in REASONS
    audit = json.loads((out / "audit.json").read_text())
    assert audit["all"]["n"] == matched and audit["all"]["measured"] == matched
    assert set(audit["eval"]["groups"]) == {"matched"}
    assert all((out / row["overlay"]).is_file() for row in audit["top"])
    page = (out / "index.html").read_text()
    assert "Audit" in page and page.count("<img") >= matched
    assert (
        "matched" in result.stdout and str(out) in result.stderr + result.stdout
    )  # the summary's run folder


def test_rtdetr_run_explains_each_query_at_every_encoder_level(
    ultralytics_checkout: Path, env: dict[str, str], rtdetr: Path, data: Path
) -> None:
    out = data / "runs" / "rtdetr"
    more = ["--method", "gradcampp", "--target", "score"]
    result = main_gradcam(
        ultralytics_checkout, env, *run_args(rtdetr, data / "images", out, *more, conf="0.5")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = check_run(RTDETR, out, layers=RTDETR_LAYERS, target="score")
    assert manifest["method"] == "gradcampp" and "iou_thres" not in manifest  # no NMS: a set of queries
    dets = [d for image in manifest["images"] for d in image["detections"]]
    # a query's level: the encoder level its initial reference was selected from (ODAM's own level)
    assert all(d["score"] >= 0.5 and d["level"] in (0, 1, 2) for d in dets)
    assert len(dets) == len({(i["file"], d["id"]) for i in manifest["images"] for d in i["detections"]})


def test_drise_with_few_masks_on_rtdetr(
    ultralytics_checkout: Path, env: dict[str, str], rtdetr: Path, data: Path
) -> None:
    out = data / "runs" / "drise"
    source = data / "images" / "eval_0001.png"
    more = ["--method", "drise", "--drise-masks", "16", "--drise-seed", "3"]
    result = main_gradcam(ultralytics_checkout, env, *run_args(rtdetr, source, out, *more, conf="0.5"))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = check_run(RTDETR, out, layers=["image"], target="detection-similarity")
    assert manifest["drise"] == {"masks": 16, "cell": 16, "p": 0.5, "seed": 3}


def assert_same_run(out: Path, reference: Path) -> None:
    mine, theirs = manifest_of(out), manifest_of(reference)
    assert mine["finished"] is True and not (out / ".kit-parts").exists()
    assert [i["file"] for i in mine["images"]] == [i["file"] for i in theirs["images"]]
    count = 0
    for a, b in zip(mine["images"], theirs["images"]):
        assert len(a["detections"]) == len(b["detections"]) and a["summary"] == b["summary"]
        for da, db in zip(a["detections"], b["detections"]):
            count += 1
            assert (da["class_id"], da["level"]) == (db["class_id"], db["level"])
            np.testing.assert_allclose(da["box_xyxy"], db["box_xyxy"], atol=0.02)
            assert da["score"] == pytest.approx(db["score"], abs=2e-5)
        npz_a, npz_b = np.load(out / a["maps_file"]), np.load(reference / b["maps_file"])
        assert sorted(npz_a) == sorted(npz_b)
        for key in npz_a:
            np.testing.assert_allclose(npz_a[key].astype(np.float32), npz_b[key], atol=2e-3)
    assert count == 9


def test_killed_run_resumes_to_what_one_uninterrupted_run_writes(
    ultralytics_checkout: Path, env: dict[str, str], reference: Path, yolo11: Path, data: Path
) -> None:
    out = data / "runs" / "killed"
    args = run_args(yolo11, data / "images", out)
    killed = main_gradcam(ultralytics_checkout, env, *args, killed_at=6)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert manifest_of(out)["finished"] is False
    resumed = main_gradcam(ultralytics_checkout, env, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "images are done" in resumed.stderr
    assert_same_run(out, reference)
    other = main_gradcam(ultralytics_checkout, env, *args, "--resume", "conf=0.5")
    assert other.returncode == 2
    assert "conf_thres: the run has 0.25, this run 0.5" in other.stderr


def test_torchrun_two_processes_write_what_one_process_writes(
    ultralytics_checkout: Path, env: dict[str, str], reference: Path, yolo11: Path, data: Path
) -> None:
    out = data / "runs" / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, "main_gradcam.py", *run_args(yolo11, data / "images", out)],
        cwd=ultralytics_checkout, env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("explained 3 of 3 images (2 processes) (all ranks done)") == 1
    assert_same_run(out, reference)


def test_kit_load_outside_the_checkout_detects_what_the_run_did(
    env: dict[str, str], reference: Path, yolo11: Path, data: Path, tmp_path: Path
) -> None:
    image = data / "images" / "eval_0000.png"
    result = subprocess.run(
        [sys.executable, str(CHILDREN / "ultralytics_api.py"), str(yolo11), str(image)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    dets = manifest_of(reference)["images"][0]["detections"]
    assert len(found) == len(dets) == 3
    for (class_id, box, layers), det in zip(found, dets):
        assert class_id == det["class_id"] and box == pytest.approx(det["box_xyxy"], abs=0.01)
        assert layers == sorted(k for k, m in det["maps"].items() if not m["no_gradient"])
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def huge_png(path: Path, side: int) -> None:
    """A valid grayscale PNG of side x side pixels, about 140 KB for 12000 (all zero rows)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_careless_folder_and_imgsz_not_a_multiple_of_32(
    ultralytics_checkout: Path, env: dict[str, str], yolo11: Path, data: Path, tmp_path: Path
) -> None:
    """A folder with notes, a text file named .jpg and a 144-megapixel PNG beside a picture: each bad
    file is that file's error (exit 1), the picture is explained; imgsz=150 is rounded up to 160,
    as the package's check_imgsz does."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(data / "images" / "eval_0000.png", folder / "good.png")
    (folder / "notes.txt").write_text("to do\n")
    (folder / "fake.jpg").write_text("not an image\n")
    huge_png(folder / "huge.png", 12000)
    out = tmp_path / "run"
    args = [*run_args(yolo11, folder, out), "imgsz=150"]
    result = main_gradcam(ultralytics_checkout, env, *args)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "3 of 4 images failed" in result.stderr and "Traceback" not in result.stderr
    manifest = manifest_of(out)
    assert manifest["img_size"] == 160
    errors = {Path(i["file"]).name: i["error"] for i in manifest["images"]}
    assert errors["good.png"] is None
    assert "12000 x 12000 pixels" in errors["huge.png"] and "--max-image-pixels" in errors["huge.png"]
    assert "cannot decode" in errors["fake.jpg"] and "cannot decode" in errors["notes.txt"]
    (good,) = [i for i in manifest["images"] if i["error"] is None]
    assert len(good["detections"]) == 3


def yolov5_like_checkpoint(path: Path) -> Path:
    """What yolov5's train.py pickles (models.yolo.DetectionModel), from a module of that name."""
    code = (
        "import sys, types, torch\n"
        "yolo = types.ModuleType('models.yolo')\n"
        "class DetectionModel(torch.nn.Module):\n"
        "    pass\n"
        "DetectionModel.__module__ = 'models.yolo'\n"
        "yolo.DetectionModel = DetectionModel\n"
        "sys.modules.update({'models': types.ModuleType('models'), 'models.yolo': yolo})\n"
        "torch.save({'epoch': -1, 'model': DetectionModel(), 'ema': None}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


REFUSALS = {  # case: what stderr says ({w}: the model= path)
    "missing": "weights file not found: '{w}'; pass an existing checkpoint with model=PATH",
    "folder": "is a folder; pass the checkpoint file itself with model=PATH",
    "yolov5": "is a checkpoint of a YOLO repo's own code (models.yolo.DetectionModel",
    "cuda": "device=cuda: Invalid CUDA",
    "half": "half=True needs a CUDA device (device=0); this run is on cpu",
    "imgsz": "imgsz (img_size) 100000 is larger than 8192 pixels",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_careless_model_and_device_are_refused_with_exit_2(
    ultralytics_checkout: Path, env: dict[str, str], yolo11: Path, data: Path, tmp_path: Path, case: str
) -> None:
    if case in ("cuda", "half") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    weights = {"missing": tmp_path / "yolo11n.pt", "folder": tmp_path}.get(case, yolo11)
    if case == "yolov5":
        weights = yolov5_like_checkpoint(tmp_path / "yolov5s.pt")
    more = {"cuda": ["device=cuda"], "half": ["half=True"], "imgsz": ["imgsz=100000"]}.get(case, [])
    out = tmp_path / "run"
    result = main_gradcam(ultralytics_checkout, env, *run_args(weights, data / "images", out, *more))
    assert result.returncode == 2, result.stderr[-3000:]
    assert REFUSALS[case].format(w=weights) in result.stderr and "Traceback" not in result.stderr
    if case == "yolov5":
        assert f"make cam UPSTREAM=yolov5 WEIGHTS={weights}" in result.stderr
    assert not out.exists() and not (tmp_path / "yolo11n.pt").exists()  # nothing written, nothing downloaded


def test_a_pickle_that_runs_a_command_is_refused_and_nothing_runs(
    ultralytics_checkout: Path, env: dict[str, str], data: Path, tmp_path: Path
) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "yolo11n.pt"
    written = run_child_in_checkout(
        ultralytics_checkout, "save_unsafe_checkpoint", "torch", str(evil), str(marker)
    )
    assert written.returncode == 0, written.stderr[-3000:]
    assert evil.is_file() and not marker.exists()
    result = main_gradcam(ultralytics_checkout, env, *run_args(evil, data / "images", tmp_path / "run"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "system" in result.stderr and "--trust-checkpoint" in result.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()
