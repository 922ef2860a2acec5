"""What a YOLO checkpoint must hold after the safe loader read it: the numbers its upstream's code
and the kit allocate from in the ranges of a trained model, and class names a run can print.

A stand-in for the upstreams' models: ``Detect`` carries ``return_logits`` as the kit's patched
heads do, with yolov5's attributes (nc, no, nl, na, stride, anchors, m).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from kit.core.errors import CheckpointError
from kit.upstreams.checkpoints import check_class_names, describe, yolo_checkpoint_check
from kit.upstreams.loaders.detectron2 import check_checkpoint
from kit.upstreams.loaders.yolo import class_names


class Detect(nn.Module):
    return_logits = False  # as the kit's patched heads

    def __init__(
        self, nc: int = 3, anchors: tuple[tuple[int, ...], ...] = ((10, 13, 16, 30), (30, 61, 62, 45))
    ):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(8, self.no * self.na, 1) for _ in anchors)
        self.stride = torch.tensor([8.0, 16.0])


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.model = nn.Sequential(conv, nn.BatchNorm2d(8), nn.Upsample(None, 2, "nearest"), Detect())
        self.names = ["cat", "dog", "bird"]
        self.stride = torch.tensor([8.0, 16.0])


check = yolo_checkpoint_check(Model)


def _head(model: Model) -> Any:
    return model.model[-1]


def _set(target: Callable[[Model], Any], name: str, value: Any) -> Callable[[Model], None]:
    def change(model: Model) -> None:
        setattr(target(model), name, value)

    return change


def _weight(model: Model) -> None:
    model.model[0].weight = nn.Parameter(torch.zeros(8, 3, 1, 1))


# (change to a genuine model, what the message names): each number the file can set.
HOSTILE: dict[str, tuple[Callable[[Model], None], str]] = {
    "nc-huge": (
        _set(_head, "nc", 10**9),
        r"Detect head's nc is 1000000000, expected a whole number in 1..10000",
    ),
    "nc-bits": (_set(_head, "nc", 2**20000), r"nc is a whole number of 20001 bits"),
    "nc-float": (_set(_head, "nc", 3.0), r"nc is 3.0"),
    "nc-bool": (_set(_head, "nc", True), r"nc is True"),
    "nl-huge": (_set(_head, "nl", 10**9), r"nl is 1000000000, expected a whole number in 1..8"),
    "na-zero": (_set(_head, "na", 0), r"na is 0"),
    "no-other": (_set(_head, "no", 4), r"no is 4, expected nc \+ 5 = 8"),
    "no-missing": (_set(_head, "no", None), r"no is None"),
    "stride-4096": (
        _set(_head, "stride", torch.tensor([8.0, 4096.0])),
        r"Detect head's stride is the tensor \[8.0, 4096.0\]",
    ),
    "stride-odd": (_set(_head, "stride", torch.tensor([8.0, 12.0])), r"powers of two in 1..256"),
    "stride-count": (_set(_head, "stride", torch.tensor([8.0, 16.0, 32.0])), r"2 of them"),
    "stride-list": (_set(_head, "stride", [8, 16]), r"stride is a builtins.list"),
    "model-stride": (_set(lambda m: m, "stride", torch.tensor([1024.0])), r"model's stride is"),
    "anchors-shape": (
        _set(_head, "anchors", torch.ones(2, 3, 2)),
        r"anchors is .* shape \(nl, na, 2\) = \(2, 2, 2\)",
    ),
    "anchors-nan": (_set(_head, "anchors", torch.full((2, 2, 2), float("nan"))), r"anchors"),
    "m-count": (_set(_head, "m", nn.ModuleList([nn.Conv2d(8, 16, 1)])), r"m is .*one output layer per level"),
    "names-module": (
        _set(lambda m: m, "names", ["cat", nn.Linear(1, 1), "bird"]),
        r"entry 1 is a lone .*Linear",
    ),
    "names-tensor": (
        _set(lambda m: m, "names", ["cat", torch.zeros(3), "b"]),
        r"entry 1 is the tensor \[0.0, 0.0, 0.0\]",
    ),
    "names-bytes": (_set(lambda m: m, "names", ["cat", b"dog", "bird"]), r"entry 1 is a builtins.bytes"),
    "names-count": (
        _set(lambda m: m, "names", ["cat"]),
        r"class names count is 1, expected one name per class",
    ),
    "names-long": (_set(lambda m: m, "names", ["cat", "d" * 1001, "b"]), r"at most 1000 characters"),
    "names-str": (_set(lambda m: m, "names", "cat dog bird"), r"class names is 'cat dog bird'"),
    "names-keys": (_set(lambda m: m, "names", {0: "a", 7: "b"}), r"class names keys is .*indices 0..nc-1"),
    "conv-out": (_set(lambda m: m.model[0], "out_channels", 10**6), r"layer model.0 weight .* shape"),
    "conv-groups": (_set(lambda m: m.model[0], "groups", 0), r"layer model.0 channels"),
    "conv-kernel": (_weight, r"layer model.0 weight is .*\(8, 3, 3, 3\)"),
    "conv-padding": (
        _set(lambda m: m.model[0], "padding", (10**5, 10**5)),
        r"stride, padding, dilation or output_padding",
    ),
    "conv-stride": (
        _set(lambda m: m.model[0], "stride", (0, 0)),
        r"stride, padding, dilation or output_padding",
    ),
    "conv-missing": (lambda m: delattr(m.model[0], "groups"), r"layer model.0 \(Conv2d\) has no groups"),
    "conv-kernel-type": (_set(lambda m: m.model[0], "kernel_size", "3"), r"kernel_size is '3'"),
    "bn-missing": (lambda m: delattr(m.model[1], "eps"), r"layer model.1 \(BatchNorm2d\) has no eps"),
    "upsample-missing": (lambda m: delattr(m.model[2], "scale_factor"), r"has no scale_factor"),
    "bn-features": (_set(lambda m: m.model[1], "num_features", 10**6), r"model.1 num_features is 1000000"),
    "bn-mean": (_set(lambda m: m.model[1], "running_mean", torch.zeros(9)), r"model.1 running_mean"),
    "upsample-scale": (_set(lambda m: m.model[2], "scale_factor", 1000.0), r"scale_factor is 1000.0"),
    "upsample-size": (_set(lambda m: m.model[2], "size", (10**6, 10**6)), r"model.2 size"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_numbers_the_code_allocates_from_are_refused_by_name(name: str) -> None:
    change, message = HOSTILE[name]
    model = Model()
    change(model)
    with pytest.raises(CheckpointError, match=message) as info:
        check({"model": model}, Path("w/best.pt"))
    assert str(info.value).startswith("w/best.pt: the model's"), str(info.value)
    assert "not written by train.py" in str(info.value)


def test_a_trained_model_passes_and_names_may_be_a_dict_or_numbers() -> None:
    model = Model()
    check({"model": model, "ema": None, "optimizer": None}, Path("a.pt"))
    model.names = {0: "cat", 1: "dog", 2: "bird"}  # yolov5's
    check({"model": model.half()}, Path("a.pt"))
    model.names = [0, 1, np.int64(2)]  # data.yaml's `names: [0, 1, 2]`
    check({"ema": model}, Path("a.pt"))
    del model.names  # then the adapter names classes by index
    check({"ema": model}, Path("a.pt"))


def test_an_ema_tensor_is_named_not_a_crash() -> None:
    """attempt_load's ckpt.get('ema') of a tensor of several values raised (exit 3)."""
    with pytest.raises(CheckpointError, match=r"its 'ema' holds a single tensor of shape \(3,\)"):
        check({"ema": torch.zeros(3), "model": Model()}, Path("a.pt"))
    with pytest.raises(CheckpointError, match=r"its 'ema' holds a numpy.ndarray"):
        check({"ema": np.zeros(3), "model": Model()}, Path("a.pt"))


