"""Safe checkpoint loading: rebuild what ``torch.save`` writes, and call nothing else.

A checkpoint is a pickle, and a pickle is a program: its ``REDUCE`` opcode calls any callable the
file names, with arguments the file chooses. torch's own ``weights_only`` loader cannot tell
rebuilding a module apart from *calling* its class, so admitting yolov7's ``models.yolo.Model``
there lets a file run ``Model(cfg)``, whose ``parse_model`` evaluates strings of ``cfg``.

This module reads checkpoints with its own unpickler (``pickle._Unpickler``, the pure-Python one,
with the opcodes that act on objects replaced), for torch's zip and legacy formats (through
``torch.load(pickle_module=...)``, which still reads the storages) and for plain pickles
(detectron2's model-zoo ``.pkl``). The rule, one for every upstream:

* A global is looked up **by name** and never imported because a file names it: classes come only
  from modules of the caller's explicit list (imported by us from that list, e.g. ``models.yolo``)
  or already imported under ``torch.nn.modules``; functions only from :data:`REBUILDERS`, a short
  list of pure rebuild functions (tensors, parameters, numpy arrays, ``OrderedDict``, ``set``...).
* An admitted class must be an ``nn.Module`` whose own code (outside torch) defines none of the
  hooks unpickling could run (``__new__``, ``__setstate__``, ``__reduce__``, ``__del__``, attribute
  hooks, ...), with a plain metaclass. It is created only as ``torch.save`` writes it: ``NEWOBJ``
  with no arguments (``cls.__new__(cls)``; protocols 0-1: ``copyreg._reconstructor(cls, object,
  None)``), then ``BUILD`` with a ``__dict__`` through ``nn.Module.__setstate__``; module hooks
  must be empty. Calling a class (``REDUCE``, ``INST``, ``OBJ``, ``NEWOBJ`` with arguments) is
  refused, and so is every other callable.
* Containers are filled only when they are plain lists, dicts and sets, numpy arrays never hold
  Python objects, and the loaded object holds no class, function or other callable besides
  modules, so nothing the file named can be called later.

A file may also be well-formed and still built to take the process down: nesting that overflows
the C stack when hashed or printed, or a few bytes that make gigabytes (a deflated zip record,
a tensor view far larger than its storage, a legacy storage the file declares but never fills).
Containers nest at most :data:`MAX_DEPTH` deep, zip records are stored as torch.save writes them,
every storage is exactly the bytes the file holds for it, every view fits inside its storage, and
the tensors, arrays and Python objects it makes stay within a small multiple of the file's size
(:class:`Limits`). Such a file raises :class:`CheckpointError` (trusting it would not help).

Anything else raises :class:`UnsafeCheckpointError`, naming the global and what the file does with
it, unless the user says the file is trusted (``trust=True``, the CLI's ``--trust-checkpoint``):
then ``torch.load(weights_only=False)`` or ``pickle.load`` runs, and with them any code in the file.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import importlib
import io
import itertools
import pickle
import pickletools
import reprlib
import stat
import struct
import sys
import tarfile
import types
import weakref
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Union

import numpy as np
import torch
from torch import nn

from kit.core.errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

PathLike = Union[str, Path]
MapLocation = Union[str, torch.device, None]

TRUST_HINT = (
    "pass --trust-checkpoint only if you trust this file: then it is loaded with full pickle and "
    "any code in it runs"
)

# Never admitted, whatever the caller lists: modules that exist to run code or touch the OS.
DENIED_MODULES = (
    *("builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy"),
    *("pickle", "ctypes", "socket", "pty", "code", "codeop", "webbrowser"),
)
TORCH_NN = "torch.nn"  # in allowed_modules: the classes of torch.nn.modules.*, already imported

# Hooks that unpickling or later use of the object could run; an admitted class's own code (any
# class of its MRO outside torch) must define none of them.
HOOKS = frozenset(
    {
        *("__new__", "__setstate__", "__reduce__", "__reduce_ex__", "__getstate__", "__init_subclass__"),
        *("__del__", "__getattr__", "__getattribute__", "__setattr__", "__delattr__", "__set_name__"),
        *("__hash__", "__eq__", "__class_getitem__", "__instancecheck__", "__subclasscheck__"),
    }
)


class _Global:
    """What a GLOBAL opcode pushes: a name and its object, usable only as the rule allows."""

    __slots__ = ("name", "obj", "kind")

    def __init__(self, name: str, obj: Any, kind: str) -> None:
        self.name, self.obj, self.kind = name, obj, kind  # kind: "class", "rebuild" or "type"

    @property
    def __name__(self) -> str:  # torch's legacy loader names a module class in a warning
        return self.name

    def __repr__(self) -> str:
        return self.name


def _multiarray() -> types.ModuleType:
    return importlib.import_module(
        "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    )


def _numeric() -> types.ModuleType:
    return importlib.import_module("numpy._core.numeric" if hasattr(np, "_core") else "numpy.core.numeric")


def _no_hooks(hooks: Any) -> bool:
    return isinstance(hooks, dict) and not hooks


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(type(v) is int for v in value)


PLAIN_KINDS = "biufc?SU"  # numbers, booleans, bytes and text: nothing that holds or views objects


def _plain_dtype(dtype: Any) -> bool:
    """A dtype of plain values: no Python objects, fields, subarrays or metadata (numpy trusts those)."""
    return (
        type(dtype) is not type
        and isinstance(dtype, np.dtype)
        and dtype.kind in PLAIN_KINDS
        and not dtype.hasobject
        and dtype.fields is None
        and dtype.subdtype is None
        and dtype.metadata is None
    )


def _plain_metadata(state: dict[str, Any]) -> bool:
    """A state_dict's _metadata: {prefix: {"version": int, ...}} of plain values."""
    metadata = state.get("_metadata", {})
    return isinstance(metadata, dict) and all(
        type(k) is str
        and isinstance(v, dict)
        and all(type(x) is str and type(y) in (int, bool, str) for x, y in v.items())
        for k, v in metadata.items()
    )


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for v in shape:
        n *= v
    return n


