"""Hostile checkpoints against the real upstreams: refused with exit 2, nothing they carry runs.

For each upstream a script inside the checkout writes a corpus in that upstream's own formats
(REDUCE on its model classes with a cfg that yolov7/yolov3's ``parse_model`` would evaluate, a
genuine model beside a payload under a nested key, plain pickles at protocols 0 to 5, a global
naming a module whose import has side effects), then every admitted class of the entry point's
list is called through a REDUCE and must be refused. The CLI runs on a sample of the corpus and
must exit 2 with no marker written; a genuine train.py checkpoint still explains.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.conftest import run_in_checkout
from tests.integration.helpers import Upstream, make_cam
from tests.integration.test_detectron2 import DETECTRON2
from tests.integration.test_yolov3 import YOLOV3
from tests.integration.test_yolov5 import YOLOV5
from tests.integration.test_yolov7 import YOLOV7

pytestmark = pytest.mark.integration

# Shared by the corpus writers: a call of func(*args) when unpickled, and a marker-writing cfg.
PRELUDE = """
import json, os, pickle, sys
from copy import deepcopy
from pathlib import Path
import torch
out, marker = Path(sys.argv[1]), sys.argv[2]

class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args
    def __reduce__(self):
        return self.func, self.args

def save(obj, name):
    path = out / name
    if name.endswith(".zip.pt"):
        torch.save(obj, path)
    elif name.endswith(".legacy.pt"):
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # name.p<N>.pkl: a plain pickle at protocol N
        path.write_bytes(pickle.dumps(obj, protocol=int(name[-5])))

touch = f"__import__('pathlib').Path({marker!r}).touch()"
system = Call(os.system, f"touch {marker}")
"""

YOLO_CORPUS = (
    PRELUDE
    + """
from models.yolo import Model
model = Model(sys.argv[3], ch=3, nc=4)
# parse_model evaluates the module name and the arguments of each cfg row.
cfg = {"nc": 1, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
       "backbone": [[-1, 1, "Conv", [touch]]], "head": []}
evil_model = Call(Model, cfg)
save({"model": evil_model}, "reduce-model.zip.pt")
save({"model": evil_model}, "reduce-model.legacy.pt")
genuine = deepcopy(model).half()
save({"model": genuine, "ema": None, "extra": {"nested": [evil_model]}}, "genuine-plus-model.zip.pt")
save({"model": deepcopy(model).half(), "opt": {"x": [system]}}, "genuine-plus-system.legacy.pt")
for protocol in range(6):
    save({"model": {"w": [evil_model]}}, f"reduce-model.p{protocol}.pkl")
# A global naming a module whose import starts a command (utils/aws/resume.py in yolov7).
(out / "import-side-effect.p2.pkl").write_bytes(b"\\x80\\x02cutils.aws.resume\\nThing\\n)\\x81.")
# The train.py layout, which must still load: model, ema, optimizer state, strings.
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
model.names = [f"class{i}" for i in range(4)]
torch.save({"epoch": 2, "best_fitness": 0.1, "training_results": "0/299 ...", "model": deepcopy(model).half(),
            "ema": deepcopy(model).half(), "updates": 7, "optimizer": optimizer.state_dict(),
            "wandb_id": None, "opt": {"img_size": [320, 320]}, "date": "2026-11-30"}, out / "train.pt")
print(json.dumps(sorted(p.name for p in out.iterdir())))
"""
)

DETECTRON2_CORPUS = (
    PRELUDE
    + """
import numpy as np
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
state = {"backbone.w": torch.zeros(2)}
save({"model": {"w": np.zeros(2, np.float32), "x": system}, "__author__": "x"}, "system.p2.pkl")
save({"model": {"w": [system]}}, "system.p0.pkl")
save({"model": state, "iteration": 3, "extra": {"nested": [system]}}, "genuine-plus-system.zip.pt")
save({"model": state, "x": system}, "system.legacy.pt")
save({"model": Call(GeneralizedRCNN, {"cfg": touch})}, "reduce-rcnn.zip.pt")
save({"model": Call(torch.nn.Linear, 2, 2)}, "reduce-linear.zip.pt")
print(json.dumps(sorted(p.name for p in out.iterdir())))
"""
)

# Every nn.Module class of the YOLO loader's list is admitted, and none may be *called*.
REDUCE_EVERY_CLASS = """
import inspect, io, json, pickle, sys
import torch
from torch import nn
from kit.upstreams.loaders.yolo import ALLOWED_MODULES
from kit.core.errors import UnsafeCheckpointError
from kit.upstreams.safeload import safe_load
from pathlib import Path
path, refused, loaded = Path(sys.argv[1]), [], []
import importlib
modules = [importlib.import_module(m) for m in ALLOWED_MODULES if m != "torch.nn"]
classes = [c for m in modules for c in vars(m).values()
           if inspect.isclass(c) and issubclass(c, nn.Module) and c.__module__ == m.__name__]