def test_a_self_referencing_names_list_is_refused() -> None:
    names: list[Any] = ["cat", "dog"]
    names.append(names)
    with pytest.raises(CheckpointError, match=r"entry 2 is a builtins.list"):
        check_class_names(names, 3, "x.pt: the model's class names")


@pytest.mark.parametrize(
    ("names", "nc", "expected"),
    [
        (["cat", "dog"], 2, ["cat", "dog"]),
        (("cat", 1), 2, ["cat", "1"]),
        ({0: "cat", 2: "bird"}, 3, ["cat", "class1", "bird"]),
        ({1: "dog"}, None, ["class0", "dog"]),
        (None, 3, None),
    ],
)
def test_class_names_become_strings(names: Any, nc: int | None, expected: list[str] | None) -> None:
    assert class_names(names, nc) == expected


def test_class_names_refuse_what_a_run_cannot_print() -> None:
    with pytest.raises(CheckpointError, match=r"x.pt: class names entry 0 is the tensor \[0.0, 0.0\]"):
        class_names([torch.zeros(2)], 1, where="x.pt: class names")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"w": torch.zeros(2), 3: torch.zeros(1)}, r"holds a single tensor of shape \(1,\) under 3"),
        ({"w": np.zeros(2, np.float32), "b": np.array(["x"])}, r"holds a numpy.ndarray under 'b'"),
        ({"w": torch.zeros(2), "iteration": 3}, r"holds a builtins.int under 'iteration'"),
        ({"w": np.zeros(2), "s": np.float32(1)}, r"under 's'"),
    ],
)
def test_detectron2_weights_are_tensors_or_numeric_arrays_by_name(
    weights: dict[Any, Any], message: str
) -> None:
    """DetectionCheckpointer calls str methods on the names and torch.from_numpy on arrays:
    anything else stopped the run with exit 3."""
    for data in ({"model": weights, "__author__": "x"}, weights):
        with pytest.raises(CheckpointError, match=message):
            check_checkpoint(data, Path("m.pkl"))
    check_checkpoint({"model": {"w": np.zeros(2, np.float16), "n": torch.tensor(3)}}, Path("m.pkl"))


def test_what_a_file_holds_is_described_in_a_line_whatever_its_keys() -> None:
    """repr of a whole number past 4300 digits raises (ValueError, exit 3); a key may be any length."""
    text = describe({10**5000: 1, "k" * 500: 2})
    assert text.startswith("a dict with keys <a whole number of 16610 bits>, 'kkk") and len(text) < 200
    with pytest.raises(CheckpointError, match=r"its 'model' holds a lone .*Linear module"):
        check({10**5000: 1, "model": nn.Linear(1, 1)}, Path("a.pt"))