def _check_rebuild_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, metadata: Any = None
) -> bool:
    plain_metadata = metadata is None or (
        isinstance(metadata, dict) and all(type(k) is str and type(v) is bool for k, v in metadata.items())
    )
    return (
        isinstance(storage, torch.storage.TypedStorage)
        and type(offset) is int
        and _is_shape(size)
        and _is_shape(stride)
        and len(size) == len(stride)
        # a zero stride views one element many times: a huge tensor from a few bytes of file
        and all(n >= 0 and (st >= 1 or n <= 1) for n, st in zip(size, stride))
        and type(requires_grad) is bool
        and _no_hooks(hooks)
        and plain_metadata
    )


def _check_view(storage: Any, offset: int, size: Sequence[int], stride: Sequence[int]) -> None:
    """A view inside its storage, with no more elements than it: torch grows a storage to fit a
    view reaching past it, and a view of overlapping rows (size (n, n), stride (1, 1)) makes n*n
    elements of 2n as soon as anything copies it."""
    count, n = storage._size(), _numel(size)
    end = offset if n == 0 else offset + 1 + sum((k - 1) * st for k, st in zip(size, stride))
    if n > count or end > count or offset < 0:
        raise _Refused(
            f"a tensor of size {_short(tuple(size))}, stride {_short(tuple(stride))} at offset {offset} "
            f"{'has more elements than' if n > count else 'reaches past'} its storage of {count:,} elements"
        )


def _materialized(name: str, args: tuple[Any, ...]) -> int:
    """Bytes a rebuild makes that are not the file's own: views (each counted; a copy of the model,
    as attempt_load's .float(), makes them real), arrays of a buffer, bytearrays, encoded text."""
    if name == "torch._utils._rebuild_tensor_v2":
        _check_view(*args[:4])
        return _numel(args[2]) * torch._utils._element_size(args[0].dtype)
    if name.endswith("._frombuffer") or name in ("builtins.bytearray", "_codecs.encode"):
        return len(args[0]) if args else 0
    return 0


def _latin1(encoding: Any) -> bool:
    return encoding in ("latin1", "latin-1", "iso-8859-1")


# Pure rebuild functions a file may call (REDUCE), each with a check of its arguments: no hooks,
# no Python objects inside numpy arrays, no codec or module named by the file.
REBUILDERS: dict[str, tuple[Callable[[], Any], Callable[..., bool]]] = {
    "torch._utils._rebuild_tensor_v2": (lambda: torch._utils._rebuild_tensor_v2, _check_rebuild_tensor),
    "torch._utils._rebuild_parameter": (
        lambda: torch._utils._rebuild_parameter,
        lambda data, requires_grad, hooks: (
            isinstance(data, torch.Tensor) and type(requires_grad) is bool and _no_hooks(hooks)
        ),
    ),
    "torch.Size": (lambda: torch.Size, lambda *a: len(a) == 1 and _is_shape(a[0])),
    "torch.device": (
        lambda: torch.device,
        lambda *a: 1 <= len(a) <= 2 and type(a[0]) is str and all(type(v) is int for v in a[1:]),
    ),
    "torch.serialization._get_layout": (
        lambda: torch.serialization._get_layout,
        lambda *a: len(a) == 1 and type(a[0]) is str,
    ),
    "collections.OrderedDict": (lambda: collections.OrderedDict, lambda *a: not a),
    "builtins.set": (lambda: set, lambda *a: not a or (len(a) == 1 and type(a[0]) in (list, tuple))),
    "builtins.frozenset": (
        lambda: frozenset,
        lambda *a: not a or (len(a) == 1 and type(a[0]) in (list, tuple)),
    ),
    "builtins.bytearray": (
        lambda: bytearray,
        lambda *a: (
            not a or (type(a[0]) is bytes and len(a) == 1) or (type(a[0]) is str and _latin1(a[1:2] and a[1]))
        ),
    ),
    "builtins.complex": (lambda: complex, lambda *a: all(type(v) in (int, float) for v in a) and len(a) <= 2),
    "_codecs.encode": (
        lambda: codecs.encode,
        lambda *a: len(a) == 2 and type(a[0]) is str and _latin1(a[1]),
    ),
    "numpy.core.multiarray._reconstruct": (
        lambda: _multiarray()._reconstruct,
        # numpy pickles an empty int8 array, then BUILDs it with its real state
        lambda cls, shape, typecode: cls is np.ndarray and tuple(shape) == (0,) and typecode in (b"b", "b"),
    ),
    "numpy.core.multiarray.scalar": (
        lambda: _multiarray().scalar,
        lambda dtype, data: (
            _plain_dtype(dtype) and type(data) in (bytes, str) and len(data) == dtype.itemsize
        ),
    ),
    "numpy.core.numeric._frombuffer": (
        lambda: _numeric()._frombuffer,
        lambda buf, dtype, shape, order: (
            type(buf) in (bytes, bytearray)
            and _plain_dtype(dtype)
            and _is_shape(shape)
            and len(buf) == _numel(shape) * dtype.itemsize
            and order in ("C", "F")
        ),
    ),
    "numpy.dtype": (
        lambda: np.dtype,
        # copy=True (as numpy writes it): a new dtype, never one of numpy's shared singletons
        lambda spec, align, copy: type(spec) is str and _plain_dtype(np.dtype(spec)) and not align and copy,
    ),
}
for _old in [n for n in REBUILDERS if n.startswith("numpy.core.")]:  # numpy 2 pickles numpy._core
    REBUILDERS["numpy._core." + _old[len("numpy.core.") :]] = REBUILDERS[_old]


class Namespace(dict[str, Any]):
    """A ``SimpleNamespace`` of settings rebuilt as plain data (a dict of its attributes), never as
    the class the file names: the ultralytics trainer pickles its arguments as one
    (``ultralytics.utils.IterableSimpleNamespace``) inside the model of a checkpoint written
    during training."""


# Settings namespaces a file may hold (created empty by REDUCE, filled by BUILD with str keys).
NAMESPACES = ("ultralytics.utils.IterableSimpleNamespace",)
for _name in NAMESPACES:
    REBUILDERS[_name] = (lambda: Namespace, lambda *a: not a)

