"""Each real entry point, in its real checkout: bad arguments and checkpoints of another kind are
refused with exit 2 and a message naming them; --weights demo; Ctrl-C is one line and exit 130.

The matrix of bad values is in tests/unit/kit/cli/test_main.py (no checkout needed); here each entry point
runs as users run it, as a process, with the upstream's own model classes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.rundir import reader
from kit.upstreams.registry import get_spec
from tests.integration.conftest import REPO_ROOT, run_child_in_checkout
from tests.integration.helpers import make_cam
from tests.integration.test_yolov7 import YOLOV7

pytestmark = pytest.mark.integration


def run_entry_point(checkout: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python main_gradcam.py ARGS` as a user runs it (from the checkout unless ``cwd``)."""
    return subprocess.run(
        [sys.executable, str(checkout / "main_gradcam.py"), *args],
        cwd=checkout if cwd is None else cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The message of a refused run (exit 2, no traceback); '' when the run was not refused so."""
    err = result.stderr
    if result.returncode != 2 or "Traceback" in err or "error: " not in err:
        return ""
    return err[err.index("error: ") :]


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2, a message naming the value (``expected``), no traceback."""
    message = refusal(result)
    assert message, (result.returncode, result.stderr[-3000:])
    for text in expected:
        assert text in message, (text, message)


# Files of another kind than a YOLO checkpoint (children/entry_other_kinds.py yolo) and what each
# refusal names.
TRAIN_FIX = "pass a checkpoint written by train.py (a dict with 'model')"
YOLO_KINDS = {
    "state_dict.pt": ("holds a raw state_dict (", "'model.0.conv.weight'", TRAIN_FIX),
    "plain_state_dict.pt": ("holds a raw state_dict (", TRAIN_FIX),
    "linear.pt": ("holds a lone torch.nn.modules.linear.Linear module, not a checkpoint", TRAIN_FIX),
    "no_model.pt": ("holds a dict with keys 'epoch', 'optimizer' but no 'model' or 'ema'", TRAIN_FIX),
    "linear_model.pt": (
        "its 'model' holds a lone torch.nn.modules.linear.Linear module",
        "not a YOLO model ({model_class})",
    ),
}
YOLO_CASES = {  # upstream: (cfg, image, the Model class a message names)
    "yolov7": ("cfg/deploy/yolov7-tiny.yaml", "inference/images/bus.jpg", "models.yolo.Model"),
    "yolov3": ("models/yolov3-tiny.yaml", "data/images/bus.jpg", "models.yolo.Model"),
    # v7.0: Model is an alias of DetectionModel
    "yolov5": ("models/yolov5n.yaml", "data/images/bus.jpg", "models.yolo.DetectionModel"),
}


def size_flag(name: str) -> str:
    """The repo's image-size flag, as its spec names it (``--img-size``, ``--imgsz``)."""
    flags = get_spec(name).entry
    assert flags is not None
    return flags.size_flag


def other_kinds(checkout: Path, kind: str, folder: Path, *cfg: str) -> dict[str, str]:
    """Files of another kind written into ``folder`` and each through the loader the entry point
    builds (kit.upstreams.loaders), in one process: the message it raises, or "loaded". One file per
    upstream also goes through the whole CLI in the tests."""
    result = run_child_in_checkout(checkout, "entry_other_kinds", kind, str(folder), *cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("name", list(YOLO_CASES))
def test_yolo_checkpoint_of_another_kind_is_named(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkout: Path = request.getfixturevalue(f"{name}_checkout")
    cfg, image, model_class = YOLO_CASES[name]
    messages = other_kinds(checkout, "yolo", tmp_path, cfg)
    assert sorted(messages) == sorted(YOLO_KINDS)
    wrong = {
        file: messages[file]
        for file, expected in YOLO_KINDS.items()
        if not all(
            text.format(model_class=model_class) in messages[file]
            for text in (str(tmp_path / file), *expected)
        )
    }
    assert not wrong, wrong
    weights = tmp_path / "state_dict.pt"  # the example, through the whole CLI
    result = run_entry_point(
        checkout, "--weights", str(weights), "--source", image, "--project", str(tmp_path)
    )
    assert_refused(result, str(weights), *YOLO_KINDS["state_dict.pt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(YOLO_KINDS)  # no run folder made


@pytest.mark.parametrize("name", list(YOLO_CASES))
def test_yolo_bad_arguments_stop_before_the_model_loads(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The installed entry point, as a process in its checkout, refuses its own image-size flag.
    Every other bad value (--target-layers -1, --max-det -1, --project naming a file, ...) runs
    through the same entry-point file, in-process, in tests/unit/kit/cli/test_main.py's
    test_entry_points_refuse_bad_arguments_before_loading (per upstream, asserting the upstream's
    packages are never imported and no run folder is made)."""
    checkout: Path = request.getfixturevalue(f"{name}_checkout")
    _, image, _ = YOLO_CASES[name]
    flag = size_flag(name)
    missing = str(tmp_path / "not-loaded.pt")  # the checks come first: a missing file is not reached
    base = ["--weights", missing, "--source", image, "--project", str(tmp_path / "runs")]
    assert_refused(run_entry_point(checkout, *base, flag, "0"), f"{flag} must be a positive number")
    assert not (tmp_path / "runs").exists()


# Files of another kind than a detectron2 checkpoint (children/entry_other_kinds.py detectron2).
DETECTRON2_FIX = "pass a detectron2 checkpoint: a model-zoo .pkl or a .pth written by its trainer"
DETECTRON2_KINDS = {
    "tensor.pth": "holds a single tensor of shape (2,), not a checkpoint dict",
    "list.pth": "holds a builtins.list, not a checkpoint dict",
    "list_model.pth": "its 'model' holds a builtins.list, not a dict of weights",
    "no_weights.pth": "holds a dict with keys 'iteration' and no weights (tensors or arrays)",
}


def test_detectron2_checkpoint_of_another_kind_and_bad_arguments(
    detectron2_checkout: Path, tmp_path: Path
) -> None:
    messages = other_kinds(detectron2_checkout, "detectron2", tmp_path)
    assert sorted(messages) == sorted(DETECTRON2_KINDS)
    image = "docs/tutorials/lazyconfig.jpg"
    fast = ["--opts", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "256"]
    for file, expected in DETECTRON2_KINDS.items():
        for text in (str(tmp_path / file), expected, DETECTRON2_FIX):
            assert text in messages[file], (file, messages[file])
    weights = str(tmp_path / "tensor.pth")  # one through the whole CLI
    result = run_entry_point(
        detectron2_checkout,
        "--input",
        image,
        "--output",
        str(tmp_path / "run"),
        *fast,
        "MODEL.WEIGHTS",
        weights,
    )
    assert_refused(result, weights, DETECTRON2_KINDS["tensor.pth"], DETECTRON2_FIX)
    base = ["--input", image, "--output", str(tmp_path / "run")]
    result = run_entry_point(detectron2_checkout, *base, "--confidence-threshold", "1.5")
    assert_refused(result, "--confidence-threshold must be between 0 and 1, got 1.5")
    result = run_entry_point(detectron2_checkout, *base, "--opts", "MODEL.NO_SUCH_KEY", "1")
    assert_refused(result, "--opts MODEL.NO_SUCH_KEY 1", "MODEL.NO_SUCH_KEY")  # yacs' KeyError, as exit 2
    assert not (tmp_path / "run").exists()


def sample_image(tmp_path: Path) -> Path:
    """One image of the demo's synthetic evaluation split (what the demo detector finds shapes in)."""
    from scripts.demo import shapes

    folder = tmp_path / "sample"
    shapes.write_split(folder, count=1, split="eval")
    (image,) = sorted((folder / "images").glob("*.png"))
    return image


def test_weights_demo_with_a_demo_folder_in_the_way(yolov7_checkout: Path, tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()  # as many projects have (detectron2 itself does)
    image = sample_image(tmp_path)
    result = run_entry_point(
        yolov7_checkout,
        *(
            "--weights",
            "demo",
            "--source",
            str(image),
            "--project",
            "runs",
            "--max-det",
            "2",
            "--device",
            "cpu",
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "exp" / "manifest.json").read_text())
    assert manifest["weights"].endswith("yolov7-tiny-shapes.pt") and manifest["img_size"] == 256
    assert manifest["images"][0]["detections"]
    # make cam WEIGHTS=demo: the demo detector, not a file named demo in the repository root
    out = tmp_path / "make"
    result = make_cam(
        YOLOV7, yolov7_checkout, weights=Path("demo"), out=out, source=image, args=["--max-det", "2"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"].endswith("yolov7-tiny-shapes.pt")
    assert not (REPO_ROOT / "demo").exists()


def test_ctrl_c_stops_with_one_line_a_valid_manifest_and_130(yolov7_checkout: Path, tmp_path: Path) -> None:
    image = sample_image(tmp_path)
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(200):
        shutil.copy(image, folder / f"{k:03d}.png")
    out = tmp_path / "runs" / "exp"
    child = subprocess.Popen(
        [sys.executable, "main_gradcam.py", "--weights", "demo", "--source", str(folder)]
        + ["--project", str(out.parent), "--max-det", "2", "--device", "cpu"],
        cwd=yolov7_checkout,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 300
    while not (manifest.exists() and reader.read_manifest(out)["images"]):  # the parts hold them
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no image was finished: {child.communicate()[1][-3000:]}")
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    done = len(json.loads(manifest.read_text())["images"])
    assert 0 < done < 200
    assert last == f"interrupted: partial results in {out} (manifest is valid: {done} images)", last
