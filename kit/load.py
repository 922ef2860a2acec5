"""Safe checkpoint loading: unpickle only the classes a model checkpoint legitimately needs.

A checkpoint is a pickle, and unpickling can call any function named in the file. We load with
``torch.load(weights_only=True)`` and allow, on top of torch's own safe set, exactly:

* classes (never functions) defined in modules under the caller's ``allowed_modules`` prefixes,
  e.g. ``["models", "utils", "torch.nn"]`` for a whole-model YOLO checkpoint; functions are refused
  because calling one with arguments chosen by the file (``REDUCE``) is how pickles run commands;
* numpy arrays, dtypes and scalars, the set torch's documentation marks as safe.

Anything else is refused with :class:`UnsafeCheckpointError` listing what the file wants, unless
the user says the file is trusted (``trust=True``, the CLI's ``--trust-checkpoint``). Plain pickle
files (detectron2 model-zoo ``.pkl``: dicts of numpy arrays) go through the same allowlist.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import pickle
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from kit.errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

PathLike = Union[str, Path]
MapLocation = Union[str, torch.device, None]

# Never allowed, whatever the caller passes: modules whose classes exist to run code or touch the OS.
DENIED_MODULES = (
    *("builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy"),
    *("pickle", "ctypes", "socket", "pty", "code", "codeop", "webbrowser"),
)

# Containers a plain pickle needs (torch allows these by default too); _codecs.encode rebuilds bytes.
PLAIN_PICKLE_GLOBALS: dict[str, Any] = {
    "_codecs.encode": codecs.encode,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.bytearray": bytearray,
    "builtins.complex": complex,
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": collections.Counter,
}

TRUST_HINT = "pass --trust-checkpoint if you trust this file (only then: loading it may run code)"
_LEGACY_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_MAX_LEGACY_ROUNDS = 200


def safe_load(
    path: PathLike,
    *,
    allowed_modules: Sequence[str],
    trust: bool = False,
    map_location: MapLocation = "cpu",
) -> Any:
    """Load a ``torch.save`` checkpoint (zip or legacy) or a plain pickle without running its code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint {str(p)!r} does not exist; pass the weights file with --weights PATH "
            "(or WEIGHTS=path with make)"
        )
    prefixes = _check_prefixes(allowed_modules)
    is_zip = zipfile.is_zipfile(p)
    if is_zip or _is_legacy_torch(p):
        if trust:
            return torch.load(p, map_location=map_location, weights_only=False)
        if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
            found = torch.__version__
            raise CheckpointError(f"safe loading needs torch >= 2.5, found {found}; {TRUST_HINT}")
        return (_load_zip if is_zip else _load_legacy)(p, prefixes, map_location)
    if trust:
        with p.open("rb") as f:
            return pickle.load(f, encoding="latin1")  # the user vouched for this file
    return _load_plain_pickle(p, prefixes)


def allowed_globals(names: Iterable[str], *, allowed_modules: Sequence[str]) -> dict[str, Any]:
    """Resolve pickle global names to objects; raise UnsafeCheckpointError naming every refused one."""
    prefixes = _check_prefixes(allowed_modules)
    resolved, refused = _vet(names, prefixes)
    if refused:
        raise UnsafeCheckpointError(_refusal("the checkpoint", refused, prefixes))
    return resolved


def _load_zip(p: Path, prefixes: tuple[str, ...], map_location: MapLocation) -> Any:
    try:
        wanted = torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {e}") from e
    resolved, refused = _vet(wanted, prefixes)
    if refused:
        raise UnsafeCheckpointError(_refusal(str(p), refused, prefixes))
    return _weights_only_load(p, resolved, map_location)


def _load_legacy(p: Path, prefixes: tuple[str, ...], map_location: MapLocation) -> Any:
    """Pre-1.6 format: torch cannot list its globals up front, so allow them one refusal at a time."""
    resolved: dict[str, Any] = {}
    for _ in range(_MAX_LEGACY_ROUNDS):
        try:
            return _weights_only_load(p, resolved, map_location)
        except UnsafeCheckpointError as e:
            found = _LEGACY_GLOBAL.search(str(e))
            if found is None and "persistent_load" in str(e):
                raise UnsafeCheckpointError(
                    f"refusing to load {str(p)!r}: a pre-1.6 torch checkpoint of whole model objects "
                    "stores their source code, which torch cannot load with weights_only. Re-save it "
                    f"with a current torch (torch.save of the loaded object), or {TRUST_HINT}"
                ) from e
            if found is None:
                raise
            name = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
            more, refused = _vet([name], prefixes)
            if name in resolved:
                refused = {name: "allowed, yet torch still refuses it"}
            if refused:
                raise UnsafeCheckpointError(_refusal(str(p), refused, prefixes)) from e
            resolved.update(more)
    raise UnsafeCheckpointError(f"checkpoint {str(p)!r} needs too many globals; {TRUST_HINT}")