# Globals that are values, not callables: usable only where a rebuild expects them.
TYPE_GLOBALS: dict[str, Callable[[], Any]] = {
    "numpy.ndarray": lambda: np.ndarray,
    "builtins.object": lambda: object,
    "torch.UntypedStorage": lambda: torch.UntypedStorage,  # storage type of an untyped storage
    "torch.storage.UntypedStorage": lambda: torch.UntypedStorage,
}

# Bounds of what a file may build (see Limits). Genuine checkpoints nest under 20 levels (dict,
# model, its _modules, a layer, its _parameters, ...); 100 keeps every recursive walk later on
# (repr, deepcopy, nn.Module.apply, hashing a tuple) far from Python's limit of 1000 frames.
MAX_DEPTH = 100
BUDGET_FACTOR = 4  # bytes of tensors, arrays and Python objects per byte of the file
BUDGET_SLACK = 16 << 20


class _Refused(CheckpointError):
    """A file beyond the loader's bounds; safe_load adds the path (trust would not help)."""


class Limits:
    """What one file may make: tensors, numpy arrays and Python objects of at most
    ``BUDGET_FACTOR * size + BUDGET_SLACK`` bytes in all (each view counted as its own elements,
    a memo-shared object once), and storages that are exactly bytes of the file."""

    def __init__(self, size: int, kind: str, records: dict[str, int] | None = None) -> None:
        self.size, self.kind = size, kind
        self.budget = BUDGET_FACTOR * size + BUDGET_SLACK
        self.used = 0
        self.records = records or {}  # zip: storage key -> bytes of its record
        self.declared: dict[str, tuple[int, int]] = {}  # legacy: root storage key -> bytes, element size
        self.main_loaded = False  # legacy: the next pickle is the list of storage keys

    def charge(self, nbytes: int, what: str | Callable[[], str]) -> None:
        """Count ``nbytes`` more; past the budget, refuse naming ``what`` made the last of them."""
        self.used += nbytes
        if self.used > self.budget:
            raise _Refused(
                f"it makes {self.used:,} bytes of tensors, arrays and Python objects (the last of them: "
                f"{what if isinstance(what, str) else what()}), more than {BUDGET_FACTOR}x its "
                f"{self.size:,} bytes on disk plus {BUDGET_SLACK >> 20} MiB; a genuine checkpoint is mostly "
                "its tensors' bytes"
            )

    def storage(self, pid: tuple[Any, ...]) -> None:
        """A persistent id torch's reader is about to allocate for: its size must be the file's."""
        fields = (len(pid) == 5) if self.kind == "zip" else (len(pid) == 6)
        if not fields or pid[0] not in ("storage", b"storage"):
            raise _Refused(f"a persistent id {_short(pid)} that torch.save never writes")
        key, numel, dtype = pid[2], pid[4], getattr(pid[1], "dtype", torch.uint8)
        if not (type(key) is str and type(numel) is int and numel >= 0 and isinstance(dtype, torch.dtype)):
            raise _Refused(f"a storage {_short(pid[1:5])} with a key, size or type torch.save never writes")
        nbytes = numel * torch._utils._element_size(dtype)
        if self.kind == "zip":
            if self.records.get(key) != nbytes:
                held = self.records.get(key)
                raise _Refused(
                    f"storage {key!r} is declared as {nbytes:,} bytes but the archive holds "
                    f"{'no record data/' + key if held is None else f'{held:,} bytes'} for it"
                )
        elif key not in self.declared:
            self.declared[key] = (nbytes, torch._utils._element_size(dtype))
            total = sum(n for n, _ in self.declared.values())
            if total + 8 * len(self.declared) > self.size:
                raise _Refused(
                    f"its storages are declared as {total:,} bytes, more than the file's {self.size:,} "
                    "bytes: they would hold uninitialized memory"
                )
        if self.kind != "zip" and pid[5] is not None:
            view = pid[5]
            root = self.declared[key][0]
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and type(view[0]) is str
                and all(type(v) is int and v >= 0 for v in view[1:])
                and (view[1] + view[2]) * torch._utils._element_size(dtype) <= root
            ):
                raise _Refused(f"a storage view {_short(view)} outside its storage of {root:,} bytes")

    def storage_keys(self, keys: Any, file: Any) -> None:
        """Legacy: the storages the file fills, each an element count and its bytes after the list.
        A storage declared but not filled would keep uninitialized memory."""
        if not isinstance(keys, list) or not all(type(k) is str and k in self.declared for k in keys):
            raise _Refused(f"a list of storages {_short(keys)} that does not name the declared ones")
        missing = sorted(set(self.declared) - set(keys))
        if missing:
            raise _Refused(
                f"storages {', '.join(missing[:5])} are declared but never filled: they would hold "
                "uninitialized memory"
            )
        data, at = file.getbuffer(), file.tell()
        try:
            for key in keys:
                nbytes, size = self.declared[key]
                count = int.from_bytes(data[at : at + 8], "little", signed=True)
                at += 8 + nbytes
                if at > len(data) or count * size != nbytes:
                    raise _Refused(f"storage {key!r} is declared as {nbytes:,} bytes the file does not hold")
        finally:
            del data  # a BytesIO cannot grow while a view of its buffer lives


MAX_CHECKPOINT_BYTES = 16 * 2**30  # far above any detector's checkpoint; loading takes about its size


def check_checkpoint_file(path: PathLike, *, what: str = "checkpoint") -> Path:
    """``path`` when it is a regular file of a checkpoint's size, else the refusal that says why: a
    missing file, a FIFO (reading it would block), a device such as /dev/zero, a folder, or a file
    (a sparse one, say) larger than any checkpoint, which would be read into memory."""
    p = Path(path)
    try:
        info = p.stat()
    except (OSError, ValueError):  # missing, a NUL in the name, a name too long
        raise CheckpointNotFoundError(
            f"{what} file not found: {str(p)!r}; pass an existing checkpoint with --weights PATH "
            "(or WEIGHTS=PATH with make cam)"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, a device or a socket)"
        )
        raise CheckpointError(
            f"{what} {str(p)!r} is {kind}; pass the checkpoint file itself with --weights PATH"
        )
    if info.st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{what} {str(p)!r} is {info.st_size:,} bytes, larger than any detector checkpoint "
            f"({MAX_CHECKPOINT_BYTES // 2**30} GiB at most); it was not read"
        )
    return p


