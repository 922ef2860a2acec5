"""Fuzzing the checkpoint loader and the label readers: every file either loads or is refused.

Cases come from a seeded generator: pickles made of random opcodes with plausible arguments,
genuine checkpoints (torch's zip and legacy formats, plain pickles of numpy weights) with bytes
flipped, cut, inserted or repeated, in the file or in the zip's data.pkl, and YOLO label files
and COCO json with their tokens and values replaced by odd ones. A worker process, its address
space limited, reads each case as the kit does (:func:`kit.upstreams.safeload.safe_load` and the YOLO
checkpoint check, then model.float() as attempt_load does; :func:`kit.evaluation.labels.load_labels` and
the ground truth of each image) and reports the outcome. A failure is any other exception, a
refusal caused by running out of memory or recursion, a signal, a case that runs past its time,
or a worker whose peak RSS grew past the budget; its case is kept in ``--out`` to reproduce.

``python -m tests.fuzz --seconds 600`` (``make fuzz ARGS='--seconds 600'``) runs for that long;
``tests/unit/test_fuzz.py`` runs a fixed number of cases of a fixed seed in ``make test``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HARD_LIMIT = 8 << 30  # address space of a worker before it narrows it to its imports plus SLACK
SLACK = 1 << 30
RSS_GROWTH = 512 << 20  # peak RSS a worker may add over its imports: files here are < 1 MB
CASE_SECONDS = 30.0  # one case taking longer is a failure (a loop, a quadratic walk)
KINDS = ("checkpoint", "labels")

# ---------------------------------------------------------------- cases


def _interesting_int(rng: random.Random) -> int:
    big = [2**31 - 1, -(2**31), 2**32, 2**63, 10**9, 2**61 - 1, 1 << 20000]  # 1 << 20000: repr fails
    return rng.choice([0, 1, -1, 2, 3, 255, 256, *big, rng.randrange(-9, 100)])


GLOBALS = [
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("torch", "FloatStorage"),
    ("collections", "OrderedDict"),
    ("__builtin__", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("torch.nn.modules.linear", "Linear"),
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.conv", "Conv2d"),
    ("os", "system"),
    ("builtins", "eval"),
    ("torch", "_dynamo"),
]
TEXTS = [
    "",
    "a",
    "f4",
    "<f4",
    "latin1",
    "training",
    "_parameters",
    "_modules",
    "_buffers",
    "weight",
    "x" * 300,
]


def _text(rng: random.Random) -> bytes:
    return rng.choice(TEXTS).encode()


def _sized(width: str, data: bytes) -> bytes:
    data = data[:255] if width == "<B" else data
    return struct.pack(width, len(data)) + data


def _argument(rng: random.Random, name: str) -> bytes:  # noqa: PLR0911 (one line per kind)
    """A plausible argument of a pickletools argument kind."""
    memo = rng.choice([0, 1, 2, 3, rng.randrange(256)])
    if name == "uint1":
        return bytes([memo])
    if name in ("uint2", "uint4", "uint8"):
        return struct.pack({"uint2": "<H", "uint4": "<I", "uint8": "<Q"}[name], memo)
    if name == "int4":
        return struct.pack("<i", max(-(2**31), min(2**31 - 1, _interesting_int(rng))))
    if name in ("long1", "long4"):
        n = _interesting_int(rng)
        data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return _sized("<B" if name == "long1" else "<i", data)
    if name == "stringnl_noescape_pair":
        module, attr = rng.choice(GLOBALS)
        return f"{module}\n{attr}\n".encode()
    if name in ("decimalnl_short", "decimalnl_long"):
        n = _interesting_int(rng)
        text = str(n) if n.bit_length() < 10_000 else "9" * 5000  # str() refuses past 4300 digits
        return text.encode() + (b"L" if name.endswith("long") else b"") + b"\n"
    if name == "floatnl":
        return rng.choice([b"1.5", b"nan", b"inf", b"-0.0", b"1e308"]) + b"\n"
    if name == "float8":
        return struct.pack(">d", rng.choice([0.5, float("inf"), -1.0]))
    if name in ("stringnl", "unicodestringnl", "stringnl_noescape"):
        return repr(rng.choice(TEXTS)).encode() + b"\n" if name == "stringnl" else _text(rng) + b"\n"
    widths = {"1": "<B", "4": "<I", "8": "<Q"}
    if name[-1] in widths:
        return _sized(widths[name[-1]], _text(rng))
    return b""


OPCODES = [op for op in pickletools.opcodes if op.name not in ("STOP", "PROTO", "FRAME")]
STRUCTURAL = [op for op in OPCODES if op.arg is None or op.name in ("GLOBAL", "BINPUT", "BINGET", "BININT1")]


def generated_pickle(rng: random.Random) -> bytes:
    """A protocol 0-5 pickle of random opcodes, biased to the ones that build and call."""
    out = [b"\x80" + bytes([rng.randrange(6)])] if rng.random() < 0.8 else []
    for _ in range(rng.randrange(1, 80)):
        op = rng.choice(STRUCTURAL if rng.random() < 0.6 else OPCODES)
        out.append(op.code.encode("latin1") + (_argument(rng, op.arg.name) if op.arg else b""))
    out.append(b".")
    return b"".join(out)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Bit flips, a cut, an insertion, a repeated chunk or an extreme integer."""
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        how = rng.randrange(6)
        at = rng.randrange(len(b)) if b else 0
        if how == 0 and b:
            b[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            del b[at:]
        elif how == 2:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif how == 3 and b:
            end = min(len(b), at + rng.randrange(1, 64))
            b[at:at] = b[at:end] * rng.randrange(2, 5)
        elif how == 4 and len(b) >= at + 4:
            b[at : at + 4] = struct.pack("<I", rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 24]))
        elif b:
            b[at] = rng.randrange(256)
    return bytes(b)


