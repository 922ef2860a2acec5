"""Safe checkpoint loading: whole-model checkpoints load with an allowlist; code-running pickles do not."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kit.errors import CheckpointError, CheckpointNotFoundError, KitError, UnsafeCheckpointError
from kit.load import allowed_globals, safe_load

# A stand-in for an upstream's own model package (yolov7's ``models``), created on sys.path.
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
        """,
    "kitfx_models/yolo.py": """
        import torch
        from torch import nn

        from kitfx_models.common import Conv


        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = nn.Sequential(Conv(3, 4), nn.Upsample(scale_factor=2), Conv(4, 2))
                self.names = ["cat", "dog"]
                self.yaml = {"nc": 2, "depth_multiple": 1.0}
                self.register_buffer("stride", torch.tensor([8.0, 16.0]))

            def forward(self, x):
                return self.model(x)
        """,
    "kitfx_other/__init__.py": """
        from torch import nn


        class Extra(nn.Module):
            pass
        """,
}


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
        for name in [m for m in sys.modules if m.startswith(("kitfx_models", "kitfx_other"))]:
            del sys.modules[name]


def _yolo_style_checkpoint() -> dict[str, Any]:
    from kitfx_models.yolo import Model  # type: ignore[import-not-found]

    torch.manual_seed(0)
    # The layout yolov7 train.py saves: the whole model object in half precision, numpy scalars.
    return {"epoch": -1, "best_fitness": np.float64(0.5), "model": Model().half(), "optimizer": None}


ALLOW = ["kitfx_models", "torch.nn"]


