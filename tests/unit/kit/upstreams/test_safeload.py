"""Safe checkpoint loading: what torch.save writes loads; a file that would run code does not.

A fixture package stands in for an upstream's model code: ``kitfx_models.yolo.Model`` evaluates
strings of its cfg when *called*, as yolov7's ``parse_model`` does, and ``kitfx_models.aws``
starts a command when *imported*, as yolov7's ``utils/aws/resume.py`` does. Every hostile file
below is refused and leaves its marker file unwritten.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import struct
import sys
import tarfile
import textwrap
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from kit.core.errors import CheckpointError, CheckpointNotFoundError, KitError, UnsafeCheckpointError
from kit.upstreams import safeload
from kit.upstreams.checkpoints import require_files
from kit.upstreams.safeload import pickled_globals, safe_load
from tests import hostile

FIXTURE_FILES = {
    "kitfx_models/__init__.py": "",
    "kitfx_models/common.py": """
        import os  # upstream modules import os; a pickle must not reach os.system through them
        from pathlib import Path

        from torch import nn


        def touch(path):
            Path(path).touch()


        class Hyp:
            def __init__(self):
                self.lr0 = 0.01


        class Conv(nn.Module):
            def __init__(self, c1, c2):
                super().__init__()
                self.conv = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
                self.bn = nn.BatchNorm2d(c2)
                self.act = nn.SiLU()

            def forward(self, x):
                return self.act(self.bn(self.conv(x)))


        class Restoring(nn.Module):
            def __setstate__(self, state):  # runs on BUILD: must never be admitted
                Path(state["marker"]).touch()


        class Finalized(nn.Module):
            def __del__(self):  # runs when collected
                Path(self.marker).touch()
        """,
    "kitfx_models/yolo.py": """
        import torch
        from torch import nn

        from kitfx_models.common import Conv


        class Model(nn.Module):
            def __init__(self, cfg=None):
                super().__init__()
                if cfg is not None:  # as yolov7's parse_model: strings of the cfg are evaluated
                    for expression in cfg.get("eval", []):
                        eval(expression)
                self.model = nn.Sequential(Conv(3, 4), nn.Upsample(scale_factor=2), Conv(4, 2))
                self.names = ["cat", "dog"]
                self.yaml = {"nc": 2, "depth_multiple": 1.0, "anchors": [[10, 13, 16, 30]]}
                self.hyp = {"lr0": 0.01, "box": (0.05, 1.0)}
                self.register_buffer("stride", torch.tensor([8.0, 16.0]))

            def forward(self, x):
                return self.model(x)
        """,
    "kitfx_models/aws.py": """
        import os
        import sys
        # yolov7's utils/aws/resume.py starts `train.py --resume` when imported.
        open(os.environ["KITFX_IMPORT_MARKER"], "w").close()


        class Thing:
            pass
        """,
}
ALLOW = ["kitfx_models.yolo", "kitfx_models.common", "torch.nn"]


@pytest.fixture(scope="module")
def fixture_pkgs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("pkgs")
    for rel, text in FIXTURE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("kitfx_models")]:
            del sys.modules[name]


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pwned"
    monkeypatch.setenv("KITFX_IMPORT_MARKER", str(tmp_path / "imported"))
    return path


def _model() -> nn.Module:
    from kitfx_models.yolo import Model  # type: ignore[import-not-found]

    torch.manual_seed(0)
    return Model()


def _train_checkpoint(model: nn.Module) -> dict[str, Any]:
    """The layout of yolov7's and yolov3's train.py: model and ema in half, optimizer state, strings."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model(torch.zeros(1, 3, 4, 4)).sum().backward()
    optimizer.step()
    return {
        "epoch": 3,
        "best_fitness": np.float64(0.5),
        "training_results": "      0/299     1.2G   0.05  ...\n",
        "model": model.half(),
        "ema": _model().half(),
        "updates": 120,
        "optimizer": optimizer.state_dict(),
        "opt": {"weights": "", "img_size": [640, 640], "hyp": {"lr0": 0.01}, "save_dir": "runs/train/exp"},
        "wandb_id": None,
        "date": "2026-11-30T00:00:00",
    }


