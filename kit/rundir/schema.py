"""What an image's record may hold when it is read back from a run folder (``--resume``, the merge).

A record comes from a file anyone could have edited (``manifest.json``, a part file of
``.kit-parts/``), so each one is checked before it is trusted: the type of every field the kit
uses, every number finite (JSON has no NaN or Infinity), and every path one the writer would have
made for it (``<stem>_summary.jpg``, ``maps/<stem>.npz``, ``<stem>/<name>.jpg``: relative, one
stem, no ``..``, no leading dot). Each check returns None for a good value, else a short reason.

Torch-free, like the journal that calls it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from typing import Any, Callable

MAX_STEM_BYTES = 240  # a stem is at most 100 bytes, plus _2, _3, ... (kit.rundir.writer.safe_stem)
MAX_DEPTH = 64  # a record is a few levels deep; deeper is not one the kit wrote

Check = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite number that fits a float (an integer of 400 digits does not: math.isfinite raises)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def safe_count(value: Any) -> bool:
    """A whole number >= 0 (not a boolean): a position in the source list, a count."""
    return _is_int(value) and value >= 0


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _int(value: Any) -> str | None:
    return None if _is_int(value) else f"{_shown(value)} is not a whole number"


def _count(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else f"{_shown(value)} is not a count"


def _size(value: Any) -> str | None:
    return None if _is_int(value) and value > 0 else f"{_shown(value)} is not a size in pixels"


def _number(value: Any) -> str | None:
    return None if _is_number(value) else f"{_shown(value)} is not a finite number"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{_shown(value)} is not text"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{_shown(value)} is not true or false"


def _box(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
        return None
    return f"{_shown(value)} is not a box of 4 finite numbers"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _fields(value: Any, checks: Mapping[str, Check], *, required: tuple[str, ...] = ()) -> str | None:
    """``value`` is a JSON object whose fields pass their checks (missing optional ones count as None)."""
    if not isinstance(value, dict):
        return f"{_shown(value)} is not an object"
    for name in required:
        if name not in value:
            return f"'{name}' is missing"
    for name, check in checks.items():
        problem = check(value.get(name))
        if problem:
            return f"'{name}': {problem}"
    return None


def _each(check: Check) -> Check:
    def checked(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"{_shown(value)} is not a list"
        for position, item in enumerate(value):
            problem = check(item)
            if problem:
                return f"[{position}] {problem}"
        return None

    return checked


def safe_stem(stem: Any) -> bool:
    """A name the writer could have given an image's files: one path component, no leading dot."""
    return (
        isinstance(stem, str)
        and bool(stem)
        and not stem.startswith(".")
        and not any(c in stem for c in "/\\\0")
        and len(stem.encode("utf-8", "surrogatepass")) <= MAX_STEM_BYTES
    )


def stem_of_summary(summary: Any) -> str | None:
    """The stem of ``<stem>_summary.jpg``; None when ``summary`` is no such name."""
    if isinstance(summary, str) and summary.endswith("_summary.jpg"):
        stem = summary[: -len("_summary.jpg")]
        return stem if safe_stem(stem) else None
    return None


def _map_entry(stem: str | None) -> Check:
    def overlay(value: Any) -> str | None:
        if value is None:
            return None
        head, _, name = value.partition("/") if isinstance(value, str) else ("", "", "")
        if stem is None or head != stem or not safe_stem(name) or not name.endswith(".jpg"):
            return f"{_shown(value)} is not an overlay of this image's folder"
        return None

    checks = {
        "overlay": overlay,
        "energy_in_box": _optional(_number),
        "no_gradient": _optional(_flag),
        "key": _optional(_text),
    }
    return lambda value: _fields(value, checks)