def test_whole_model_checkpoint_loads_with_the_allowlist(fixture_pkgs: Path, tmp_path: Path) -> None:
    ckpt = _yolo_style_checkpoint()
    path = tmp_path / "model.pt"
    torch.save(ckpt, path)
    loaded = safe_load(path, allowed_modules=ALLOW)
    model = loaded["model"]
    assert type(model).__module__ == "kitfx_models.yolo" and model.names == ["cat", "dog"]
    assert loaded["best_fitness"] == 0.5 and loaded["optimizer"] is None
    for (name, a), (_, b) in zip(ckpt["model"].state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert model.float().eval()(torch.zeros(1, 3, 4, 4)).shape == (1, 2, 8, 8)


def test_legacy_format_loads_allowed_classes(fixture_pkgs: Path, tmp_path: Path) -> None:
    from kitfx_models.common import Hyp  # type: ignore[import-not-found]

    path = tmp_path / "old.pt"
    ckpt = {"hyp": Hyp(), "sd": OrderedDict(w=torch.ones(2)), "arr": np.zeros(2), "best": np.float64(1)}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    loaded = safe_load(path, allowed_modules=ALLOW)
    assert type(loaded["hyp"]) is Hyp and loaded["hyp"].lr0 == 0.01 and loaded["best"] == 1.0
    with pytest.raises(UnsafeCheckpointError, match=r"kitfx_models\.common\.Hyp"):
        safe_load(path, allowed_modules=["torch.nn"])


def test_legacy_whole_model_checkpoint_says_what_to_do(fixture_pkgs: Path, tmp_path: Path) -> None:
    path = tmp_path / "old_model.pt"
    torch.save(_yolo_style_checkpoint(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="pre-1.6.*Re-save.*--trust-checkpoint"):
        safe_load(path, allowed_modules=ALLOW)
    assert type(safe_load(path, allowed_modules=ALLOW, trust=True)["model"]).__name__ == "Model"


def test_state_dict_and_numpy_load_without_any_allowed_modules(tmp_path: Path) -> None:
    state = OrderedDict(w=torch.arange(4.0), n=torch.tensor(3))
    path = tmp_path / "sd.pt"
    torch.save({"state_dict": state, "arr": np.arange(3, dtype=np.float32), "s": {1, 2}}, path)
    loaded = safe_load(path, allowed_modules=[])
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    np.testing.assert_array_equal(loaded["arr"], [0, 1, 2])
    assert loaded["s"] == {1, 2}


def test_classes_outside_the_allowlist_are_all_listed_and_trust_overrides(
    fixture_pkgs: Path, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    torch.save(_yolo_style_checkpoint(), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(path, allowed_modules=["torch.nn"])
    message = str(info.value)
    assert "kitfx_models.common.Conv" in message and "kitfx_models.yolo.Model" in message
    assert "--trust-checkpoint" in message and "model.pt" in message
    assert type(safe_load(path, allowed_modules=[], trust=True)["model"]).__name__ == "Model"


def test_prefixes_match_whole_module_names(fixture_pkgs: Path) -> None:
    assert allowed_globals(["kitfx_other.Extra"], allowed_modules=["kitfx_other"])
    with pytest.raises(UnsafeCheckpointError, match="kitfx_other.Extra"):
        allowed_globals(["kitfx_other.Extra"], allowed_modules=["kitfx_oth"])


class RunsCommand:
    """Pickles as ``os.system("touch <marker>")``: what a malicious checkpoint does on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_pickle_that_runs_a_command_is_refused(
    fixture_pkgs: Path, tmp_path: Path, zip_format: bool
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    ckpt = {"model": torch.zeros(2), "x": RunsCommand(marker)}
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|nt)\.system") as info:
        safe_load(path, allowed_modules=ALLOW)
    assert "--trust-checkpoint" in str(info.value)
    assert not marker.exists()


def test_denied_modules_cannot_be_allowed() -> None:
    with pytest.raises(ValueError, match="posix"):
        safe_load(__file__, allowed_modules=["posix"])
    with pytest.raises(TypeError, match="list of module"):
        safe_load(__file__, allowed_modules="torch.nn")


def _payload(module: str, name: str, marker: Path) -> bytes:
    """A protocol-2 pickle calling module.name("touch <marker>"), written opcode by opcode."""
    args = pickle.dumps((f"touch {marker}",), protocol=2)[2:-1]  # drop PROTO header and STOP
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + args + b"R."


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("kitfx_models.common", "os.system"),
        ("kitfx_models.common", "touch"),
        ("kitfx_models.common", "Path"),
        ("os", "system"),
    ],
    ids=["alias-through-allowed-module", "function-in-allowed-module", "class-imported-there", "plain"],
)
def test_crafted_globals_are_refused_in_plain_pickles(
    fixture_pkgs: Path, tmp_path: Path, module: str, name: str
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_payload(module, name, marker))
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        safe_load(path, allowed_modules=ALLOW)
    assert not marker.exists()


def test_crafted_alias_is_refused_in_a_torch_zip(fixture_pkgs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    clean, path = tmp_path / "clean.pt", tmp_path / "evil.pt"
    torch.save({"a": 1}, clean)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = _payload("kitfx_models.common", "os.system", marker)
            dst.writestr(info, data)
    with pytest.raises(UnsafeCheckpointError, match=r"kitfx_models\.common\.os\.system: not a class"):
        safe_load(path, allowed_modules=ALLOW)
    assert not marker.exists()


def test_detectron2_style_plain_pickle_of_numpy_arrays(tmp_path: Path) -> None:
    path = tmp_path / "model_final.pkl"
    weights = {"backbone.w": np.ones((2, 2), np.float32)}
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "Detectron"}, protocol=2))
    loaded = safe_load(path, allowed_modules=[])
    np.testing.assert_array_equal(loaded["model"]["backbone.w"], np.ones((2, 2)))
    assert loaded["__author__"] == "Detectron"


def test_missing_file_says_how_to_pass_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.pt.*--weights PATH.*WEIGHTS=path") as info:
        safe_load(tmp_path / "nope.pt", allowed_modules=[])
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, KitError)


def test_garbage_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        safe_load(path, allowed_modules=[])