def _refuse_format(kind: str) -> None:
    """Refuse the formats that cannot be read without running their code."""
    if kind == "tar":
        _refuse(
            "a torch checkpoint in the pre-0.4 tar format is not read safely; re-save it with a current torch"
        )
    if kind == "torchscript":
        _refuse(
            "it is a TorchScript archive (torch.jit.save), whose code runs when it is loaded; "
            "this entry point needs a checkpoint written by torch.save"
        )


def safe_load(
    path: PathLike,
    *,
    allowed_modules: Sequence[str],
    trust: bool = False,
    map_location: MapLocation = "cpu",
) -> Any:
    """Load a ``torch.save`` checkpoint (zip or legacy) or a plain pickle without running its code.

    ``allowed_modules`` names the modules whose ``nn.Module`` classes the file may rebuild: exact
    module names of the upstream's model code (``models.yolo``, imported here if not yet), and
    ``torch.nn`` for torch's layers. ``trust=True`` loads with full pickle (the file's code runs).
    """
    p = check_checkpoint_file(path)
    policy = Policy(allowed_modules)
    kind = "pickle"
    try:
        kind = _format(p)
        if trust:
            if kind == "pickle":
                with p.open("rb") as f:
                    return pickle.load(f, encoding="latin1")  # the user vouched for this file
            return torch.load(p, map_location=map_location, weights_only=False)
        _refuse_format(kind)
        limits = Limits(p.stat().st_size, kind, _zip_records(p) if kind == "zip" else None)
        if kind == "pickle":
            # From memory: a file's reader allocates the length an opcode declares (up to 2**64)
            # before it finds the file shorter; a buffer returns what there is.
            data = io.BytesIO(p.read_bytes())
            loaded = RestrictedUnpickler(data, policy=policy, limits=limits, encoding="latin1").load()
        else:
            # From memory: torch reads a legacy file it is handed as a path through its pre-0.4
            # tar reader first (which extracts members); a buffer goes straight to the pickles.
            source: Any = p if kind == "zip" else io.BytesIO(p.read_bytes())
            loaded = torch.load(
                source, map_location=map_location, weights_only=False, pickle_module=policy.module(limits)
            )
        _check_depth(loaded)
        _check_loaded(loaded)
        return loaded
    except _Refused as e:
        raise CheckpointError(f"refusing to load {str(p)!r}: {e}") from None
    except UnsafeCheckpointError as e:
        wanted = _refused_globals(p, kind, policy)
        listed = "".join(f"\n  - {name}: {why}" for name, why in wanted.items() if name not in str(e))
        raise UnsafeCheckpointError(f"refusing to load {str(p)!r}: {e}{listed}\n{TRUST_HINT}") from None
    except CheckpointError:
        raise
    except Exception as e:  # a corrupt file: any error of the unpickler or of torch's reader
        raise CheckpointError(
            f"cannot read checkpoint {str(p)!r}: not a torch checkpoint or pickle ({type(e).__name__}: {e})"
        ) from e


class Policy:
    """Which globals a file may name, decided by name only."""

    def __init__(self, allowed_modules: Sequence[str]) -> None:
        if isinstance(allowed_modules, str):
            raise TypeError(
                f"allowed_modules must be a list of module names, not the string {allowed_modules!r}"
            )
        names = tuple(allowed_modules)
        bad = [m for m in names if not m or m.strip(".") != m or _under(m, DENIED_MODULES)]
        if bad:
            raise ValueError(f"allowed_modules must be module names outside {DENIED_MODULES}; got {bad}")
        self.torch_nn = TORCH_NN in names
        self.modules = tuple(m for m in names if m != TORCH_NN)
        for module in self.modules:  # our own list, never a name read from a file
            importlib.import_module(module)

    def resolve(self, module: str, name: str) -> Any:
        """The object a GLOBAL names, wrapped; refused names raise UnsafeCheckpointError."""
        full = f"{module}.{name}"
        if full in REBUILDERS:
            return _Global(full, REBUILDERS[full][0](), "rebuild")
        if full in TYPE_GLOBALS:
            return _Global(full, TYPE_GLOBALS[full](), "type")
        value = vars(torch).get(name) if module == "torch" else None  # vars: no lazy imports
        if isinstance(value, torch.dtype):
            return value  # a dtype is a value (torch.float16), nothing to call
        cls = self.admitted_class(module, name)
        return _Global(full, cls, "class")

    def admitted_class(self, module: str, name: str) -> type:
        full = f"{module}.{name}"
        if self.torch_nn and module.startswith("torch.nn.modules."):
            source = sys.modules.get(module)  # torch imports all of torch.nn.modules itself
        elif module in self.modules:
            source = sys.modules.get(module)
        else:
            allowed = ", ".join([*self.modules, *(["torch.nn.modules.*"] if self.torch_nn else [])]) or "none"
            _refuse(f"{full} is outside the allowed model classes (modules: {allowed}) and rebuild functions")
        if source is None or not name.isidentifier():
            _refuse(f"{full}: module {module} is not loaded here, and is never imported for a file")
        cls = vars(source).get(name)
        if not isinstance(cls, type):
            _refuse(f"{full} is not a class defined in {module} (functions are never called)")
        if cls.__module__ != module or cls.__qualname__ != name:
            _refuse(f"{full} is really {cls.__module__}.{cls.__qualname__}, outside the allowlist")
        if not issubclass(cls, nn.Module):
            _refuse(f"{full} is not an nn.Module; only model classes are rebuilt")
        if type(cls) is not type:
            _refuse(f"{full} has the metaclass {type(cls).__qualname__}; only plain classes are rebuilt")
        for klass in cls.__mro__:
            if klass is object or klass.__module__.split(".")[0] == "torch":
                continue
            hooks = sorted(HOOKS & set(vars(klass)))
            if hooks:
                _refuse(
                    f"{full}: {klass.__module__}.{klass.__qualname__} defines {', '.join(hooks)}, which "
                    "unpickling or using the object could run"
                )
        return cls

    def module(self, limits: Limits) -> types.SimpleNamespace:
        """A ``pickle_module`` for ``torch.load``: its Unpickler and load follow this policy and
        the file's limits."""
        policy = self

        class Unpickler(RestrictedUnpickler):
            def __init__(self, file: Any, **kwargs: Any) -> None:
                super().__init__(file, policy=policy, limits=limits, **kwargs)

        def load(file: Any, **kwargs: Any) -> Any:
            loaded = Unpickler(file, **kwargs).load()
            if limits.main_loaded and limits.kind == "legacy":  # the storage keys, then the storages
                limits.storage_keys(loaded, file)
            return loaded

        return types.SimpleNamespace(__name__=__name__, Unpickler=Unpickler, load=load)