def seed_checkpoints() -> dict[str, bytes]:
    """Genuine files to mutate: a small torch.nn model with optimizer state (zip and legacy), a
    train.py-like dict, a state_dict, and detectron2-style pickles of numpy weights."""
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.SiLU(), nn.Upsample(None, 2)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(1, 3, 4, 4)).sum().backward()
    optimizer.step()
    train = {
        "epoch": 3,
        "model": model.half(),
        "ema": None,
        "optimizer": optimizer.state_dict(),
        "opt": {"img_size": [640, 640], "names": ["a", "b"]},
        "best": np.float64(0.5),
    }
    files: dict[str, bytes] = {}
    for name, obj in (
        ("train", train),
        ("state", model.state_dict()),
        ("tensors", {"w": torch.arange(6.0)[1:5]}),
    ):
        for zip_format in (True, False):
            buffer = io.BytesIO()
            torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
            files[f"{name}.{'zip' if zip_format else 'legacy'}"] = buffer.getvalue()
    weights = {
        "model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2)},
        "__author__": "x",
    }
    for protocol in (0, 2, 4, 5):
        files[f"weights.p{protocol}"] = pickle.dumps(weights, protocol=protocol)
    return files


def _rezip(data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """The zip with its data.pkl changed, every record stored as torch.save writes them."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            record = src.read(info)
            dst.writestr(info.filename, change(record) if info.filename.endswith("data.pkl") else record)
    return out.getvalue()


def checkpoint_case(rng: random.Random, seeds: dict[str, bytes]) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return generated_pickle(rng)
    name = rng.choice(sorted(seeds))
    data = seeds[name]
    if name.endswith(".zip") and roll < 0.75:
        return _rezip(data, lambda pkl: _mutate(rng, pkl))
    return _mutate(rng, data)


YOLO_ROWS = ["0 0.5 0.5 0.2 0.3", "2 0.1 0.2 0.05 0.05", "1 0.1 0.1 0.4 0.1 0.3 0.6 0.1 0.5", ""]
ODD_TOKENS = [
    *("nan", "inf", "-inf", "1e309", "-1", "3", "7", "0x10", "", "1" * 400, "é", "\x00", "\ufeff0"),
    *("[]", "{}", "null", "true", '"x"', "[[[[", "9" * 5000, "-0", "0.5e-400", "1_0"),
]
COCO = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "sub/b.jpg", "width": 32, "height": 32},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [0.5, 0, 4, 4]},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
}
ODD_VALUES: list[Any] = [
    *(None, -1, 0, 2**63, 10**30, 10**400, 1.5, float("nan"), float("inf"), True, "", "x", "a.jpg"),
    *([], {}, [1, 2], [1, 2, 3, 4], [[1]], {"id": 1}, "../../etc/passwd", ["a"] * 50),
]


def _token_mutation(rng: random.Random, text: str) -> str:
    tokens = text.replace("\n", " \n ").split(" ")
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(tokens))
        tokens[at] = rng.choice(ODD_TOKENS) if rng.random() < 0.8 else tokens[rng.randrange(len(tokens))]
    return " ".join(tokens).replace(" \n ", "\n")


def _value_mutation(rng: random.Random, data: Any) -> Any:
    """The json with one value (at a random path) replaced by an odd one, or deeply nested."""
    data = json.loads(json.dumps(data))
    node, parent, key = data, None, None
    for _ in range(rng.randrange(1, 7)):
        keys: list[Any] = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        parent, key = node, rng.choice(keys)
        if not isinstance(node[key], (dict, list)) or rng.random() < 0.15:
            break
        node = node[key]
    value: Any = DEEP if rng.random() < 0.05 else rng.choice(ODD_VALUES)
    if parent is None:
        return value
    parent[key] = value
    return data


DEEP = "__deep__"  # written as arrays nested 5000 deep (json.dumps itself would recurse)


def labels_case(rng: random.Random) -> tuple[str, bytes]:
    """('txt', a YOLO label file) or ('json', a COCO file)."""
    if rng.random() < 0.4:
        text = "\n".join(rng.choice(YOLO_ROWS) for _ in range(rng.randrange(1, 6)))
        text = _token_mutation(rng, text)
        data = text.encode("utf-8", "surrogatepass")
        return "txt", _mutate(rng, data) if rng.random() < 0.2 else data
    if rng.random() < 0.6:
        text = json.dumps(_value_mutation(rng, COCO)).replace(json.dumps(DEEP), "[" * 5000 + "]" * 5000)
        return "json", text.encode()
    text = _token_mutation(rng, json.dumps(COCO))
    return "json", _mutate(rng, text.encode()) if rng.random() < 0.3 else text.encode()


def write_cases(
    kind: str, rng: random.Random, count: int, folder: Path, seeds: dict[str, bytes]
) -> list[Path]:
    paths = []
    for number in range(count):
        if kind == "checkpoint":
            suffix, data = "pt", checkpoint_case(rng, seeds)
        else:
            suffix, data = labels_case(rng)
        path = folder / f"{number:06d}.{suffix}"
        path.write_bytes(data)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- the worker


def _narrow_address_space() -> int:
    """Address space: what the imports mapped plus SLACK. Returns the peak RSS so far."""
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = vm + SLACK if hard == resource.RLIM_INFINITY else min(vm + SLACK, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load_checkpoint(path: Path) -> None:
    """What the kit and the upstreams do with a checkpoint: describe it, the YOLO check, then
    attempt_load's model.float() and its walk over the modules; detectron2's check of weights."""
    from torch import nn

    from kit.upstreams.checkpoints import describe, yolo_checkpoint_check
    from kit.upstreams.loaders.detectron2 import check_checkpoint
    from kit.upstreams.safeload import safe_load

    loaded = safe_load(path, allowed_modules=["torch.nn"])
    describe(loaded)
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), nn.Module):
        yolo_checkpoint_check(nn.Module)(loaded, path)
        loaded["model"].float()
        list(loaded["model"].named_modules())
    elif isinstance(loaded, dict):
        check_checkpoint(loaded, path)


IMAGES = {"a.jpg": (48, 64), "b.jpg": (32, 32), "c.jpg": (10, 10)}


def _load_labels(path: Path) -> None:
    from kit.evaluation.labels import load_labels, read_yolo_file

    if path.suffix == ".txt":
        read_yolo_file(path, nc=3, names=["cat", "dog", "bird"])
        return
    folder = path.parent / "images"
    sources = [folder / name for name in IMAGES]
    labels = load_labels(path, names=["cat", "dog", "bird"], sources=sources)
    for source, hw in zip(sources, IMAGES.values()):
        labels.ground_truth(source, hw)


def _selftest(path: Path) -> None:
    """Cases that fail in each way the driver must catch (tests/unit/test_fuzz.py)."""
    import signal

    from kit.evaluation.labels import LabelError

    what = path.read_bytes()
    if what == b"signal":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif what == b"hang":
        time.sleep(600)
    elif what == b"memory":
        bytearray(2 * SLACK)
    elif what == b"bug":
        raise KeyError("a bug")
    elif what == b"refused":
        raise LabelError("refused")


def _refusal_of_a_bug(error: BaseException) -> str | None:
    """A refusal that hides a bug: the kit wraps a corrupt file's error, so look at its cause."""
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    bugs = (MemoryError, RecursionError, SystemError)
    return f"{type(cause).__name__} behind the refusal" if isinstance(cause, bugs) else None


def work(kind: str, paths: Sequence[str], progress: Path) -> None:
    """Read each case; one JSON line per case on stdout. Progress names the case being read."""
    from kit.core.errors import CheckpointError, UnsafeCheckpointError
    from kit.evaluation.labels import LabelError

    refusals: tuple[type[BaseException], ...] = (CheckpointError, UnsafeCheckpointError, LabelError)
    read = {"checkpoint": _load_checkpoint, "labels": _load_labels, "selftest": _selftest}[kind]
    if kind == "checkpoint":  # imported before the address space is narrowed to what they map
        import kit.upstreams.checkpoints  # noqa: F401
    start = _narrow_address_space()
    print(json.dumps({"start_rss": start}), flush=True)
    for path in paths:
        progress.write_text(f"{path}\n{time.time()}\n")
        began = time.monotonic()
        outcome, detail = "loaded", ""
        try:
            read(Path(path))
        except refusals as error:
            bug = _refusal_of_a_bug(error)
            outcome, detail = ("error", bug) if bug else ("refused", str(error).splitlines()[0][:300])
        except Exception as error:  # noqa: BLE001 (any other exception is what the fuzzer looks for)
            outcome, detail = "error", f"{type(error).__name__}: {str(error)[:300]}"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        line = {
            "case": path,
            "outcome": outcome,
            "detail": detail,
            "rss": rss,
            "seconds": time.monotonic() - began,
        }
        print(json.dumps(line), flush=True)


# ---------------------------------------------------------------- the driver


@dataclass
class Report:
    """What a fuzzing run found: outcome counts, failures (case file, what happened), peak RSS growth."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    growth: int = 0  # the largest peak RSS a worker added over its imports, in bytes
    steepest: tuple[int, str] = (0, "")  # the largest rise of peak RSS in one case, and the case

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (HARD_LIMIT, HARD_LIMIT))


def _run_worker(
    kind: str, paths: list[Path], scratch: Path, report: Report, *, case_seconds: float = CASE_SECONDS
) -> list[Path]:
    """One worker over ``paths``: record each outcome; returns the cases it did not reach (after
    a crash or a hang, whose case is a failure)."""
    progress = scratch / "progress"
    progress.unlink(missing_ok=True)
    listing = scratch / "cases.json"
    listing.write_text(json.dumps([str(p) for p in paths]))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with (scratch / "out").open("w+") as out:
        command = [sys.executable, "-m", "tests.fuzz", "--worker", kind, str(listing), str(progress)]
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limit, cwd=REPO, env=env
        )
        status, usage = _wait(child, progress, case_seconds)
        out.seek(0)
        lines = [json.loads(line) for line in out.read().splitlines() if line.startswith("{")]
    start = next((line["start_rss"] for line in lines if "start_rss" in line), None)
    done = {line["case"]: line for line in lines if "case" in line}
    previous = start
    for line in done.values():
        report.add(line["outcome"])
        if line["outcome"] == "error":
            report.failures.append((line["case"], line["detail"]))
        if previous is not None:
            report.growth = max(report.growth, line["rss"] - start)
            report.steepest = max(report.steepest, (line["rss"] - previous, Path(line["case"]).name))
        previous = line["rss"]
    if start is not None:
        report.growth = max(report.growth, usage.ru_maxrss * 1024 - start)
    if status == 0 and len(done) == len(paths):
        return []
    stuck = next((p for p in paths if str(p) not in done), None)
    what = "ran past its time" if status == "timeout" else f"worker ended with {status}"
    report.add("crash")
    report.failures.append((str(stuck), what))
    return paths[paths.index(stuck) + 1 :] if stuck is not None else []


def _wait(child: subprocess.Popen[bytes], progress: Path, case_seconds: float) -> tuple[int | str, Any]:
    """Wait for the worker, killing it when one case runs past ``case_seconds``; its exit status
    (the exit code, -signal, or 'timeout') and resource usage."""
    timed_out = False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = code = os.waitstatus_to_exitcode(status)
            return ("timeout" if timed_out else code), usage
        try:
            began = float(progress.read_text().split("\n")[1])
        except (OSError, IndexError, ValueError):
            began = time.time()
        if time.time() - began > case_seconds and not timed_out:
            child.kill()
            timed_out = True
        time.sleep(0.05)


def fuzz(
    *, kind: str, seed: int, cases: int | None = None, seconds: float | None = None, out: Path | None = None
) -> Report:
    """Run ``cases`` cases (or as many as fit in ``seconds``) of one kind; failing cases are
    copied to ``out``."""
    rng = random.Random(f"{kind}-{seed}")
    seeds = seed_checkpoints() if kind == "checkpoint" else {}
    report = Report()
    deadline = None if seconds is None else time.monotonic() + seconds
    batch = 200 if cases is None else cases
    written = 0
    with tempfile.TemporaryDirectory(prefix="kit-fuzz-") as folder:
        scratch = Path(folder)
        (scratch / "images").mkdir()
        while (cases is None or written < cases) and (deadline is None or time.monotonic() < deadline):
            for old in scratch.glob("0*.*"):
                old.unlink()
            count = batch if cases is None else min(batch, cases - written)
            paths = write_cases(kind, rng, count, scratch, seeds)
            written += count
            before = len(report.failures)
            while paths:
                paths = _run_worker(kind, paths, scratch, report)
            if out is not None:
                _keep(report.failures[before:], out, seed)
    return report


def _keep(failures: Sequence[tuple[str, str]], out: Path, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for case, what in failures:
        source = Path(case)
        if source.is_file():
            kept = out / f"seed{seed}-{source.name}"
            shutil.copyfile(source, kept)
            kept.with_suffix(kept.suffix + ".txt").write_text(what + "\n")


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--worker"]:
        kind, listing, progress = argv[1:4]
        work(kind, json.loads(Path(listing).read_text()), Path(progress))
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="time per kind (default 120)")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock, printed")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument(
        "--out", type=Path, default=REPO / "runs" / "fuzz", help="failing cases (default runs/fuzz)"
    )
    args = parser.parse_args(argv)
    seed = int(time.time()) if args.seed is None else args.seed
    failed = False
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            parser.error(f"--kinds: {kind!r} is not one of {', '.join(KINDS)}")
        report = fuzz(kind=kind, seed=seed, seconds=args.seconds, out=args.out)
        rise, steepest = report.steepest
        print(
            f"{kind}: seed {seed}, {sum(report.counts.values())} cases {report.counts}, peak RSS growth "
            f"{report.growth >> 20} MiB (budget {RSS_GROWTH >> 20}; "
            f"in one case at most {rise >> 20} MiB, {steepest})"
        )
        for case, what in report.failures[:20]:
            print(f"  FAIL {case}: {what}")
        if len(report.failures) > 20:
            print(f"  ... and {len(report.failures) - 20} more")
        failed |= bool(report.failures) or report.growth > RSS_GROWTH
    if failed:
        print(f"failing cases kept in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