# ---------------------------------------------------------------- genuine files load


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_train_checkpoint_loads_with_model_ema_and_optimizer(
    fixture_pkgs: Path, tmp_path: Path, zip_format: bool
) -> None:
    ckpt = _train_checkpoint(_model())
    path = tmp_path / "last.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    loaded = safe_load(path, allowed_modules=ALLOW)
    model = loaded["model"]
    assert type(model).__module__ == "kitfx_models.yolo" and model.names == ["cat", "dog"]
    assert loaded["best_fitness"] == 0.5 and loaded["wandb_id"] is None and loaded["updates"] == 120
    assert loaded["training_results"] == ckpt["training_results"] and loaded["opt"] == ckpt["opt"]
    assert model.hyp == {"lr0": 0.01, "box": (0.05, 1.0)} and model.yaml == ckpt["model"].yaml
    for (name, a), (_, b) in zip(ckpt["model"].state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    momentum = loaded["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, ckpt["optimizer"]["state"][0]["momentum_buffer"])
    assert loaded["optimizer"]["param_groups"][0]["nesterov"] is True
    assert model.float().eval()(torch.zeros(1, 3, 4, 4)).shape == (1, 2, 8, 8)
    assert not model._forward_hooks and isinstance(model.model[0].conv, nn.Conv2d)


def test_release_checkpoint_and_state_dict_load(fixture_pkgs: Path, tmp_path: Path) -> None:
    """strip_optimizer's release layout (model only, optimizer None) and a plain state_dict."""
    release = {"epoch": -1, "best_fitness": None, "model": _model().half(), "optimizer": None}
    torch.save(release, tmp_path / "release.pt")
    assert type(safe_load(tmp_path / "release.pt", allowed_modules=ALLOW)["model"]).__name__ == "Model"
    state = OrderedDict(w=torch.arange(4.0), n=torch.tensor(3))
    torch.save({"state_dict": state, "arr": np.arange(3, dtype=np.float32), "s": {1, 2}}, tmp_path / "sd.pt")
    loaded = safe_load(tmp_path / "sd.pt", allowed_modules=[])
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0)) and loaded["s"] == {1, 2}
    np.testing.assert_array_equal(loaded["arr"], [0, 1, 2])