def _refuse(message: str) -> NoReturn:
    raise UnsafeCheckpointError(message)


_MODULE_STATE_HOOKS = "hooks"  # nn.Module state keys naming hook dicts: _forward_hooks, ...


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every opcode that calls or fills objects held to the rule."""

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    # Set by pickle._Unpickler (declared for the type checker).
    proto: int
    fix_imports: bool
    stack: list[Any]
    metastack: list[list[Any]]
    memo: dict[int, Any]
    append: Callable[[Any], None]
    read: Callable[[int], bytes]

    def __init__(self, file: Any, *, policy: Policy, limits: Limits, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.policy, self.limits = policy, limits
        self._persistent_load: Callable[[Any], Any] | None = None
        self._dtypes: dict[int, tuple[np.dtype[Any], str]] = {}  # made by REDUCE, not yet BUILT
        self._tall: dict[int, tuple[tuple[Any, ...], int]] = {}  # tuples holding tuples: their depth

    def load(self) -> Any:
        loaded = super().load()
        self.limits.main_loaded |= self._persistent_load is not None
        return loaded

    def _bytearray8(self) -> None:
        """BYTEARRAY8 as pickle reads it, but sized by the bytes there are: pickle zero-fills a
        bytearray of the declared length (up to 2**63) before reading into it."""
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(min(size, self.limits.size))
        if len(data) != size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {size} bytes where the file has {len(data)}")
        self.limits.charge(size, "a bytearray")
        self.append(bytearray(data))

    def _nest_tuple(self) -> None:
        """Depth of the tuple just made: hashing one (a dict key, a set member) recurses in C
        through nested tuples, which a deep enough file turns into a stack overflow."""
        made = self.stack[-1]
        depth = 1 + max((self._tall.get(id(v), (v, 1))[1] for v in made if type(v) is tuple), default=0)
        if depth > MAX_DEPTH:
            raise _Refused(f"tuples nested more than {MAX_DEPTH} deep")
        if depth > 1:
            self._tall[id(made)] = (made, depth)  # held: its id is never reused while we look it up

    # torch.load sets ``unpickler.persistent_load`` to its storage reader.
    @property
    def persistent_load(self) -> Callable[[Any], Any]:
        return self._load_persistent

    @persistent_load.setter
    def persistent_load(self, function: Callable[[Any], Any]) -> None:
        self._persistent_load = function

    def _load_persistent(self, pid: Any) -> Any:
        if self._persistent_load is None:
            raise pickle.UnpicklingError(f"persistent id {pid!r} in a plain pickle; not a checkpoint")
        if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
            # Legacy torch files name a module class with its source; the class is all we use.
            if len(pid) < 2 or not isinstance(pid[1], _Global) or pid[1].kind != "class":
                _refuse(f"a module reference that is not an allowed class: {_short(pid[1:2])}")
            return pid[1]
        if not isinstance(pid, tuple):
            raise _Refused(f"a persistent id {_short(pid)} that torch.save never writes")
        self.limits.storage(pid)  # before torch's reader allocates what the file declares
        return self._persistent_load(pid)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names (__builtin__, copy_reg), by name
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "copyreg" and name == "_reconstructor":
            return _Global("copyreg._reconstructor", None, "reconstructor")
        return self.policy.resolve(module, name)

    def _reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(args, tuple):
            _refuse(f"REDUCE with arguments of type {type(args).__name__}")
        if isinstance(func, _Global) and func.kind == "reconstructor":
            self.stack[-1] = self._new(args[0] if args else None, "copyreg._reconstructor", args[1:])
            return
        if not isinstance(func, _Global) or func.kind != "rebuild":
            what = func.name if isinstance(func, _Global) else type(func).__name__
            _refuse(
                f"the file calls {what} (REDUCE); classes are only rebuilt as torch.save writes them, "
                "and only pure rebuild functions are called"
            )
        # Value globals (numpy.ndarray for _reconstruct) are passed as what they name.
        args = tuple(a.obj if isinstance(a, _Global) and a.kind == "type" else a for a in args)
        check = REBUILDERS[func.name][1]
        try:
            ok = check(*args)
        except TypeError:
            ok = False
        if not ok:
            _refuse(f"the file calls {func.name} with arguments it never needs: {_short(args)}")
        self.limits.charge(
            _materialized(func.name, args), lambda: f"{func.name} of {_short(args[2:3] or args[:1])}"
        )
        self.stack[-1] = result = func.obj(*args)
        if isinstance(result, np.dtype):
            self._dtypes[id(result)] = (result, args[0])  # BUILD may set its byte order, once

    def _new(self, cls: Any, how: str, rest: tuple[Any, ...] = ()) -> Any:
        if how == "copyreg._reconstructor":
            base, state = (rest + (None, None))[:2]
            if not (isinstance(base, _Global) and base.obj is object and state is None and len(rest) == 2):
                _refuse(f"copyreg._reconstructor with base {base!r} and state {_short(state)}")
        elif rest:
            _refuse(f"the file creates {cls!r} with arguments {_short(rest)} ({how}); classes get none")
        if not isinstance(cls, _Global) or cls.kind != "class":
            _refuse(f"the file creates an object of {cls!r} ({how}); only allowed model classes are rebuilt")
        return cls.obj.__new__(cls.obj)

    def _newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, "NEWOBJ", tuple(args)))

    def _newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, "NEWOBJ_EX", tuple(args) + tuple(kwargs.items())))

    def _build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, nn.Module):  # created by _new from an admitted class
            if not isinstance(state, dict) or not all(type(k) is str for k in state):
                _refuse(f"BUILD of {type(inst).__qualname__} with a state that is not a dict of attributes")
            hooked = [k for k, v in state.items() if _MODULE_STATE_HOOKS in k and v]
            if hooked:
                _refuse(f"{type(inst).__qualname__} comes with hooks ({', '.join(hooked)}), which would run")
            type(inst).__setstate__(inst, state)  # nn.Module's (or torch.nn's own) __setstate__
            self.limits.charge(sys.getsizeof(vars(inst)), _OBJECTS)
        elif type(inst) is np.ndarray:
            # (version, shape, dtype, is_fortran, data): raw bytes of exactly that many plain values
            parts: tuple[Any, ...] = state if isinstance(state, tuple) and len(state) == 5 else (None,) * 5
            version, shape, dtype, fortran, data = parts
            if not (_plain_dtype(dtype) and _is_shape(shape) and type(fortran) is bool):
                _refuse("a numpy array of Python objects or of a dtype with fields, views or metadata")
            if type(data) not in (bytes, str) or len(data) != _numel(shape) * dtype.itemsize or version != 1:
                _refuse(f"a numpy array whose data does not match its shape {_short(shape)} and dtype")
            self.limits.charge(len(data), lambda: f"a numpy array of shape {_short(shape)}")
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            made = self._dtypes.pop(id(inst), None)
            if made is None or made[0] is not inst:
                _refuse("BUILD of a numpy dtype twice, or of one the file did not make")
            spec = np.dtype(made[1])
            allowed = [spec.newbyteorder("<").__reduce__()[2], spec.newbyteorder(">").__reduce__()[2]]
            if state not in allowed:
                _refuse(f"a numpy dtype with the state {_short(state)}; only a byte order is set")
            inst.__setstate__(state)  # type: ignore[attr-defined]
        elif type(inst) is Namespace:
            if not (isinstance(state, dict) and all(type(k) is str for k in state)) or inst:
                _refuse(f"BUILD of a settings namespace with the state {_short(state)}")
            inst.update(state)
        elif type(inst) is collections.OrderedDict:
            # a state_dict() carries its version numbers as an attribute: {'_metadata': {...}}
            if not (isinstance(state, dict) and set(state) <= {"_metadata"} and _plain_metadata(state)):
                _refuse(f"BUILD of an OrderedDict with the attributes {_short(state)}")
            inst.__dict__.update(state)
        else:
            _refuse(f"BUILD of a {type(inst).__qualname__}, which torch.save never writes")

    def _refuse_op(self) -> None:
        _refuse("the file uses INST, OBJ or EXT opcodes, which call or import what they name")


_NAMES = {
    pickle.APPEND: "APPEND",
    pickle.APPENDS: "APPENDS",
    pickle.SETITEM: "SETITEM",
    pickle.SETITEMS: "SETITEMS",
    pickle.ADDITEMS: "ADDITEMS",
}
_MARKED = (pickle.APPENDS, pickle.SETITEMS, pickle.ADDITEMS)


def _below_mark(unpickler: RestrictedUnpickler) -> Any:
    """The container an APPENDS/SETITEMS/ADDITEMS fills: the top of the stack below the mark."""
    return unpickler.metastack[-1][-1] if unpickler.metastack and unpickler.metastack[-1] else None


def _filler(kinds: tuple[type, ...], op: bytes) -> Callable[[RestrictedUnpickler], None]:
    """APPEND(S), SETITEM(S), ADDITEMS as pickle does them, into plain containers only."""
    original: Callable[[Any], None] = pickle._Unpickler.dispatch[op[0]]

    def fill(unpickler: RestrictedUnpickler) -> None:
        depth = {pickle.APPEND: 2, pickle.SETITEM: 3}.get(op)  # the container sits below the items
        target = _below_mark(unpickler) if depth is None else _at(unpickler.stack, -depth)
        if type(target) not in kinds:
            _refuse(f"{_NAMES[op]} into a {type(target).__qualname__}; only plain containers are filled")
        before = sys.getsizeof(target)
        original(unpickler)
        unpickler.limits.charge(sys.getsizeof(target) - before, _OBJECTS)

    return fill


def _at(stack: list[Any], index: int) -> Any:
    return stack[index] if len(stack) >= -index else None


_DICTS = (dict, collections.OrderedDict)
for _op, _kinds in [
    (pickle.APPEND, (list,)),
    (pickle.APPENDS, (list,)),
    (pickle.SETITEM, _DICTS),
    (pickle.SETITEMS, _DICTS),
    (pickle.ADDITEMS, (set,)),
]:
    RestrictedUnpickler.dispatch[_op[0]] = _filler(_kinds, _op)


def _tuple_maker(op: bytes) -> Callable[[RestrictedUnpickler], None]:
    original: Callable[[Any], None] = pickle._Unpickler.dispatch[op[0]]

    def make(unpickler: RestrictedUnpickler) -> None:
        original(unpickler)
        unpickler._nest_tuple()

    return make


for _op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
    RestrictedUnpickler.dispatch[_op[0]] = _tuple_maker(_op)
for _op, _method in [
    (pickle.REDUCE, RestrictedUnpickler._reduce),
    (pickle.BYTEARRAY8, RestrictedUnpickler._bytearray8),
    (pickle.NEWOBJ, RestrictedUnpickler._newobj),
    (pickle.NEWOBJ_EX, RestrictedUnpickler._newobj_ex),
    (pickle.BUILD, RestrictedUnpickler._build),
    *[
        (op, RestrictedUnpickler._refuse_op)
        for op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4)
    ],
]:
    RestrictedUnpickler.dispatch[_op[0]] = _method

# Python objects count too: 3 MB of EMPTY_SET (216 bytes each) made 650 MB. Each opcode's handler
# charges what it made: the new object on top of the stack (its shallow size: a list's item
# array, a dict's table, a string), the growth of the memo, a slot of the stack. Small ints,
# None, booleans and the empty tuple are CPython's singletons.
_OBJECTS = "the Python objects it makes"
_MAKERS = (
    *(pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.LIST, pickle.DICT, pickle.FROZENSET),
    *(pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.INT, pickle.BININT, pickle.BININT2),
    *(pickle.LONG, pickle.LONG1, pickle.LONG4, pickle.FLOAT, pickle.BINFLOAT),
    *(pickle.STRING, pickle.BINSTRING, pickle.SHORT_BINSTRING, pickle.UNICODE, pickle.BINUNICODE),
    *(pickle.SHORT_BINUNICODE, pickle.BINUNICODE8, pickle.BINBYTES, pickle.SHORT_BINBYTES, pickle.BINBYTES8),
)
# Objects whose size counts data charged (or bounded) elsewhere: a tensor's or storage's
# sys.getsizeof includes its bytes; a module's attributes are charged at BUILD.
_SHALLOW = (pickle.REDUCE, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.PERSID, pickle.BINPERSID)
_MEMO = (pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE)
_PUSHES = (pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.DUP, pickle.MARK)


def _counted(op: bytes, run: Callable[[Any], None]) -> Callable[[RestrictedUnpickler], None]:
    def make(unpickler: RestrictedUnpickler) -> None:
        run(unpickler)
        unpickler.limits.charge(sys.getsizeof(unpickler.stack[-1]), _OBJECTS)

    def memo(unpickler: RestrictedUnpickler) -> None:
        before = sys.getsizeof(unpickler.memo)
        run(unpickler)
        unpickler.limits.charge(sys.getsizeof(unpickler.memo) - before + 32, _OBJECTS)  # + its int key

    def push(unpickler: RestrictedUnpickler) -> None:
        run(unpickler)
        unpickler.limits.charge(64 if op in _SHALLOW or op == pickle.MARK else 8, _OBJECTS)

    return make if op in _MAKERS else memo if op in _MEMO else push


for _op in (*_MAKERS, *_SHALLOW, *_MEMO, *_PUSHES):
    RestrictedUnpickler.dispatch[_op[0]] = _counted(_op, RestrictedUnpickler.dispatch[_op[0]])


def _children(obj: Any) -> Iterable[Any] | None:
    """What a recursive walk (repr, deepcopy, hash, nn.Module.apply) enters below ``obj``; None: a leaf."""
    if isinstance(obj, dict):
        return itertools.chain(obj.keys(), obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, nn.Module):
        return vars(obj).values()
    return None


def _check_depth(root: Any) -> None:
    """Containers and modules nested at most MAX_DEPTH deep, without recursing: a walk with an
    explicit path, each object measured once (shared ones too), a reference back into the path
    counted as repr counts it ([...])."""
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    path: list[tuple[Any, Iterator[Any], list[int]]] = []

    def enter(obj: Any) -> int | None:  # the depth of a leaf or measured object; None: entered
        children = _children(obj)
        if children is None or id(obj) in on_path:
            return 0
        if id(obj) in depths:
            return depths[id(obj)]
        if len(path) >= MAX_DEPTH:
            raise _Refused(f"containers or modules nested more than {MAX_DEPTH} deep")
        on_path.add(id(obj))
        path.append((obj, iter(children), [0]))
        return None

    enter(root)
    while path:
        obj, children, deepest = path[-1]
        for child in children:
            depth = enter(child)
            if depth is None:
                break
            deepest[0] = max(deepest[0], depth)
        else:
            path.pop()
            on_path.discard(id(obj))
            depths[id(obj)] = deepest[0] + 1
            if path:
                path[-1][2][0] = max(path[-1][2][0], deepest[0] + 1)


def _check_loaded(root: Any) -> None:
    """The whole result, once more: nothing callable the file could have placed, no module hooks,
    no half-built module, no numpy value of a dtype numpy would trust to hold objects."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _Global) or (
            callable(obj) and not isinstance(obj, nn.Module) and not _torch_made(obj)
        ):
            _refuse(
                f"the loaded object holds {_short(obj)} ({type(obj).__name__}), something callable as data"
            )
        if isinstance(obj, (torch.jit.ScriptModule, torch._C.ScriptModule)):
            _refuse("the loaded object holds a TorchScript module, whose code runs")
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        elif isinstance(obj, nn.Module):
            attributes = vars(obj)
            if not all(isinstance(attributes.get(k), dict) for k in ("_parameters", "_buffers", "_modules")):
                _refuse(f"a {type(obj).__qualname__} that was created but never filled (no BUILD)")
            bad = [k for k, v in attributes.items() if (_MODULE_STATE_HOOKS in k and v) or k.startswith("__")]
            if bad or attributes.get("_compiled_call_impl") is not None:
                _refuse(f"{type(obj).__qualname__} comes with hooks or special attributes ({', '.join(bad)})")
            _check_members(obj, attributes)
            todo.extend(attributes.values())
        elif isinstance(obj, (np.ndarray, np.generic)) and not _plain_dtype(obj.dtype):
            _refuse(f"a numpy value of dtype {_short(obj.dtype)}, which may hold or view anything")


