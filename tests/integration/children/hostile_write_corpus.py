"""``python hostile_write_corpus.py KIND OUT MARKER [CFG]`` in an upstream checkout: corpora of
hostile checkpoints in that upstream's own formats, written under the folder OUT, none of which
runs anything while written (each would ``touch MARKER`` or evaluate code if unpickled by a
loader that calls what a file names). Prints the sorted file names of each corpus as one JSON
object, ``{corpus: [names]}``; each corpus is the folder OUT/<corpus>.

KIND ``yolo`` (a YOLO checkout; CFG a small model cfg of it) writes two corpora. ``hostile``: REDUCE
on its ``Model`` with a cfg that yolov7/yolov3's ``parse_model`` would evaluate, a genuine model
beside a payload under a nested key, plain pickles at protocols 0 to 5, a global naming a module
whose import has side effects, and ``train.pt``, the train.py layout, which must still load.
``tampered``: a genuine checkpoint with one number changed that attempt_load or the kit allocates
from, or class names a run cannot print. KIND ``detectron2`` writes ``hostile``: its .pkl and .pth
layouts carrying ``os.system`` or a REDUCE on a model class.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

KINDS = ("yolo", "detectron2")


class Call:
    """Unpickled, calls ``func(*args)``."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.func, self.args


def save(obj: Any, path: Path) -> None:
    """``*.zip.pt``: torch.save; ``*.legacy.pt``: torch.save's legacy format; ``*.p<N>.pkl``: a
    plain pickle at protocol N."""
    import torch

    if path.name.endswith(".zip.pt"):
        torch.save(obj, path)
    elif path.name.endswith(".legacy.pt"):
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif path.name.endswith(".pkl"):
        path.write_bytes(pickle.dumps(obj, protocol=int(path.name[-5])))
    else:
        raise ValueError(f"{path.name}: name it *.zip.pt, *.legacy.pt or *.p<N>.pkl")


def touch_code(marker: str) -> str:
    """Python that creates the marker, as a cfg row's arguments would carry it."""
    return f"__import__('pathlib').Path({marker!r}).touch()"


def write_yolo(out: Path, marker: str, cfg: str) -> None:
    import torch
    from models.yolo import Model

    model = Model(cfg, ch=3, nc=4)
    # parse_model evaluates the module name and the arguments of each cfg row.
    rows = [[-1, 1, "Conv", [touch_code(marker)]]]
    evil_cfg = {"nc": 1, "depth_multiple": 1.0, "width_multiple": 1.0,
                "anchors": [[10, 13, 16, 30, 33, 23]], "backbone": rows, "head": []}  # fmt: skip
    evil_model = Call(Model, evil_cfg)
    system = Call(os.system, f"touch {marker}")
    save({"model": evil_model}, out / "reduce-model.zip.pt")
    save({"model": evil_model}, out / "reduce-model.legacy.pt")
    genuine = {"model": deepcopy(model).half(), "ema": None, "extra": {"nested": [evil_model]}}
    save(genuine, out / "genuine-plus-model.zip.pt")
    save({"model": deepcopy(model).half(), "opt": {"x": [system]}}, out / "genuine-plus-system.legacy.pt")
    for protocol in range(6):
        save({"model": {"w": [evil_model]}}, out / f"reduce-model.p{protocol}.pkl")
    # A global naming a module whose import starts a command (utils/aws/resume.py in yolov7).
    (out / "import-side-effect.p2.pkl").write_bytes(b"\x80\x02cutils.aws.resume\nThing\n)\x81.")
    # The train.py layout, which must still load: model, ema, optimizer state, strings.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model.names = [f"class{i}" for i in range(4)]
    train = {"epoch": 2, "best_fitness": 0.1, "training_results": "0/299 ...",
             "model": deepcopy(model).half(), "ema": deepcopy(model).half(), "updates": 7,
             "optimizer": optimizer.state_dict(), "wandb_id": None, "opt": {"img_size": [320, 320]},
             "date": "2026-11-30"}  # fmt: skip
    torch.save(train, out / "train.pt")


def write_tampered(out: Path, cfg: str) -> None:
    import torch
    from models.yolo import Model

    model = Model(cfg, ch=3, nc=4)
    model.names = [f"class{i}" for i in range(4)]

    def tampered(name: str, change: Callable[[Any, Any], object]) -> None:
        copy = deepcopy(model)
        change(copy, copy.model[-1])
        torch.save({"epoch": 2, "model": copy.half(), "ema": None, "optimizer": None}, out / name)

    def strides(m: Any, head: Any) -> None:
        head.stride = m.stride = head.stride * 128  # 32 -> 4096

    def no_names(m: Any, head: Any) -> None:
        head.nc = 10**8
        del m.names

    def names_hold_themselves(m: Any, head: Any) -> None:
        m.names.append(m.names)
        m.names.pop(0)

    tampered("nl-huge.pt", lambda m, h: setattr(h, "nl", 10**9))
    tampered("nc-huge.pt", no_names)
    tampered("stride-4096.pt", strides)
    tampered("names-module.pt", lambda m, h: setattr(m, "names", ["a", torch.nn.Linear(1, 1), "c", "d"]))
    tampered("names-self.pt", names_hold_themselves)
    tampered("conv-channels.pt", lambda m, h: setattr(m.model[0].conv, "out_channels", 10**6))


def write_detectron2(out: Path, marker: str) -> None:
    import numpy as np
    import torch
    from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN

    state = {"backbone.w": torch.zeros(2)}
    system = Call(os.system, f"touch {marker}")
    save({"model": {"w": np.zeros(2, np.float32), "x": system}, "__author__": "x"}, out / "system.p2.pkl")
    save({"model": {"w": [system]}}, out / "system.p0.pkl")
    save({"model": state, "iteration": 3, "extra": {"nested": [system]}}, out / "genuine-plus-system.zip.pt")
    save({"model": state, "x": system}, out / "system.legacy.pt")
    save({"model": Call(GeneralizedRCNN, {"cfg": touch_code(marker)})}, out / "reduce-rcnn.zip.pt")
    save({"model": Call(torch.nn.Linear, 2, 2)}, out / "reduce-linear.zip.pt")


def main(argv: list[str]) -> int:
    kind, out_arg, marker, *cfg = argv
    if kind not in KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}: use one of {KINDS}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    out = Path(out_arg)
    hostile, tampered = out / "hostile", out / "tampered"
    hostile.mkdir(parents=True, exist_ok=True)
    if kind == "yolo":
        tampered.mkdir(exist_ok=True)
        write_yolo(hostile, marker, *cfg)
        write_tampered(tampered, *cfg)
    else:
        write_detectron2(hostile, marker)
    print(json.dumps({c.name: sorted(p.name for p in c.iterdir()) for c in sorted(out.iterdir())}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