classes += [nn.Linear, nn.Conv2d, nn.Sequential, nn.Upsample]
for cls in classes:
    # GLOBAL module name, EMPTY_TUPLE, REDUCE: cls() as the file's call.
    body = f"c{cls.__module__}\\n{cls.__qualname__}\\n".encode()
    for data in (b"\\x80\\x02" + body + b")R.", b"\\x80\\x02}X\\x01\\x00\\x00\\x00k" + body + b")Rs."):
        path.write_bytes(data)
        try:
            safe_load(path, allowed_modules=ALLOWED_MODULES)
            loaded.append(cls.__qualname__)
        except UnsafeCheckpointError:
            refused.append(cls.__qualname__)
print(json.dumps({"classes": len(classes), "refused": len(refused), "loaded": loaded,
                  "side_effect_imported": "utils.aws.resume" in sys.modules}))
"""


# Every file named on the command line refused by the entry point's loader list, in one process;
# prints whether a module with import side effects got imported on the way.
ALL_REFUSED = """
import sys
from kit.upstreams.loaders.{loader} import ALLOWED_MODULES
from kit.core.errors import UnsafeCheckpointError
from kit.upstreams.safeload import safe_load
for path in sys.argv[1:]:
    try:
        safe_load(path, allowed_modules=ALLOWED_MODULES)
    except UnsafeCheckpointError:
        continue
    raise SystemExit(f"loaded {{path}}")
print("utils.aws.resume" in sys.modules)
"""


# A genuine train.py checkpoint with one number changed, each one the upstream's attempt_load or
# the kit allocates from (a list of nl grids, nc names, an image rounded up to the stride), or
# class names a run cannot print.
TAMPERED_CORPUS = (
    PRELUDE
    + """
from models.yolo import Model
model = Model(sys.argv[3], ch=3, nc=4)
model.names = [f"class{i}" for i in range(4)]
head = model.model[-1]
def tampered(name, change):
    copy = deepcopy(model)
    change(copy, copy.model[-1])
    torch.save({"epoch": 2, "model": copy.half(), "ema": None, "optimizer": None}, out / name)
tampered("nl-huge.pt", lambda m, h: setattr(h, "nl", 10**9))
tampered("nc-huge.pt", lambda m, h: (setattr(h, "nc", 10**8), delattr(m, "names")))
def strides(m, h):
    h.stride = m.stride = h.stride * 128  # 32 -> 4096
tampered("stride-4096.pt", strides)
tampered("names-module.pt", lambda m, h: setattr(m, "names", ["a", torch.nn.Linear(1, 1), "c", "d"]))
tampered("names-self.pt", lambda m, h: (m.names.append(m.names), m.names.pop(0)))
tampered("conv-channels.pt", lambda m, h: setattr(m.model[0].conv, "out_channels", 10**6))
print(json.dumps(sorted(p.name for p in out.iterdir())))
"""
)
TAMPERED = {  # what each refusal names
    "nl-huge.pt": "Detect head's nl is 1000000000",
    "nc-huge.pt": "Detect head's nc is 100000000",
    "stride-4096.pt": r"Detect head's stride is the tensor \[.*4096.0\]",
    "names-module.pt": "class names entry 1 is a lone torch.nn.modules.linear.Linear module",
    "names-self.pt": "class names entry 3 is a builtins.list",
    "conv-channels.pt": "layer model.0.conv weight is a single tensor",
}
# Every tampered file through the upstream's loader (attempt_load, then the kit's adapter), in one
# process whose address space is limited to what it mapped so far plus 1.5 GB.
LOAD_TAMPERED = """
import json, resource, sys
from pathlib import Path
import torch
from kit.core.errors import KitError
from kit.upstreams.loaders.yolo import YoloOptions, load
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024 + (3 << 29)
resource.setrlimit(resource.RLIMIT_AS, (vm, vm))
out = {}
for path in sys.argv[2:]:
    try:
        load(sys.argv[1], Path.cwd(), path, options=YoloOptions(img_size=320))
        out[Path(path).name] = "loaded"
    except KitError as error:
        out[Path(path).name] = str(error)