def _zip_records(p: Path) -> dict[str, int]:
    """Storage key -> bytes of its record, for a torch zip whose records are all stored (torch.save
    compresses nothing: a deflated record is a decompression bomb) and fit the file once."""
    with zipfile.ZipFile(p) as z:
        infos = z.infolist()
    stored = zipfile.ZIP_STORED
    packed = [i.filename for i in infos if (i.compress_type, i.compress_size) != (stored, i.file_size)]
    if packed:
        raise _Refused(
            f"its records {', '.join(packed[:3])} are compressed; torch.save writes them stored, and a "
            "compressed record can expand to any size"
        )
    total = sum(i.file_size for i in infos)
    if total > p.stat().st_size:
        raise _Refused(f"its records add up to {total:,} bytes, more than the file's: they overlap")
    prefix = infos[0].filename.split("/")[0] + "/data/" if infos else ""
    return {i.filename[len(prefix) :]: i.file_size for i in infos if i.filename.startswith(prefix)}


# What nn.Module's own walks (.float(), .modules(), state_dict) expect in each of its dicts.
_MEMBERS = (("_modules", nn.Module), ("_parameters", torch.Tensor), ("_buffers", torch.Tensor))


def _check_members(module: nn.Module, attributes: dict[str, Any]) -> None:
    """Submodules that are modules and parameters and buffers that are tensors (or None), by
    string names: anything else fails in torch's own code after the load (model.float())."""
    for key, kind in _MEMBERS:
        wrong = [
            k
            for k, v in attributes[key].items()
            if type(k) is not str or not (v is None or isinstance(v, kind))
        ]
        if wrong:
            raise _Refused(
                f"{type(module).__qualname__}.{key} holds {_short(attributes[key][wrong[0]])} under "
                f"{_short(wrong[0])}, where torch keeps a {kind.__name__}"
            )