def _weights_only_load(p: Path, resolved: dict[str, Any], map_location: MapLocation) -> Any:
    # numpy dtype classes are never named in the file (an unpickled np.dtype *is* one), yet torch
    # needs them allowed to finish building the dtype: always pass the whole numpy set.
    allowed = {**_numpy_globals(), **resolved}
    with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
        try:
            return torch.load(p, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            # A global pushed dynamically (not visible to the static scan) or a refused call.
            raise UnsafeCheckpointError(f"refusing to load {str(p)!r}: {e}\n{TRUST_HINT}") from e
        except (RuntimeError, EOFError) as e:
            raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {e}") from e


class _AllowlistUnpickler(pickle.Unpickler):
    """A plain-pickle reader whose only globals are the vetted ones (Python docs: Restricting Globals)."""

    def __init__(self, file: Any, prefixes: tuple[str, ...]) -> None:
        super().__init__(file, encoding="latin1")  # detectron2's .pkl files come from Python 2
        self.prefixes = prefixes

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        resolved, refused = _vet([full], self.prefixes)
        if refused:
            raise UnsafeCheckpointError(_refusal("the pickle", refused, self.prefixes))
        return resolved[full]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"persistent id {pid!r} is not supported in a plain pickle")


def _load_plain_pickle(p: Path, prefixes: tuple[str, ...]) -> Any:
    with p.open("rb") as f:
        try:
            return _AllowlistUnpickler(f, prefixes).load()
        except UnsafeCheckpointError as e:
            raise UnsafeCheckpointError(f"refusing to load {str(p)!r}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(
                f"cannot read checkpoint {str(p)!r}: not a torch checkpoint or pickle ({e})"
            ) from e


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError("no globals while probing the format")


def _is_legacy_torch(p: Path) -> bool:
    """Whether the file starts with torch's legacy magic number (a pickled int, no globals needed)."""
    with p.open("rb") as f:
        try:
            return bool(_NoGlobals(f).load() == torch.serialization.MAGIC_NUMBER)
        except Exception:  # any garbage: it is then not a legacy torch file, which is all we ask
            return False


def _vet(names: Iterable[str], prefixes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split global names into resolved allowed objects and refused names with the reason."""
    resolved: dict[str, Any] = {}
    refused: dict[str, str] = {}
    fixed = {**_numpy_globals(), **PLAIN_PICKLE_GLOBALS}
    for name in sorted(set(names)):
        if name in fixed:
            resolved[name] = fixed[name]
            continue
        obj, reason = _resolve_class(name, prefixes)
        if obj is None:
            refused[name] = reason
        else:
            resolved[name] = obj
    return resolved, refused


def _resolve_class(name: str, prefixes: tuple[str, ...]) -> tuple[Any, str]:
    """Import ``name`` if its module is under ``prefixes`` and it is a class defined exactly there."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module, qualname = ".".join(parts[:cut]), ".".join(parts[cut:])
        if not _under(module, prefixes) or _under(module, DENIED_MODULES):
            continue
        try:
            obj: Any = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and module.startswith(e.name) and e.name != module.split(".")[0]:
                continue  # ``module`` is really ``package.Class``: try a shorter module name
            return None, f"cannot import {module} ({e}); is the upstream checkout on sys.path?"
        for attr in qualname.split("."):
            obj = getattr(obj, attr, None)
        if obj is None:
            return None, f"module {module} has no attribute {qualname}"
        if not isinstance(obj, type):
            return None, "not a class (functions are never allowed)"
        if f"{obj.__module__}.{obj.__qualname__}" != name or _under(obj.__module__, DENIED_MODULES):
            return None, f"is really {obj.__module__}.{obj.__qualname__}, outside the allowlist"
        return obj, ""
    return None, "outside the allowed modules"


def _numpy_globals() -> dict[str, Any]:
    """numpy arrays, scalars and dtypes under both numpy 1 (numpy.core) and 2 (numpy._core) names."""
    multiarray = importlib.import_module(
        "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    )
    out: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[f"{core}.multiarray._reconstruct"] = multiarray._reconstruct
        out[f"{core}.multiarray.scalar"] = multiarray.scalar
    dtypes = getattr(np, "dtypes", None)
    for attr in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, attr)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            out[f"numpy.dtypes.{attr}"] = cls
    return out


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _check_prefixes(allowed_modules: Sequence[str]) -> tuple[str, ...]:
    if isinstance(allowed_modules, str):
        raise TypeError(
            f"allowed_modules must be a list of module prefixes, not the string {allowed_modules!r}"
        )
    prefixes = tuple(allowed_modules)
    bad = [m for m in prefixes if not m or m.strip(".") != m or m in DENIED_MODULES]
    if bad:
        raise ValueError(f"allowed_modules must be module names, none of {DENIED_MODULES}; got {bad}")
    return prefixes


def _refusal(what: str, refused: dict[str, str], prefixes: tuple[str, ...]) -> str:
    lines = "\n".join(f"  - {name}: {why}" for name, why in sorted(refused.items()))
    allowed = ", ".join(prefixes) or "none"
    return (
        f"refusing to load {what}: it needs Python objects outside the allowlist (classes under: "
        f"{allowed}; numpy arrays):\n{lines}\n{TRUST_HINT}"
    )
