"""Hostile checkpoint files, written byte by byte: the formats torch.save writes (zip, legacy) and
plain pickles, with the one field a hostile file changes. Shared by tests/unit/kit/upstreams/test_safeload.py,
the fuzzer (tests/fuzz.py) and scripts that measure the loader's memory on them.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # torch.serialization.MAGIC_NUMBER
DEEP = 200_000  # nesting that overflowed the C stack (hash of a tuple used as a dict key)


def raw(body: bytes) -> bytes:
    """A protocol-2 pickle of ``body`` (opcodes), as torch.save writes."""
    return b"\x80\x02" + body + b"."


def s(text: str) -> bytes:  # BINUNICODE
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def g(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + f"{module}\n{name}\n".encode()


def t(*items: bytes) -> bytes:  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


def i(n: int) -> bytes:  # BININT, or LONG1 beyond 32 bits
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def ints(values: Sequence[int]) -> bytes:
    return t(*(i(v) for v in values))


def tensor(
    key: str,
    numel: int,
    *,
    size: Sequence[int],
    stride: Sequence[int],
    offset: int = 0,
    storage: str = "FloatStorage",
    legacy: bool = False,
    memo: int | None = None,
) -> bytes:
    """Opcodes of ``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` on the
    storage ``key`` of ``numel`` elements, as torch.save pickles a tensor (legacy: one field more;
    ``memo``: the storage is also put in that memo slot, for more views of it)."""
    pid = t(s("storage"), g("torch", storage), s(key), s("cpu"), i(numel), *([b"N"] if legacy else []))
    hooks = g("collections", "OrderedDict") + b")R"
    storage_ = pid + b"Q" + (b"" if memo is None else b"q" + bytes([memo]))
    return (
        g("torch._utils", "_rebuild_tensor_v2")
        + t(storage_, i(offset), ints(size), ints(stride), b"\x89", hooks)
        + b"R"
    )


def floats(numel: int, *, size: int | None = None, legacy: bool = False) -> bytes:
    """A float tensor of ``size`` elements (default: all) on storage "0" of ``numel`` elements."""
    n = numel if size is None else size
    return tensor("0", numel, size=[n], stride=[1], legacy=legacy)


def dict_of(**items: bytes) -> bytes:
    return b"}(" + b"".join(s(k) + v for k, v in items.items()) + b"u"


def torch_zip(data_pkl: bytes, storages: dict[str, bytes], *, deflate: Sequence[str] = ()) -> bytes:
    """A torch.save zip archive with ``data_pkl`` and the records ``data/<key>``; ``deflate`` names
    records written compressed (torch.save writes every record stored)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            kind = zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED
            z.writestr(f"archive/data/{key}", data, compress_type=kind)
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def deflated_record(name: str, nbytes: int) -> bytes:
    """A torch zip whose record ``name`` is ``nbytes`` zero bytes, deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, compresslevel=1) as z:
        _deflated(z, f"archive/{name}", nbytes)
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _deflated(z: zipfile.ZipFile, name: str, nbytes: int) -> None:
    """The record ``name`` of ``nbytes`` zero bytes, deflated, written in 16 MiB chunks."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = b"\0" * (1 << 24)
    with z.open(info, "w", force_zip64=True) as w:
        for start in range(0, nbytes, len(chunk)):
            w.write(chunk[: nbytes - start])


def deflated_zeros(data_pkl: bytes, key: str, nbytes: int) -> bytes:
    """A torch zip whose storage ``key`` is ``nbytes`` zero bytes, deflated (a decompression bomb:
    1 GiB of zeros takes 1 MB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        _deflated(z, f"archive/data/{key}", nbytes)
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def legacy(
    main: bytes, keys: Sequence[str], storages: Sequence[tuple[int, bytes]], *, info: bytes | None = None
) -> bytes:
    """A legacy (non-zip) torch file: magic number, protocol, system info, the main pickle, the
    list of storage keys, then each storage as its element count (8 bytes) and its bytes."""
    head = MAGIC + pickle.dumps(1001, protocol=2)
    if info is None:
        info = pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, protocol=2)
    tail = b"".join(struct.pack("<q", n) + data for n, data in storages)
    return head + info + main + pickle.dumps(list(keys), protocol=2) + tail


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _deep_tuple(depth: int) -> bytes:
    return b")" + b"\x85" * depth  # EMPTY_TUPLE, then TUPLE1 around it depth times


def _memo_chain(depth: int) -> bytes:
    """Lists nested ``depth`` deep, built bottom-up through the memo: each list is put in its
    parent while still empty, then filled, so no list is deep when it is placed."""
    body = [b"]r" + struct.pack("<I", k) for k in range(depth)]  # EMPTY_LIST, LONG_BINPUT k
    body.append(b"0" * depth)  # POP them all: the memo keeps them
    for k in range(depth - 1):  # LONG_BINGET k, LONG_BINGET k + 1, APPEND, POP
        body.append(b"j" + struct.pack("<I", k) + b"j" + struct.pack("<I", k + 1) + b"a0")
    body.append(b"j" + struct.pack("<I", 0))
    return b"".join(body)


def corpus() -> dict[str, bytes]:
    """The issue's files: each made the process crash (exit 139) or take gigabytes."""
    m = 100_000
    one_mb = b"\0" * (1 << 20)
    whole = tensor("0", 1 << 18, size=[1 << 18], stride=[1], memo=0)
    view = (
        g("torch._utils", "_rebuild_tensor_v2")
        + t(b"h\x00", i(0), ints([1 << 18]), ints([1]), b"\x89", b"}")
        + b"R"
    )
    f4 = g("numpy", "dtype") + t(s("f4"), b"\x89", b"\x88") + b"R"
    empty_array = (
        g("numpy._core.multiarray", "_reconstruct") + t(g("numpy", "ndarray"), t(i(0)), b"C\x01b") + b"R"
    )
    key = _deep_tuple(DEEP)
    # two elements 2**28 apart on a storage of 4: torch grows the storage to fit (1 GiB)
    beyond = raw(dict_of(w=tensor("0", 4, size=[2], stride=[1 << 28])))
    beyond_legacy = raw(dict_of(w=tensor("0", 4, size=[2], stride=[1 << 28], legacy=True)))
    return {
        # nesting: hashing a tuple used as a key or set member recurses in C
        "hash-key.pkl": raw(b"}" + key + b"K\x01s"),
        "hash-key.zip": torch_zip(raw(b"}" + key + b"K\x01s"), {}),
        "set-member.pkl": raw(g("__builtin__", "set") + b"(]" + key + b"atR"),
        "frozenset.pkl": b"\x80\x04" + b"(" + key + b"\x91.",
        "deep-list.pkl": raw(b"]" * DEEP + b"a" * (DEEP - 1)),
        "deep-list.zip": torch_zip(raw(b"]" * DEEP + b"a" * (DEEP - 1)), {}),
        # the system info pickle before the main one, which pickled_globals read with pickle's own
        "hash-key-info.legacy": legacy(raw(dict_of(w=floats(4, legacy=True))), ["0"], [(4, b"\0" * 16)],
                                       info=raw(b"}" + key + b"K\x01s")),
        # a deflated data.pkl, which pickled_globals (yolov5's loader) read before the loader
        "deflate-pkl.zip": deflated_record("data.pkl", 1 << 28),
        "memo-chain.pkl": raw(_memo_chain(DEEP // 10)),  # deep enough for any recursive walk
        # memory: storages and views
        "deflate-bomb.zip": deflated_zeros(raw(dict_of(w=floats(1 << 26))), "0", 1 << 28),
        "short-record.zip": torch_zip(raw(dict_of(w=floats(1 << 26))), {"0": b"\0" * 16}),
        "overlap-view.zip": torch_zip(
            raw(dict_of(w=tensor("0", 2 * m, size=[m, m], stride=[1, 1]))), {"0": b"\0" * (8 * m)}
        ),
        "view-beyond.zip": torch_zip(beyond, {"0": b"\0" * 16}),
        "view-beyond.legacy": legacy(beyond_legacy, ["0"], [(4, b"\0" * 16)]),
        "many-views.zip": torch_zip(raw(b"](" + whole + view * 1000 + b"e"), {"0": one_mb}),
        "legacy-unfilled.legacy": legacy(raw(dict_of(w=floats(1 << 28, legacy=True))), [], []),
        "legacy-short.legacy": legacy(raw(dict_of(w=floats(1 << 28, legacy=True))), ["0"], [(1 << 28, b"")]),
        # memory: numpy arrays and bytearrays made from one memo-shared bytes object
        "numpy-repeat.pkl": raw(
            b"B" + struct.pack("<I", 1 << 20) + one_mb + b"q\x00" + b"0" + b"]("
            + (
                empty_array + t(i(1), t(i(1 << 18)), f4, b"\x89", b"h\x00")
                + b"b"
            ) * 1000
            + b"e"
        ),
        # memory: Python objects, 216 bytes for each byte of EMPTY_SET
        "empty-sets.pkl": b"\x80\x04(" + b"\x8f" * 3_000_000 + b"l.",
        "bytearray8.pkl": b"\x80\x05\x96" + struct.pack("<Q", 1 << 31) + b".",  # zero-filled 2 GiB
        "bytearray-repeat.pkl": raw(
            b"B" + struct.pack("<I", 1 << 20) + one_mb + b"q\x00" + b"0" + b"]("
            + (g("__builtin__", "bytearray") + t(b"h\x00") + b"R") * 1000
            + b"e"
        ),
    }  # fmt: skip


def load_each(paths: Sequence[str]) -> None:
    """Each file through the entry points' path (kit.cli.main.guarded around safe_load): one JSON line
    per file with its exit code, first message line and the process's peak RSS so far."""
    import contextlib
    import json
    import resource

    from kit.cli.main import guarded
    from kit.upstreams.safeload import pickled_globals, safe_load

    def load(path: str) -> int:
        pickled_globals(path)  # as yolov5's loader does first
        safe_load(path, allowed_modules=["torch.nn"])
        return 0

    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"name": "", "code": 0, "message": "", "rss": start}), flush=True)
    for path in paths:
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            code = guarded(lambda: load(path))  # noqa: B023 (called at once)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        message = errors.getvalue().strip().splitlines()[:1]
        print(
            json.dumps({"name": Path(path).name, "code": code, "message": "".join(message), "rss": rss}),
            flush=True,
        )


def touch(path: str) -> None:
    """Load with the kit's loader, then copy every tensor as attempt_load's model.float() does."""
    import torch

    from kit.core.errors import KitError
    from kit.upstreams.safeload import safe_load

    try:
        loaded = safe_load(path, allowed_modules=["torch.nn"])
    except KitError as error:
        print("refused:", str(error).splitlines()[0][:150])
        return
    todo, seen = [loaded], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            obj.double().sum()  # a copy
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            todo.extend(obj)
    repr(loaded)
    print("loaded")


def run_child(
    args: Sequence[str], *, limit_bytes: int | None = None, timeout: float = 300, cwd: Path | None = None
) -> tuple[int, int, str]:
    """Run ``python -m tests.hostile args`` with an optional address-space limit: (exit code,
    or -signal, peak RSS in bytes, stdout then stderr), through :func:`tests.children.run_child`."""
    import sys

    from tests.children import run_child as run

    outcome = run([sys.executable, "-m", "tests.hostile", *args], address_space=limit_bytes,
                  timeout=timeout, cwd=cwd)  # fmt: skip
    return outcome.exit, int(outcome.peak_mb * 2**20), outcome.stdout + outcome.stderr


LIMIT = 8 << 30  # address space of the measuring child: torch alone maps about 3.6 GB


def measure(names: Sequence[str]) -> None:
    """Peak RSS of a child loading each hostile file (and copying its tensors), one line each."""
    import tempfile

    files = corpus()
    with tempfile.TemporaryDirectory() as folder:
        for name in names or sorted(files):
            path = write(Path(folder) / name, files[name])
            code, rss, out = run_child(["touch", str(path)], limit_bytes=LIMIT)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            size = len(files[name])
            print(f"{name:24s} {size:>9d} B  exit {code:>4d}  peak RSS {rss / 2**20:7.0f} MiB  {last[:110]}")


def main(argv: Sequence[str]) -> int:
    """``python -m tests.hostile measure [NAME ...]``: the corpus's peak RSS, file by file;
    ``load PATH ...``, ``touch PATH``: what a child runs."""
    if argv[:1] == ["load"]:
        load_each(argv[1:])
    elif argv[:1] == ["touch"]:
        touch(argv[1])
    elif argv[:1] == ["measure"]:
        measure(argv[1:])
    else:
        print(main.__doc__)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