def _torch_made(obj: Any) -> bool:
    """Callables only torch's own __setstate__ code puts in a module (weak references of RNNs'
    flat weights, torch.nn.functional activations): a file cannot name either."""
    return isinstance(obj, weakref.ref) or (
        isinstance(obj, types.FunctionType) and obj.__module__ == "torch.nn.functional"
    )


def _format(p: Path) -> str:
    """'zip' (torch >= 1.6), 'torchscript' (torch.jit.save), 'tar' (torch < 0.4), 'legacy' (torch's
    pickled magic number) or 'pickle'. A tar is refused whatever its first bytes say."""
    try:
        if tarfile.is_tarfile(p):
            return "tar"
    except Exception:  # a malformed tar header: then it is not read as a tar by anyone either
        pass
    if zipfile.is_zipfile(p):
        # torch.load hands a zip with TorchScript records to torch.jit.load; read them as torch does.
        records = torch._C.PyTorchFileReader(str(p)).get_all_records()
        scripted = any(r == "constants.pkl" or r.startswith(("code/", ".data/ts_code/")) for r in records)
        return "torchscript" if scripted else "zip"
    with p.open("rb") as f:
        head = f.read(64)
    try:
        magic = _MagicOnly(io.BytesIO(head)).load()
    except Exception:  # anything else is not a legacy torch file, which is all we ask here
        magic = None
    return "legacy" if magic == torch.serialization.MAGIC_NUMBER else "pickle"