def _maps(stem: str | None) -> Check:
    entry = _map_entry(stem)

    def checked(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            return f"{_shown(value)} is not an object of layers"
        for layer, one in value.items():
            problem = entry(one)
            if problem:
                return f"layer {_shown(layer)}: {problem}"
        return None

    return checked


def _detection(stem: str | None) -> Check:
    checks = {
        "id": _int,
        "box_xyxy": _box,
        "class_id": _int,
        "class_name": _text,
        "score": _number,
        "level": _optional(_int),
        "maps": _maps(stem),
    }
    return lambda value: _fields(value, checks, required=("id", "box_xyxy", "class_id", "score"))


def _missed(stem: str | None) -> Check:
    candidate = {
        "box": _optional(_box),
        "score": _optional(_number),
        "iou": _optional(_number),
        "why": _text,
        "level": _optional(_int),
        "suppressed_by": _optional(_int),
        "other_class": _optional(_int),
        "other_class_name": _optional(_text),
        "detection": _optional(_int),
        "maps": _maps(stem),
    }
    checks = {
        "id": _int,
        "gt_box": _box,
        "class_id": _int,
        "class_name": _text,
        "candidate": lambda value: _fields(value, candidate),
    }
    return lambda value: _fields(value, checks, required=("id", "gt_box", "class_id", "candidate"))


def record_problem(record: Any) -> str | None:
    """Why ``record`` (an image's entry of a manifest or part) cannot be trusted; None when it can."""
    if not isinstance(record, dict):
        return "the record is not an object"
    summary = record.get("summary")
    stem = stem_of_summary(summary)
    if summary is not None and stem is None:
        return f"'summary': {_shown(summary)} is not a summary sheet the kit names"
    maps_file = record.get("maps_file")
    if maps_file is not None and (stem is None or maps_file != f"maps/{stem}.npz"):
        return f"'maps_file': {_shown(maps_file)} is not this image's maps file"
    checks = {
        "file": _text,
        "width": _optional(_size),
        "height": _optional(_size),
        "error": _optional(_text),
        "detections": _each(_detection(stem)),
        "missed": _optional(_each(_missed(stem))),
    }
    return _fields(record, checks, required=("file", "detections")) or non_finite(record)


# What an image's measurement (``--eval``) must hold for kit.evaluation.evaluate.Evaluator.absorb to read it.
def _measures(value: Any) -> str | None:
    checks = {
        "pg": lambda v: (
            None if isinstance(v, bool) or _is_number(v) else f"{_shown(v)} is not a hit or a number"
        ),
        "ebpg": _optional(_number),
        **{k: _optional(_number) for k in ("deletion_auc", "insertion_auc", "box_deletion_auc")},
    }
    problem = _fields(value, checks, required=("pg",))
    if problem is None and "deletion_auc" in value and "insertion_auc" not in value:
        return "'insertion_auc' is missing"
    return problem


def _row(value: Any) -> str | None:
    def maps(one: Any) -> str | None:
        if not isinstance(one, dict):
            return f"{_shown(one)} is not an object of maps"
        return next((f"{_shown(k)}: {p}" for k, m in one.items() if (p := _measures(m))), None)

    return _fields(value, {"maps": maps}, required=("maps",))


def measured_problem(measured: Any) -> str | None:
    """Why an image's measurement cannot be trusted; None when it can."""
    lists = ("unmatched", "skipped")
    checks: dict[str, Check] = {
        **{k: _count for k in ("images", "ground_truth", "detections")},
        "rows": _each(_row),
        "tried": _each(_flag),
        **{k: _each(lambda v: None) for k in lists},
        "missed": _optional(_each(lambda v: None)),
        "layers": _each(_text),
        "curve_error": _optional(_text),
        "seconds": _number,
        "curve_seconds": _number,
    }
    required = (
        "images",
        "ground_truth",
        "detections",
        "rows",
        "tried",
        *lists,
        "layers",
        "seconds",
        "curve_seconds",
    )
    return _fields(measured, checks, required=required) or non_finite(measured)


def non_finite(value: Any) -> str | None:
    """Where ``value`` (parsed JSON) holds NaN or an infinity (named by its top-level field), or
    nests deeper than a record does; None when it does not. Walks without recursion, holding one
    iterator per level (a hostile line of millions of values costs no more than its parse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"the value is {value}, not a finite number"
    stack: list[tuple[Iterator[tuple[Any, Any]], str]] = []
    _push(stack, value, "")
    while stack:
        if len(stack) > MAX_DEPTH:
            return f"{stack[-1][1] or 'the value'} nests deeper than a record does"
        items, where = stack[-1]
        step = next(items, None)
        if step is None:
            stack.pop()
            continue
        key, item = step
        here = where or str(key)
        if isinstance(item, float) and not math.isfinite(item):
            return f"{here} holds {item}, not a finite number"
        _push(stack, item, here)
    return None


def _push(stack: list[tuple[Iterator[tuple[Any, Any]], str]], item: Any, where: str) -> None:
    if isinstance(item, dict):
        stack.append((iter(item.items()), where))
    elif isinstance(item, list):
        stack.append((iter(enumerate(item)), where))


def finite_or_none(value: Any) -> tuple[Any, int]:
    """``value`` (JSON-like) with every NaN and infinity replaced by None, and how many there were."""
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, numbers.Integral)
        and not math.isfinite(value)
    ):
        return None, 1
    if isinstance(value, Mapping):
        pairs = [(k, finite_or_none(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(value, (list, tuple)):
        items = [finite_or_none(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0