print(json.dumps(out))
"""


def _image(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "a.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return path


def _corpus(checkout: Path, tmp_path: Path, code: str, *args: str) -> tuple[Path, Path, list[str]]:
    out, marker = tmp_path / "corpus", tmp_path / "pwned"
    out.mkdir()
    written = run_in_checkout(checkout, code, str(out), str(marker), *args)
    assert written.returncode == 0, written.stderr[-3000:]
    assert not marker.exists(), "writing the corpus must not have run it"
    return out, marker, json.loads(written.stdout.strip().splitlines()[-1])


def _every_class_refused(checkout: Path, tmp_path: Path) -> dict[str, object]:
    result = run_in_checkout(checkout, REDUCE_EVERY_CLASS, str(tmp_path / "reduce.pkl"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], report
    assert report["refused"] == 2 * report["classes"]
    return report


def _refused_by_the_cli(
    upstream: Upstream, checkout: Path, tmp_path: Path, weights: Path, marker: Path
) -> subprocess.CompletedProcess[str]:
    result = make_cam(upstream, checkout, weights=weights, out=tmp_path / f"run-{weights.name}",
                      source=_image(tmp_path / "images"))  # fmt: skip
    assert result.returncode == 2, (weights.name, result.returncode, result.stderr[-2000:])
    assert "refusing to load" in result.stderr and "--trust-checkpoint" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists(), weights.name
    return result


# Each YOLO upstream with the small model cfg its tests build a checkpoint from.
EVERY_YOLO = pytest.mark.parametrize(
    ("upstream", "fixture", "cfg"),
    [
        (YOLOV7, "yolov7_checkout", "cfg/deploy/yolov7-tiny.yaml"),
        (YOLOV3, "yolov3_checkout", "models/yolov3-tiny.yaml"),
        (YOLOV5, "yolov5_checkout", "models/yolov5n.yaml"),
    ],
    ids=["yolov7", "yolov3", "yolov5"],
)


@EVERY_YOLO
def test_yolo_hostile_corpus_is_refused_and_runs_nothing(
    upstream: Upstream, fixture: str, cfg: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkout: Path = request.getfixturevalue(fixture)
    out, marker, names = _corpus(checkout, tmp_path, YOLO_CORPUS, cfg)
    report = _every_class_refused(checkout, tmp_path)
    assert report["classes"] > 20 and report["side_effect_imported"] is False
    hostile = [n for n in names if n != "train.pt"]
    assert len(hostile) == 11
    sample = ["genuine-plus-model.zip.pt", "reduce-model.p0.pkl"]  # the rest in one process below
    for name in sample:
        _refused_by_the_cli(upstream, checkout, tmp_path, out / name, marker)
    # The rest through the YOLO loader's own list, in one process.
    check = run_in_checkout(checkout, ALL_REFUSED.format(loader="yolo"), *[str(out / n) for n in hostile])
    assert check.returncode == 0 and check.stdout.strip() == "False", check.stdout + check.stderr[-2000:]
    assert not marker.exists()
    images = _image(tmp_path / "images")
    genuine = make_cam(upstream, checkout, weights=out / "train.pt", out=tmp_path / "genuine", source=images)
    assert genuine.returncode == 0, genuine.stderr[-3000:]
    manifest = json.loads((tmp_path / "genuine" / "manifest.json").read_text())
    assert manifest["images"][0]["detections"], manifest


def test_detectron2_hostile_corpus_is_refused_and_runs_nothing(
    detectron2_checkout: Path, tmp_path: Path
) -> None:
    out, marker, names = _corpus(detectron2_checkout, tmp_path, DETECTRON2_CORPUS)
    assert len(names) == 6
    for name in ["genuine-plus-system.zip.pt"]:  # the rest in one process below
        _refused_by_the_cli(DETECTRON2, detectron2_checkout, tmp_path, out / name, marker)
    names = [str(out / n) for n in names]
    check = run_in_checkout(detectron2_checkout, ALL_REFUSED.format(loader="detectron2"), *names)
    assert check.returncode == 0, check.stdout + check.stderr[-2000:]
    assert not marker.exists()


@EVERY_YOLO
def test_yolo_numbers_the_code_allocates_from_are_refused_before_it_does(
    upstream: Upstream, fixture: str, cfg: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Issue 22: nl = 10**9 made yolov3's and yolov5's attempt_load build a list of 10**9 grids,
    nc = 10**8 made 10**8 class names, a stride of 4096 raised the image size to 4096, a module
    among the class names stopped the run after its first image with exit 3."""
    checkout: Path = request.getfixturevalue(fixture)
    out, marker, names = _corpus(checkout, tmp_path, TAMPERED_CORPUS, cfg)
    assert sorted(names) == sorted(TAMPERED)
    cli = make_cam(upstream, checkout, weights=out / "names-module.pt", out=tmp_path / "run",
                   source=_image(tmp_path / "images"))  # fmt: skip
    assert cli.returncode == 2, (cli.returncode, cli.stderr[-2000:])
    assert "Traceback" not in cli.stderr and TAMPERED["names-module.pt"] in cli.stderr, cli.stderr[-2000:]
    assert not (tmp_path / "run" / "manifest.json").exists()
    result = run_in_checkout(
        checkout, LOAD_TAMPERED, upstream.name, *[str(out / n) for n in sorted(TAMPERED)]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    refused = json.loads(result.stdout.strip().splitlines()[-1])
    for name, message in TAMPERED.items():
        assert re.search(message, refused[name]), (name, refused[name])
        assert refused[name].startswith(str(out / name)), refused[name]