class _MagicOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError("no globals while probing the format")


def pickled_globals(path: PathLike) -> set[str]:
    """The globals (``module.name``) the main pickle of a checkpoint names, read from its opcodes
    without unpickling anything: what a file claims to hold, e.g. to refuse a kind of model with
    a message of its own before loading it. Best effort: empty for a file that is none of torch's
    zip or legacy checkpoints or a plain pickle."""
    p = Path(path)
    try:
        kind = _format(p)
        if kind == "zip":
            _zip_records(p)  # stored records only: reading a deflated one could make any size
            with zipfile.ZipFile(p) as z:
                return _global_names(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
        if kind == "legacy":  # the main pickle follows the magic number, protocol and sys info
            stream = io.BytesIO(p.read_bytes())
            for _ in range(3):  # skipped opcode by opcode: building them could nest deep enough to crash
                for _op in pickletools.genops(stream):
                    pass
            return _global_names(stream.read())
        return _global_names(p.read_bytes()) if kind == "pickle" else set()
    except Exception:  # unreadable: the loader itself then says what is wrong with the file
        return set()


def _refused_globals(p: Path, kind: str, policy: Policy) -> dict[str, str]:
    """Every global of the file's main pickle that the policy refuses, for the message (best effort)."""
    try:
        return _refused_names(p, kind, policy)
    except Exception:  # only the message loses its list
        return {}


def _refused_names(p: Path, kind: str, policy: Policy) -> dict[str, str]:
    if kind == "zip":
        with zipfile.ZipFile(p) as z:
            data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    else:
        data = p.read_bytes()
    names = _global_names(data)
    refused: dict[str, str] = {}
    for full in sorted(names):
        module, _, name = full.rpartition(".")
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if kind != "pickle" and module == "torch" and name.endswith("Storage"):
            continue  # torch's reader resolves storage types itself
        if (module, name) == ("copyreg", "_reconstructor"):
            continue
        full = f"{module}.{name}"
        try:
            policy.resolve(module, name)
        except UnsafeCheckpointError as e:
            refused[full] = str(e).removeprefix(f"{full} ").removeprefix(f"{full}: ")
    return refused


def _global_names(data: bytes) -> set[str]:
    """Names of GLOBAL and STACK_GLOBAL opcodes of the pickle at the start of ``data``."""
    names: set[str] = set()
    strings: list[str] = []
    memo: dict[int, str] = {}
    memoized, last = 0, None  # MEMOIZE numbers memo entries in order; last: the string just pushed
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        pushed = None
        if op.name == "GLOBAL":
            names.add(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(arg, str) and "UNICODE" in op.name:
            pushed = arg
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            key = memoized if op.name == "MEMOIZE" else int(arg)  # type: ignore[arg-type]
            memoized += op.name == "MEMOIZE"
            if last is not None:
                memo[key] = last
            continue  # the top of the stack is unchanged
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed = memo.get(int(arg))  # type: ignore[arg-type]
        if pushed is not None:
            strings.append(pushed)
        last = pushed
        if op.name == "STOP":
            break
    return names


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class _BoundedRepr(reprlib.Repr):
    def repr_TypedStorage(self, x: Any, level: int) -> str:  # its repr lists the data, and warns
        return f"<storage of {x._untyped_storage.nbytes()} bytes>"

    def repr_UntypedStorage(self, x: Any, level: int) -> str:
        return f"<storage of {x.nbytes()} bytes>"


_REPR = _BoundedRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


def _short(value: Any) -> str:
    """A bounded repr: a file's nested, memo-shared objects cannot make the message slow or huge."""
    try:
        return _REPR.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