@pytest.mark.parametrize("protocol", range(6))
def test_plain_pickles_of_numpy_weights_load_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    """detectron2's model-zoo .pkl: dicts of numpy arrays (and scalars, strings, bytes)."""
    weights = {"backbone.w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float16)}
    data = {"model": weights, "__author__": "Detectron", "n": np.int64(3), "raw": b"\x00\xff", "c": 1 + 2j}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = safe_load(path, allowed_modules=[])
    np.testing.assert_array_equal(loaded["model"]["backbone.w"], weights["backbone.w"])
    assert loaded["model"]["b"].dtype == np.float16 and loaded["n"] == 3 and loaded["raw"] == b"\x00\xff"
    assert loaded["__author__"] == "Detectron" and loaded["c"] == 1 + 2j


def test_numpy_1_names_load(tmp_path: Path) -> None:
    """Pickles written with numpy 1 (and Detectron's) name numpy.core.multiarray, not numpy._core."""
    array = np.arange(4, dtype=np.float32)
    data = pickle.dumps({"blobs": {"w": array, "s": np.float32(2)}, "__author__": "Detectron"}, protocol=2)
    assert b"numpy._core" in data or b"numpy.core" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = safe_load(path, allowed_modules=[])
    np.testing.assert_array_equal(loaded["blobs"]["w"], array)
    assert loaded["blobs"]["s"] == 2 and loaded["__author__"] == "Detectron"


# ---------------------------------------------------------------- hostile files are refused


class Call:
    """Pickles as a call of ``func(*args)`` (REDUCE): the shape of every code-running pickle."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


class NewObj:
    """Pickles as ``NEWOBJ`` of ``cls`` with arguments (protocol 2+; REDUCE of __newobj__ below)."""

    def __init__(self, cls: type, *args: Any) -> None:
        self.cls, self.args = cls, args

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # the pickler checks that args[0] is the object's class
        return self.cls

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return copyreg.__newobj__, (self.cls, *self.args)  # type: ignore[attr-defined]


def _cfg(marker: Path) -> dict[str, Any]:
    return {"eval": [f"__import__('pathlib').Path({str(marker)!r}).touch()"]}


def _hostile(kind: str, marker: Path) -> Any:
    """One hostile object per way a pickle can run code through names the kit admits."""
    from kitfx_models import common, yolo  # type: ignore[import-not-found]

    if kind == "reduce-model":  # REDUCE on the admitted Model: Model(cfg) evaluates cfg
        return Call(yolo.Model, _cfg(marker))
    if kind == "reduce-conv":  # REDUCE on another admitted class
        return Call(common.Conv, 3, 4)
    if kind == "reduce-torch-nn":  # REDUCE on a torch.nn class
        return Call(nn.Linear, 2, 2)
    if kind == "newobj-args":  # NEWOBJ with arguments (cls.__new__(cls, *args))
        return NewObj(yolo.Model, _cfg(marker))
    if kind == "os-system":
        return Call(os.system, f"touch {marker}")
    if kind == "function-in-allowed-module":
        return Call(common.touch, str(marker))
    if kind == "class-imported-there":  # pathlib.Path reached through models.common
        return Call(common.Path, str(marker))
    if kind == "setstate-class":
        obj = common.Restoring()
        obj.marker = str(marker)
        return obj
    if kind == "finalizer-class":
        obj = common.Finalized()
        obj.marker = str(marker)
        return obj
    if kind == "class-as-data":  # a class kept in the result is a call waiting to happen
        return {"act": yolo.Model, "cfg": _cfg(marker)}
    if kind == "module-with-hooks":
        model = nn.Sequential(nn.Identity())
        model.register_forward_hook(yolo.Model)  # type: ignore[arg-type]
        return model
    if kind == "object-array":
        return np.array([Call(os.system, f"touch {marker}"), 1], dtype=object)
    raise AssertionError(kind)


HOSTILE = [
    "reduce-model",
    "reduce-conv",
    "reduce-torch-nn",
    "newobj-args",
    "os-system",
    "function-in-allowed-module",
    "class-imported-there",
    "setstate-class",
    "finalizer-class",
    "class-as-data",
    "module-with-hooks",
    "object-array",
]
EXPECTED = {
    "reduce-model": r"calls kitfx_models\.yolo\.Model \(REDUCE\)",
    "reduce-conv": r"calls kitfx_models\.common\.Conv \(REDUCE\)",
    "reduce-torch-nn": r"calls torch\.nn\.modules\.linear\.Linear \(REDUCE\)",
    "newobj-args": r"creates kitfx_models\.yolo\.Model with arguments|copyreg\.__newobj__ is outside",
    "os-system": r"(posix|nt)\.system",
    "function-in-allowed-module": r"kitfx_models\.common\.touch is not a class",
    "class-imported-there": r"pathlib\.(Posix)?Path is outside",
    "setstate-class": r"Restoring defines __setstate__",
    "finalizer-class": r"Finalized defines __del__",
    "class-as-data": r"holds kitfx_models\.yolo\.Model",
    "module-with-hooks": r"hooks",
    "object-array": r"(posix|nt)\.system|Python objects|numpy\.dtype with arguments",
}


def _save(obj: Any, path: Path, fmt: str) -> None:
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt[-1])))


FORMATS = ["zip", "legacy", *(f"pickle{p}" for p in range(6))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_checkpoint_is_refused_and_runs_nothing(
    fixture_pkgs: Path, tmp_path: Path, marker: Path, kind: str, fmt: str
) -> None:
    """Beside a genuine model, under a nested key, in every format: refused, nothing ran."""
    hostile = _hostile(kind, marker)
    # The genuine part: a whole model in torch's formats, numpy weights in a plain pickle.
    genuine = _model() if fmt in ("zip", "legacy") else {"w": np.ones(3, np.float32)}
    try:
        _save({"model": genuine, "extra": {"nested": [hostile]}}, tmp_path / "evil.pt", fmt)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        pytest.skip(f"{fmt} cannot write {kind}: {e}")
    finally:
        if isinstance(hostile, nn.Module) and hasattr(hostile, "marker"):
            hostile.marker = str(tmp_path / "writer-side")  # this process's copy may run its hook
        del hostile
    assert not marker.exists(), "writing the file must not have run the payload"
    with pytest.raises(UnsafeCheckpointError, match=EXPECTED[kind]) as info:
        safe_load(tmp_path / "evil.pt", allowed_modules=ALLOW)
    assert "--trust-checkpoint" in str(info.value) and "evil.pt" in str(info.value)
    del info
    import gc

    gc.collect()  # a half-built object with a finalizer must not run it either
    assert not marker.exists()


def test_reduce_on_the_model_runs_code_only_when_trusted(
    fixture_pkgs: Path, tmp_path: Path, marker: Path
) -> None:
    """The attack is real: with --trust-checkpoint the same file runs its payload."""
    path = tmp_path / "evil.pt"
    torch.save({"model": Call(__import__("kitfx_models.yolo").yolo.Model, _cfg(marker))}, path)
    with pytest.raises(UnsafeCheckpointError):
        safe_load(path, allowed_modules=ALLOW)
    assert not marker.exists()
    safe_load(path, allowed_modules=ALLOW, trust=True)
    assert marker.exists()


def test_a_global_is_never_imported_because_a_file_names_it(
    fixture_pkgs: Path, tmp_path: Path, marker: Path
) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02ckitfx_models.aws\nThing\n)\x81.")  # NEWOBJ of kitfx_models.aws.Thing
    with pytest.raises(UnsafeCheckpointError, match=r"kitfx_models\.aws\.Thing is outside"):
        safe_load(path, allowed_modules=[*ALLOW, "kitfx_models.common"])
    assert "kitfx_models.aws" not in sys.modules
    assert not (tmp_path / "imported").exists()
    # Even listed, a module is imported only because the caller listed it, and only from that list.
    path.write_bytes(b"\x80\x02ckitfx_models.yolo\nos\n.")
    with pytest.raises(UnsafeCheckpointError, match=r"kitfx_models\.yolo\.os is not a class"):
        safe_load(path, allowed_modules=ALLOW)


# The opcode builders the hostile corpus uses (tests/hostile.py), under this file's short names.
_raw, _s, _g, _t = hostile.raw, hostile.s, hostile.g, hostile.t


CRAFTED = {
    # INST / OBJ call the class with arguments (protocols 0 and 1).
    "inst": b"(S'cfg'\nikitfx_models.yolo\nModel\n.",
    "obj": _raw(b"(ckitfx_models.yolo\nModel\nX\x03\x00\x00\x00cfgo"),
    # NEWOBJ_EX with keyword arguments.
    "newobj-ex": b"\x80\x04\x8c\x11kitfx_models.yolo\x8c\x05Model\x93)}\x8c\x03cfg\x8c\x01xs\x92.",
    # copyreg._reconstructor with a base other than object (it would call base.__init__(obj, state)).
    "reconstructor-base": _raw(
        b"ccopy_reg\n_reconstructor\nckitfx_models.yolo\nModel\nc__builtin__\ndict\n}\x87R"
    ),
    # EXT opcodes name a global through copyreg's extension registry.
    "ext": _raw(b"\x82\x01"),
    # A codec named by the file (codecs.lookup imports encodings.<name>).
    "codec": _raw(b"c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00rot_13\x86R"),
    # APPEND into an admitted module (ModuleList.append would run with the file's value).
    "append-into-module": _raw(b"ctorch.nn.modules.container\nModuleList\n)\x81}bK\x01a"),
    # BUILD of an OrderedDict with attributes other than a state_dict's _metadata.
    "build-ordereddict-attribute": _raw(b"ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00kK\x01sb"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_opcodes_are_refused(fixture_pkgs: Path, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(CRAFTED[name])
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        safe_load(path, allowed_modules=ALLOW)


def test_crafted_global_in_a_torch_zip_is_refused(fixture_pkgs: Path, tmp_path: Path, marker: Path) -> None:
    clean, path = tmp_path / "clean.pt", tmp_path / "evil.pt"
    torch.save({"a": 1}, clean)
    payload = pickle.dumps(Call(os.system, f"touch {marker}"), protocol=2)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, payload if info.filename.endswith("/data.pkl") else src.read(info))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|nt)\.system"):
        safe_load(path, allowed_modules=ALLOW)
    assert not marker.exists()


def test_every_refused_global_is_listed(fixture_pkgs: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": _model()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(path, allowed_modules=["torch.nn"])
    message = str(info.value)
    assert "kitfx_models.common.Conv" in message and "kitfx_models.yolo.Model" in message
    assert "--trust-checkpoint" in message and "model.pt" in message
    assert type(safe_load(path, allowed_modules=[], trust=True)["model"]).__name__ == "Model"


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle"])
def test_pickled_globals_names_the_classes_without_loading(
    fixture_pkgs: Path, tmp_path: Path, marker: Path, how: str
) -> None:
    """What a file names, read from its opcodes (e.g. to refuse a kind of model with its own
    message): nothing is imported or called, even for a file that would run a command."""
    path = tmp_path / f"model.{how}"
    obj = {"model": _model(), "evil": Call(os.system, f"touch {marker}")}
    if how == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=how == "zip")
    names = pickled_globals(path)
    assert {"kitfx_models.yolo.Model", "kitfx_models.common.Conv", "torch.nn.modules.conv.Conv2d"} <= names
    assert {"posix.system", "os.system"} & names
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x02}q\x00(", b"PK\x03\x04xx"])
def test_pickled_globals_of_a_file_that_is_no_checkpoint_is_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    assert pickled_globals(path) == set()
    assert pickled_globals(tmp_path / "missing.pt") == set()


def test_allowed_modules_must_be_module_names() -> None:
    with pytest.raises(ValueError, match="posix"):
        safe_load(__file__, allowed_modules=["posix"])
    with pytest.raises(TypeError, match="list of module"):
        safe_load(__file__, allowed_modules="torch.nn")


def test_missing_file_says_how_to_pass_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.pt.*--weights PATH.*WEIGHTS=PATH") as info:
        safe_load(tmp_path / "nope.pt", allowed_modules=[])
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, KitError)


def test_weights_that_are_no_regular_file_or_beyond_any_checkpoints_size_are_refused_unread(
    tmp_path: Path,
) -> None:
    """/dev/zero and a FIFO were reported as "not found"; a sparse file of 50 GB was read into memory
    (a minute, then gigabytes). Each is refused from its stat, before it is opened: a FIFO would block."""
    fifo = tmp_path / "w.pt"
    os.mkfifo(fifo)
    sparse = tmp_path / "big.pt"
    with sparse.open("wb") as f:
        f.truncate(safeload.MAX_CHECKPOINT_BYTES + 1)
    cases = [
        (Path("/dev/zero"), r"'/dev/zero' is not a regular file \(a pipe, a device or a socket\)"),
        (fifo, r"w\.pt' is not a regular file"),
        (tmp_path, r"is a folder; pass the checkpoint file itself with --weights PATH"),
        (sparse, r"big\.pt' is 17,179,869,185 bytes, larger than any detector checkpoint \(16 GiB at most\)"),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            safe_load(path, allowed_modules=[])
        with pytest.raises(CheckpointError, match=message):
            require_files([str(path)])  # what the YOLO loaders call first


@pytest.mark.parametrize(
    "content", [b"this is not a checkpoint at all", b"", b"\x80\x02}q\x00(", b"PK\x03\x04xx"]
)
def test_garbage_file_is_a_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        safe_load(path, allowed_modules=[])


def test_plain_pickle_reader_has_no_persistent_ids(tmp_path: Path) -> None:
    path = tmp_path / "pid.pkl"
    path.write_bytes(_raw(b"X\x03\x00\x00\x00abcQ"))
    with pytest.raises(CheckpointError, match="persistent id"):
        safe_load(path, allowed_modules=[])


# ---------------------------------------------------------------- found by attacking the loader


def _i(n: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", n)


def _dtype(spec: str, align: bytes = b"\x89", copy: bytes = b"\x88") -> bytes:
    return _g("numpy", "dtype") + _t(_s(spec), align, copy) + b"R"


DTYPE_STATE_F4 = _t(_i(3), _s("<"), b"N", b"N", b"N", _i(-1), _i(-1), _i(0))
NUMPY_ATTACKS = {
    # a dtype whose spec has no "O" but holds objects, views memory, or carries metadata
    "object-spec": _dtype("object"),
    "structured": _dtype("f4,f4"),
    "void": _dtype("V8"),
    # copy=False returns numpy's shared singleton: a BUILD would change every f4 array of the process
    "shared-singleton": _dtype("f4", copy=b"\x89"),
    # BUILD of a dtype with another element size (reads past the array's buffer) or twice
    "dtype-state": _dtype("f4") + _t(_i(3), _s("<"), b"N", b"N", b"N", _i(1 << 20), _i(1), _i(0)) + b"b",
    "dtype-built-twice": _dtype("f4") + b"q\x01" + DTYPE_STATE_F4 + b"b0h\x01" + DTYPE_STATE_F4 + b"b",
    # an empty object array straight from _reconstruct, and one whose data does not fit its shape
    "object-reconstruct": _g("numpy._core.multiarray", "_reconstruct")
    + _t(_g("numpy", "ndarray"), _t(_i(3)), _s("O"))
    + b"R",
    "short-data": _g("numpy._core.multiarray", "_reconstruct")
    + _t(_g("numpy", "ndarray"), _t(_i(0)), b"C\x01b")
    + b"R"
    + _t(_i(1), _t(_i(1000)), _dtype("f4"), b"\x89", b"C\x04AAAA")
    + b"b",
    # a global that torch's module __getattr__ would import (torch._dynamo) or call
    "torch-lazy-module": _g("torch", "_dynamo"),
}


@pytest.mark.parametrize("name", sorted(NUMPY_ATTACKS))
def test_numpy_and_torch_globals_cannot_reach_memory_or_imports(tmp_path: Path, name: str) -> None:
    before = set(sys.modules)
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(_raw(NUMPY_ATTACKS[name]))
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        safe_load(path, allowed_modules=[])
    assert not {m for m in set(sys.modules) - before if m.startswith("torch._")}


def test_a_plain_dtype_with_its_byte_order_loads(tmp_path: Path) -> None:
    for order in "<>":
        path = tmp_path / f"d{order}.pkl"
        data = pickle.dumps(np.arange(3, dtype=f"{order}i4"), protocol=2)
        path.write_bytes(data)
        loaded = safe_load(path, allowed_modules=[])
        assert loaded.dtype == pickle.loads(data).dtype and loaded.tolist() == [0, 1, 2]


def test_hooks_filled_after_build_through_the_memo_are_refused(tmp_path: Path) -> None:
    """An empty OrderedDict passes BUILD as _forward_hooks, then a SETITEM fills it via the memo."""
    module_state = (
        b"}("
        + _s("training")
        + b"\x89"
        + _s("_parameters")
        + b"}"
        + _s("_buffers")
        + b"}"
        + _s("_modules")
        + b"}"
    )
    body = (
        _g("collections", "OrderedDict") + b")Rq\x010"  # D, memo 1
        + _g("torch.nn.modules.linear", "Identity") + b")\x81q\x02"
        + module_state + _s("_forward_hooks") + b"h\x01ub0"  # Identity with _forward_hooks = D
        + b"h\x01" + _i(0) + _g("torch.nn.modules.module", "Module") + b")\x81" + module_state + b"ub" + b"s0"
        + b"}" + _s("model") + b"h\x02s"
    )  # fmt: skip
    path = tmp_path / "hooks.pkl"
    path.write_bytes(_raw(body))
    with pytest.raises(UnsafeCheckpointError, match="_forward_hooks"):
        safe_load(path, allowed_modules=["torch.nn"])


def test_a_module_created_but_never_built_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unbuilt.pkl"
    path.write_bytes(_raw(b"}" + _s("m") + _g("torch.nn.modules.linear", "Identity") + b")\x81s"))
    with pytest.raises(UnsafeCheckpointError, match="never filled"):
        safe_load(path, allowed_modules=["torch.nn"])


@pytest.mark.filterwarnings("ignore:`torch.jit.s:FutureWarning")
def test_torchscript_archives_are_refused_before_any_of_their_code_runs(tmp_path: Path) -> None:
    """torch.load hands a zip with TorchScript records to torch.jit.load, which runs its code."""
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        safe_load(path, allowed_modules=["torch.nn"])


def _tar(members: list[tarfile.TarInfo], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="latin1") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"\0" * member.size))
    return buffer.getvalue()


def test_tar_files_are_refused_even_when_they_start_like_a_legacy_checkpoint(tmp_path: Path) -> None:
    """A member named by torch's pickled magic number made the file look legacy; torch then
    extracted the tar (with a symlink member) into a temporary folder."""
    magic = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2).decode("latin1")
    link = tarfile.TarInfo("storages")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "outside.pkl")
    path = tmp_path / "polyglot.pt"
    path.write_bytes(_tar([tarfile.TarInfo(magic), link]))
    with pytest.raises(UnsafeCheckpointError, match="tar format"):
        safe_load(path, allowed_modules=[])
    broken = tarfile.TarInfo("x")  # a PAX header tarfile.is_tarfile raises ValueError on
    broken.pax_headers = {"GNU.sparse.map": "not,numbers", "GNU.sparse.size": "1"}
    path.write_bytes(_tar([broken], tarfile.PAX_FORMAT))
    with pytest.raises(KitError):
        safe_load(path, allowed_modules=[])


def test_a_refusal_message_stays_short_for_self_referencing_arguments(tmp_path: Path) -> None:
    """25 levels of lists, each holding ten memo references to the one below: repr is 10**25 long."""
    body = b"]q\x00"
    for level in range(1, 26):
        body += b"](" + (b"h" + bytes([level - 1])) * 10 + b"eq" + bytes([level])
    path = tmp_path / "laughs.pkl"
    path.write_bytes(_raw(body + b"0" + _g("torch", "Size") + _t(b"h\x19") + b"R"))
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(path, allowed_modules=[])
    assert len(str(info.value)) < 2000


def test_state_dicts_keep_their_metadata(tmp_path: Path) -> None:
    """model.state_dict() is an OrderedDict with a _metadata attribute (a BUILD torch.save writes)."""
    state = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).state_dict()
    path = tmp_path / "sd.pth"
    torch.save({"model": state, "iteration": 3}, path)
    loaded = safe_load(path, allowed_modules=[])["model"]
    assert loaded._metadata == state._metadata and list(loaded) == list(state)  # type: ignore[attr-defined]
    nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).load_state_dict(loaded)


def test_whole_torch_nn_models_with_torch_made_weak_references_load(tmp_path: Path) -> None:
    """An LSTM's __setstate__ makes weak references to its flat weights (callable, torch's own)."""
    model = nn.ModuleDict({"lstm": nn.LSTM(2, 3), "conv": nn.Conv2d(1, 1, 1)})
    path = tmp_path / "m.pt"
    torch.save(model, path)
    loaded = safe_load(path, allowed_modules=["torch.nn"])
    assert loaded["lstm"](torch.zeros(1, 1, 2))[0].shape == (1, 1, 3)


def test_zero_stride_views_are_refused(tmp_path: Path) -> None:
    """A few bytes of storage viewed as a huge tensor: .float() would allocate all of it."""
    path = tmp_path / "expanded.pt"
    torch.save({"w": torch.zeros(1).expand(1000)}, path)
    with pytest.raises(UnsafeCheckpointError, match="_rebuild_tensor_v2"):
        safe_load(path, allowed_modules=[])


# ---------------------------------------------------------------- bounds: nesting and memory


@pytest.mark.parametrize("depth", [99, 100, 101])
def test_tuples_nest_up_to_the_bound(tmp_path: Path, depth: int) -> None:
    """Tuples nested ``depth`` deep (the corpus hashes deeper ones as dict keys and set members)."""
    path = hostile.write(tmp_path / "t.pkl", hostile.raw(b")" + b"\x85" * (depth - 1)))
    if depth <= 100:
        loaded = safe_load(path, allowed_modules=[])
        assert hash(loaded) and len(loaded) == 1
    else:
        with pytest.raises(CheckpointError, match="tuples nested more than 100 deep"):
            safe_load(path, allowed_modules=[])


@pytest.mark.parametrize("depth", [100, 101])
def test_containers_and_modules_nest_up_to_the_bound(tmp_path: Path, depth: int) -> None:
    """Counted through dicts, lists and modules alike (a module's attributes are one level)."""
    inner: Any = [1]
    for level in range(depth - 1):
        if level % 3 == 1:
            module = nn.Sequential()
            module.extra = inner  # in the module's __dict__: one level below it
            inner = module
        else:
            inner = {"k": inner} if level % 3 == 0 else [inner]
    path = tmp_path / "deep.pt"
    torch.save(inner, path)
    if depth <= 100:
        safe_load(path, allowed_modules=["torch.nn"])
    else:
        with pytest.raises(CheckpointError, match="nested more than 100 deep"):
            safe_load(path, allowed_modules=["torch.nn"])


def test_shared_and_self_referencing_containers_are_measured_once(tmp_path: Path) -> None:
    """A list holding itself (repr prints [...]) and a diamond of lists shared 50 levels deep
    (2**50 paths) load: each object is measured once."""
    loop: list[Any] = [1]
    loop.append(loop)
    diamond: list[Any] = [0]
    for _ in range(50):
        diamond = [diamond, diamond]
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"loop": loop, "diamond": diamond}, protocol=2))
    loaded = safe_load(path, allowed_modules=[])
    assert loaded["loop"][1] is loaded["loop"] and loaded["diamond"][0] is loaded["diamond"][1]


def test_views_torch_saves_load(tmp_path: Path) -> None:
    """Slices, transposes, empty tensors, a model and its state_dict sharing storages."""
    base = torch.arange(12.0)
    model = nn.Linear(3, 2)
    tensors = {"slice": base[2:7], "t": base.view(3, 4).t(), "empty": base[12:], "scalar": base[5]}
    torch.save({**tensors, "model": model, "sd": model.state_dict()}, tmp_path / "views.pt")
    torch.save({**tensors}, tmp_path / "views.legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("views.pt", "views.legacy.pt"):
        loaded = safe_load(tmp_path / name, allowed_modules=["torch.nn"])
        for key, value in tensors.items():
            assert torch.equal(loaded[key], value), (name, key)
    assert loaded["slice"].untyped_storage().data_ptr() == loaded["t"].untyped_storage().data_ptr()


def test_views_within_the_budget_load_and_one_more_is_refused(tmp_path: Path) -> None:
    """The budget is 4x the file plus 16 MiB of tensors: views of one storage count each."""
    storage = hostile.tensor("0", 1 << 18, size=[1 << 18], stride=[1], memo=0)  # 1 MiB
    view = hostile.g("torch._utils", "_rebuild_tensor_v2")
    view += (
        hostile.t(b"h\x00", hostile.i(0), hostile.ints([1 << 18]), hostile.ints([1]), b"\x89", b"}") + b"R"
    )
    for count, refused in ((18, False), (30, True)):  # 1 MiB file: 4 + 16 MiB, 1 MiB a view
        data = hostile.torch_zip(
            hostile.raw(b"](" + storage + view * (count - 1) + b"e"), {"0": b"\0" * (1 << 20)}
        )
        path = hostile.write(tmp_path / f"{count}.pt", data)
        if refused:
            with pytest.raises(CheckpointError, match="more than 4x its"):
                safe_load(path, allowed_modules=[])
        else:
            assert len(safe_load(path, allowed_modules=[])) == count


LEGACY_ONE = hostile.raw(hostile.dict_of(w=hostile.floats(4, legacy=True), pad=hostile.s("x" * 100)))


@pytest.mark.parametrize(
    ("keys", "storages", "message"),
    [
        ([], [], "storages 0 are declared but never filled"),
        (["0"], [(3, b"\0" * 12)], "declared as 16 bytes the file does not hold"),
        (["0"], [(4, b"\0" * 8)], "declared as 16 bytes the file does not hold"),
        (["0", "9"], [(4, b"\0" * 16)], "does not name the declared ones"),
    ],
    ids=["unfilled", "other-count", "short", "unknown-key"],
)
def test_legacy_storages_must_be_filled_from_the_file(
    tmp_path: Path, keys: list[str], storages: list[tuple[int, bytes]], message: str
) -> None:
    """A storage the file declares but does not fill would hold uninitialized heap memory."""
    path = hostile.write(tmp_path / "legacy.pt", hostile.legacy(LEGACY_ONE, keys, storages))
    with pytest.raises(CheckpointError, match=message):
        safe_load(path, allowed_modules=[])
    good = hostile.write(
        tmp_path / "good.pt", hostile.legacy(LEGACY_ONE, ["0"], [(4, struct.pack("<4f", 1, 2, 3, 4))])
    )
    assert safe_load(good, allowed_modules=[])["w"].tolist() == [1, 2, 3, 4]


def test_a_module_whose_submodules_are_not_modules_is_refused(tmp_path: Path) -> None:
    """model.float() walks _modules, _parameters and _buffers: an int there fails after the load."""
    for key, value in (
        ("_modules", {"0": 5}),
        ("_parameters", {"w": [1]}),
        ("_buffers", {1: torch.zeros(1)}),
    ):
        model = nn.Sequential(nn.Identity())
        vars(model)[key] = value
        path = tmp_path / "odd.pt"
        torch.save({"model": model}, path)
        with pytest.raises(CheckpointError, match=rf"Sequential\.{key} holds"):
            safe_load(path, allowed_modules=["torch.nn"])


def test_a_storage_record_of_another_size_is_refused(tmp_path: Path) -> None:
    data = hostile.torch_zip(hostile.raw(hostile.dict_of(w=hostile.floats(8))), {"0": b"\0" * 64})
    with pytest.raises(CheckpointError, match="declared as 32 bytes but the archive holds 64 bytes"):
        safe_load(hostile.write(tmp_path / "long.pt", data), allowed_modules=[])
    data = hostile.torch_zip(hostile.raw(hostile.dict_of(w=hostile.floats(8))), {})
    with pytest.raises(CheckpointError, match="holds no record data/0"):
        safe_load(hostile.write(tmp_path / "none.pt", data), allowed_modules=[])


@pytest.mark.parametrize(
    "opcode", [b"\x8e", b"\x8d", b"\x96"], ids=["BINBYTES8", "BINUNICODE8", "BYTEARRAY8"]
)
def test_a_declared_length_is_not_allocated_before_it_is_read(tmp_path: Path, opcode: bytes) -> None:
    """A file's reader allocated the length an opcode declares (BYTEARRAY8: zero-filled, so a
    12-byte file took 2 GiB of RSS); the loader reads what the file holds and finds it short."""
    path = hostile.write(tmp_path / "long.pkl", b"\x80\x05" + opcode + struct.pack("<Q", 1 << 60) + b"abc.")
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        safe_load(path, allowed_modules=[])
    assert not isinstance(info.value.__cause__, MemoryError), info.value.__cause__


@pytest.mark.parametrize(("offset", "size", "refused"), [(1, 2, False), (3, 2, True), (0, 5, True)])
def test_legacy_storage_views_stay_inside_their_storage(
    tmp_path: Path, offset: int, size: int, refused: bool
) -> None:
    """Files of torch < 1.0 name a view (key, offset, size) of a storage in its persistent id."""
    view = hostile.t(hostile.s("v"), hostile.i(offset), hostile.i(size))
    storage = hostile.g("torch", "FloatStorage")
    pid = hostile.t(hostile.s("storage"), storage, hostile.s("0"), hostile.s("cpu"), hostile.i(4), view)
    rebuild = hostile.g("torch._utils", "_rebuild_tensor_v2")
    args = hostile.t(pid + b"Q", hostile.i(0), hostile.ints([size]), hostile.ints([1]), b"\x89", b"}")
    main = hostile.raw(hostile.dict_of(w=rebuild + args + b"R", pad=hostile.s("x" * 64)))
    data = hostile.legacy(main, ["0"], [(4, struct.pack("<4f", 1, 2, 3, 4))])
    path = hostile.write(tmp_path / "view.pt", data)
    if refused:
        with pytest.raises(CheckpointError, match="a storage view .* outside its storage of 16 bytes"):
            safe_load(path, allowed_modules=[])
    else:
        assert safe_load(path, allowed_modules=[])["w"].tolist() == [2.0, 3.0]


NAMESPACE = _g("ultralytics.utils", "IterableSimpleNamespace")


def test_an_ultralytics_settings_namespace_is_rebuilt_as_plain_data(tmp_path: Path) -> None:
    """As the ultralytics trainer pickles its arguments: REDUCE with no arguments, BUILD with a dict."""
    path = tmp_path / "args.pt"
    path.write_bytes(
        _raw(NAMESPACE + b")R}(" + _s("imgsz") + hostile.i(640) + _s("model") + _s("y.yaml") + b"ub")
    )
    loaded = safe_load(path, allowed_modules=[])
    assert type(loaded) is safeload.Namespace and loaded == {"imgsz": 640, "model": "y.yaml"}


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        (NAMESPACE + _t(_s("x")) + b"R", "calls ultralytics.utils.IterableSimpleNamespace with arguments"),
        (NAMESPACE + b")R}(" + hostile.i(1) + _s("v") + b"ub", "BUILD of a settings namespace"),
        (
            NAMESPACE + b")R}(" + _s("a") + _s("v") + b"ub}(" + _s("b") + _s("w") + b"ub",
            "BUILD of a settings namespace",
        ),
        (NAMESPACE + b")R" + _t(_s("a")) + b"b", "BUILD of a settings namespace"),
    ],
    ids=["arguments", "non-string key", "built twice", "state not a dict"],
)
def test_a_settings_namespace_is_refused_when_not_built_as_pickled(
    tmp_path: Path, body: bytes, refusal: str
) -> None:
    path = tmp_path / "args.pt"
    path.write_bytes(_raw(body))
    with pytest.raises(KitError, match=refusal):
        safe_load(path, allowed_modules=[])
