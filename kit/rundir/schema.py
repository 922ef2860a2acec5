"""The run folder's format, in one place: every file name, every manifest key, the records the
writer serializes into the manifest, and what a record read back may hold. Torch-free (the audit,
the report and the journal read through it).

**Versions.** ``manifest.json`` carries ``schema_version`` (:data:`SCHEMA_VERSION`); a manifest
without it was written before versions (version 1, the same records) and still reads. A manifest
of a newer version than this kit knows is refused (:func:`check_version`) with the file, its
version and what to do: upgrade the kit.

**Records read back.** A record comes from a file anyone could have edited (``manifest.json``, a
part file of ``.kit-parts/``), so each one is checked before it is trusted: the type of every
field the kit uses, every number finite (JSON has no NaN or Infinity), and every path one the
writer would have made for it (``<stem>_summary.jpg``, ``maps/<stem>.npz``, ``<stem>/<name>.jpg``:
relative, one stem, no ``..``, no leading dot). Each check returns None for a good value, else a
short reason.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from kit.core.errors import OutputError

if TYPE_CHECKING:  # the records are torch-free; the results they serialize are not
    from kit.core.results import DetectionResult, MissedResult

# ---- versions ------------------------------------------------------------------------------------
SCHEMA_VERSION = 2  # 2: manifest.json names its version; 1: the same records, before versions
VERSION_KEY = "schema_version"
PART_VERSION = 1  # the header line of a part file: {"kit_part": 1, ...}

# ---- the files of a run folder -------------------------------------------------------------------
MANIFEST_NAME = "manifest.json"
EVAL_NAME = "eval.json"  # --eval's report
AUDIT_NAME = "audit.json"  # --audit / python -m kit.evaluation.audit
REPORT_NAME = "index.html"  # the page (python -m kit.report.page)
LOCK_NAME = ".kit.lock"  # the lock of the run that writes the folder
PARTS_DIR = ".kit-parts"  # each process's part file while a run writes
MAPS_DIR = "maps"  # maps/<stem>.npz
SUMMARY_SUFFIX = "_summary.jpg"  # <stem>_summary.jpg
# The files a run derives from its manifest at its end: a fresh run (--overwrite) removes the old ones.
DERIVED = (EVAL_NAME, AUDIT_NAME, REPORT_NAME)
# The run folder's own files and folders (besides each image's): checked before a run writes.
OWN_FILES = (MANIFEST_NAME, *DERIVED, LOCK_NAME)
OWN_FOLDERS = (MAPS_DIR, PARTS_DIR)
# Names no image's stem may take: an image called maps.jpg becomes maps_2, manifest.json.png
# manifest.json_2 (checked case-insensitively, as on macOS and Windows file systems).
RESERVED_NAMES = frozenset({MAPS_DIR, MANIFEST_NAME, EVAL_NAME, AUDIT_NAME, REPORT_NAME, LOCK_NAME})

# ---- the manifest's keys -------------------------------------------------------------------------
HEAD_KEYS = ("upstream", "weights", "method", "target", "layers")  # what was run, in this order
IMAGES_KEY = "images"  # the list of image records (ImageRecord.to_json)
INTERRUPTED_KEY = "interrupted"  # true: stopped by Ctrl-C, every finished image recorded
FINISHED_KEY = "finished"  # true: the run ended and merged its parts
UNMERGED_KEY = "unmerged_parts"  # what a reader adds: the part files of a run that did not finish
FUSED = "fused"  # the layer name of --fuse's map (kit.core.results.FUSED; a test holds them equal)
# Keys that record how a run went, not what decides its maps (not compared on resume).
BOOKKEEPING = frozenset(
    {INTERRUPTED_KEY, FINISHED_KEY, IMAGES_KEY, "processes", "batch_size", "kit_version", "argv", VERSION_KEY}
)


def summary_name(stem: str) -> str:
    """An image's summary sheet: ``<stem>_summary.jpg``."""
    return f"{stem}{SUMMARY_SUFFIX}"


def maps_name(stem: str) -> str:
    """An image's maps: ``maps/<stem>.npz``."""
    return f"{MAPS_DIR}/{stem}.npz"


class SchemaVersionError(OutputError):
    """A manifest of a newer format than this kit reads."""


def check_version(manifest: Mapping[str, Any], path: Path | str) -> int:
    """The schema version of ``manifest`` (read from ``path``): 1 when it names none. A version this
    kit does not know (newer, or not a whole number) raises :class:`SchemaVersionError`."""
    version = manifest.get(VERSION_KEY, 1)
    if not _is_int(version) or version < 1:
        raise SchemaVersionError(
            f"{path} has {VERSION_KEY} {shown_value(version)}, not a version the kit writes (a whole number "
            f"from 1 to {SCHEMA_VERSION}); it is not a manifest of the kit, or it is damaged"
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has {VERSION_KEY} {version}, newer than this kit reads (up to {SCHEMA_VERSION}): a "
            "newer kit wrote it; upgrade the kit to read it (it was left as it is)"
        )
    return int(version)


# ---- the records: the writer serializes them, a reader reads them back -------------------------
# Each record has ``to_json`` (its manifest entry) and ``from_json`` (the entry read back, checked:
# a :class:`RecordError` naming the field when it is not one the kit wrote; the same checks as
# :func:`record_problem`). Old or damaged manifests are read through the views further down.
class RecordError(OutputError):
    """A record read back that the kit did not write: ``problem`` names the field and its value (as
    :func:`record_problem` says it)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _checked(problem: str | None) -> None:
    if problem is not None:
        raise RecordError(problem)


@dataclass
class MapRecord:
    """One map of one detection: where its overlay is, and how much of it falls in the box."""

    layer: str
    overlay: Optional[str]
    energy_in_box: Optional[float]
    no_gradient: bool = False
    key: Optional[str] = None  # the array's name in maps/<stem>.npz

    @classmethod
    def unreached(cls, layer: str) -> MapRecord:
        """The record of a layer no gradient reached: no overlay, no array."""
        return cls(layer=layer, overlay=None, energy_in_box=None, no_gradient=True)

    def to_json(self) -> dict[str, Any]:
        """The entry under the map's layer name."""
        return {
            "overlay": self.overlay,
            "energy_in_box": self.energy_in_box,
            "no_gradient": self.no_gradient,
            "key": self.key,
        }

    @classmethod
    def from_json(cls, value: Any, *, layer: str, stem: Optional[str] = None) -> MapRecord:
        """The map ``layer`` of a detection of the image whose files are ``stem``'s, read back."""
        _checked(_map_entry(stem)(value) or non_finite(value))
        return cls._of(layer, value)

    @classmethod
    def _of(cls, layer: str, value: Mapping[str, Any]) -> MapRecord:
        return cls(
            layer=layer,
            overlay=value.get("overlay"),
            energy_in_box=value.get("energy_in_box"),
            no_gradient=value.get("no_gradient") is True,
            key=value.get("key"),
        )


def _maps_json(maps: Sequence[MapRecord]) -> dict[str, Any]:
    return {m.layer: m.to_json() for m in maps}


def _maps_read(value: Any) -> list[MapRecord]:
    return [MapRecord._of(str(layer), one) for layer, one in (value or {}).items()]


@dataclass
class DetectionRecord:
    """A detection in original-image pixels with its maps."""

    id: int
    box_xyxy: list[float]
    class_id: int
    class_name: str
    score: float
    level: Optional[int]
    maps: list[MapRecord] = field(default_factory=list)

    @classmethod
    def of(cls, result: DetectionResult) -> DetectionRecord:
        """The record of a detection's result, its maps still to add (the writer adds each as it
        writes its overlay)."""
        return cls(
            id=result.id,
            box_xyxy=list(result.box_xyxy),
            class_id=result.class_id,
            class_name=result.class_name,
            score=result.score,
            level=result.level,
        )

    def to_json(self) -> dict[str, Any]:
        """The entry of the image's ``detections``: its maps keyed by layer name."""
        return {
            "id": self.id,
            "box_xyxy": list(self.box_xyxy),
            "class_id": self.class_id,
            "class_name": self.class_name,
            "score": self.score,
            "level": self.level,
            "maps": _maps_json(self.maps),
        }

    @classmethod
    def from_json(cls, value: Any, *, stem: Optional[str] = None) -> DetectionRecord:
        """A detection's entry read back (its overlays in the folder of ``stem``, the image's)."""
        _checked(_detection(stem)(value) or non_finite(value))
        return cls._of(value)

    @classmethod
    def _of(cls, value: Mapping[str, Any]) -> DetectionRecord:
        return cls(
            id=value["id"],
            box_xyxy=list(value["box_xyxy"]),
            class_id=value["class_id"],
            class_name=value["class_name"],
            score=value["score"],
            level=value.get("level"),
            maps=_maps_read(value.get("maps")),
        )


@dataclass
class CandidateRecord:
    """A missed object's best candidate: the pre-NMS row or proposal that overlaps it most (``box``
    None: there is none), its score for the object's class and why it was not kept
    (:class:`kit.core.detection.MissedReason`'s value), with the field that reason uses."""

    box: Optional[list[float]]
    score: Optional[float]
    iou: Optional[float]
    why: str
    level: Optional[int]
    suppressed_by: Optional[int] = None  # why == "suppressed": the kept detection's id
    other_class: Optional[int] = None  # why == "other_class"
    other_class_name: Optional[str] = None
    detection: Optional[int] = None  # why == "mislocalized": the kept detection's id

    def to_json(self) -> dict[str, Any]:
        """The candidate's fields, those of its ``why`` only."""
        out: dict[str, Any] = {
            "box": None if self.box is None else list(self.box),
            "score": self.score,
            "iou": self.iou,
            "why": self.why,
            "level": self.level,
        }
        if self.why == "suppressed":
            out["suppressed_by"] = self.suppressed_by
        if self.why == "other_class":
            out["other_class"] = self.other_class
            out["other_class_name"] = self.other_class_name
        if self.why == "mislocalized":
            out["detection"] = self.detection
        return out

    @classmethod
    def _of(cls, value: Mapping[str, Any]) -> CandidateRecord:
        box = value.get("box")
        return cls(
            box=None if box is None else list(box),
            score=value.get("score"),
            iou=value.get("iou"),
            why=value["why"],
            level=value.get("level"),
            suppressed_by=value.get("suppressed_by"),
            other_class=value.get("other_class"),
            other_class_name=value.get("other_class_name"),
            detection=value.get("detection"),
        )


@dataclass
class MissedRecord:
    """A ground-truth object no detection matched (``--explain-missed``): its box and class, not a
    detection's, and its best candidate, whose maps these are."""

    id: int  # its overlays are <stem>/missed<id>_<layer>.jpg
    gt_box: list[float]
    class_id: int
    class_name: str
    candidate: CandidateRecord
    maps: list[MapRecord] = field(default_factory=list)  # the candidate's: written into candidate.maps

    @classmethod
    def of(cls, result: MissedResult) -> MissedRecord:
        """The record of a missed object's result, its maps still to add: its best candidate holds
        the fields its ``why`` uses."""
        candidate = CandidateRecord(
            box=None if result.box_xyxy is None else list(result.box_xyxy),
            score=result.score,
            iou=result.iou,
            why=result.why,
            level=result.level,
            suppressed_by=result.suppressed_by if result.why == "suppressed" else None,
            other_class=result.other_class if result.why == "other_class" else None,
            other_class_name=result.other_class_name if result.why == "other_class" else None,
            detection=result.detection if result.why == "mislocalized" else None,
        )
        return cls(
            id=result.id,
            gt_box=list(result.gt_box_xyxy),
            class_id=result.class_id,
            class_name=result.class_name,
            candidate=candidate,
        )

    def to_json(self) -> dict[str, Any]:
        """The entry of the image's ``missed``: the maps under its candidate."""
        candidate = {**self.candidate.to_json(), "maps": _maps_json(self.maps)}
        return {
            "id": self.id,
            "gt_box": list(self.gt_box),
            "class_id": self.class_id,
            "class_name": self.class_name,
            "candidate": candidate,
        }

    @classmethod
    def from_json(cls, value: Any, *, stem: Optional[str] = None) -> MissedRecord:
        """A missed object's entry read back (its overlays in the folder of ``stem``, the image's)."""
        _checked(_missed(stem)(value) or non_finite(value))
        return cls._of(value)

    @classmethod
    def _of(cls, value: Mapping[str, Any]) -> MissedRecord:
        candidate = value["candidate"]
        return cls(
            id=value["id"],
            gt_box=list(value["gt_box"]),
            class_id=value["class_id"],
            class_name=value["class_name"],
            candidate=CandidateRecord._of(candidate),
            maps=_maps_read(candidate.get("maps")),
        )


@dataclass
class ImageRecord:
    """One source file: its detections, or the error that stopped it."""

    file: str
    width: Optional[int]
    height: Optional[int]
    detections: list[DetectionRecord]
    error: Optional[str]
    summary: Optional[str] = None
    maps_file: Optional[str] = None
    missed: Optional[list[MissedRecord]] = None  # --explain-missed only

    def to_json(self) -> dict[str, Any]:
        """The manifest entry: maps keyed by layer name (``missed`` only when the run explains
        missed objects)."""
        out = {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "detections": [d.to_json() for d in self.detections],
            "error": self.error,
            "summary": self.summary,
            "maps_file": self.maps_file,
        }
        if self.missed is not None:
            out["missed"] = [m.to_json() for m in self.missed]
        return out

    @classmethod
    def from_json(cls, value: Any) -> ImageRecord:
        """An image's entry of a manifest or part read back; a :class:`RecordError` says why it
        cannot be trusted (:func:`record_problem`)."""
        _checked(record_problem(value))
        missed = value.get("missed")
        return cls(
            file=value["file"],
            width=value.get("width"),
            height=value.get("height"),
            detections=[DetectionRecord._of(d) for d in value["detections"]],
            error=value.get("error"),
            summary=value.get("summary"),
            maps_file=value.get("maps_file"),
            missed=None if missed is None else [MissedRecord._of(m) for m in missed],
        )

    @property
    def stem(self) -> Optional[str]:
        """The stem the image's files were written under (None: it has none)."""
        return stem_of_summary(self.summary)

    def files(self) -> list[str]:
        """Every file of the run folder the record names: summary, maps, overlays."""
        maps = [m for d in self.detections for m in d.maps] + [m for o in self.missed or [] for m in o.maps]
        named = [self.summary, self.maps_file, *(m.overlay for m in maps)]
        return [f for f in named if f is not None]


# ---- what a record read back may hold ------------------------------------------------------------
MAX_STEM_BYTES = 240  # a stem is at most 100 bytes, plus _2, _3, ... (kit.rundir.naming.safe_stem)
MAX_DEPTH = 64  # a record is a few levels deep; deeper is not one the kit wrote

Check = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
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
    return None if _is_int(value) else f"{shown_value(value)} is not a whole number"


def _count(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else f"{shown_value(value)} is not a count"


def _size(value: Any) -> str | None:
    return None if _is_int(value) and value > 0 else f"{shown_value(value)} is not a size in pixels"


def _number(value: Any) -> str | None:
    return None if is_finite_number(value) else f"{shown_value(value)} is not a finite number"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{shown_value(value)} is not text"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{shown_value(value)} is not true or false"


def _box(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 4 and all(is_finite_number(v) for v in value):
        return None
    return f"{shown_value(value)} is not a box of 4 finite numbers"


def shown_value(value: Any) -> str:
    """A value read back, as a message shows it: its ``repr``, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _fields(value: Any, checks: Mapping[str, Check], *, required: tuple[str, ...] = ()) -> str | None:
    """``value`` is a JSON object whose fields pass their checks (missing optional ones count as None)."""
    if not isinstance(value, dict):
        return f"{shown_value(value)} is not an object"
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
            return f"{shown_value(value)} is not a list"
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
    if isinstance(summary, str) and summary.endswith(SUMMARY_SUFFIX):
        stem = summary[: -len(SUMMARY_SUFFIX)]
        return stem if safe_stem(stem) else None
    return None


def _map_entry(stem: str | None) -> Check:
    def overlay(value: Any) -> str | None:
        if value is None:
            return None
        head, _, name = value.partition("/") if isinstance(value, str) else ("", "", "")
        if stem is None or head != stem or not safe_stem(name) or not name.endswith(".jpg"):
            return f"{shown_value(value)} is not an overlay of this image's folder"
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
            return f"{shown_value(value)} is not an object of layers"
        for layer, one in value.items():
            problem = entry(one)
            if problem:
                return f"layer {shown_value(layer)}: {problem}"
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
        return f"'summary': {shown_value(summary)} is not a summary sheet the kit names"
    maps_file = record.get("maps_file")
    if maps_file is not None and (stem is None or maps_file != maps_name(stem)):
        return f"'maps_file': {shown_value(maps_file)} is not this image's maps file"
    checks = {
        "file": _text,
        "width": _optional(_size),
        "height": _optional(_size),
        "error": _optional(_text),
        "detections": _each(_detection(stem)),
        "missed": _optional(_each(_missed(stem))),
    }
    return _fields(record, checks, required=("file", "detections")) or non_finite(record)


# ---- records of old or damaged manifests, read tolerantly ----------------------------------------
# The audit and the report read any manifest the kit wrote, old ones too (maps as a list, fields
# missing), and show what a damaged one still holds: through these views, each field its value
# when it has its type, else None (or the default said), never a record refused whole.
def as_number(value: Any) -> Optional[float]:
    """A finite float, or None (null, bool, text, NaN, infinity, an integer beyond a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # 10**400 in a manifest from someone else
        return None
    return value if math.isfinite(value) else None


def as_whole(value: Any) -> Optional[int]:
    """A whole number (an integral float too), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_text(value: Any, *, default: str) -> str:
    """A text value; ``default`` for null, any other value as ``str`` shows it."""
    return value if isinstance(value, str) else default if value is None else str(value)


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def maps_of(value: Any) -> dict[str, Any]:
    """A detection's maps by layer name (the manifest's dict; a list of records with ``layer`` too,
    as the first manifests wrote them)."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(m["layer"]): m for m in value if isinstance(m, dict) and "layer" in m}
    return {}


def _text_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


class MapView:
    """One map entry of a detection as read back: ``is_record`` False when it is no object at all."""

    __slots__ = ("layer", "raw", "is_record")

    def __init__(self, layer: str, raw: Any) -> None:
        self.layer, self.raw = layer, as_dict(raw)
        self.is_record = isinstance(raw, dict)

    @property
    def overlay_given(self) -> bool:
        """Whether the entry names an overlay at all (any value but null)."""
        return self.raw.get("overlay") is not None

    @property
    def overlay(self) -> Optional[str]:
        return _text_or_none(self.raw.get("overlay"))

    @property
    def key(self) -> Optional[str]:
        return _text_or_none(self.raw.get("key"))

    @property
    def energy_given(self) -> bool:
        """Whether the entry holds a value for ``energy_in_box`` (null: no gradient reached it)."""
        return self.raw.get("energy_in_box") is not None

    @property
    def energy_in_box(self) -> Optional[float]:
        return as_number(self.raw.get("energy_in_box"))

    @property
    def no_gradient(self) -> bool:
        return self.raw.get("no_gradient") is True


def _maps_view(value: Any) -> list[MapView]:
    return [MapView(layer, one) for layer, one in maps_of(value).items()]


class DetectionView:
    """A detection entry as read back (a JSON object; see :class:`ImageView`)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @property
    def id(self) -> Optional[int]:
        return as_whole(self.raw.get("id"))

    @property
    def class_id(self) -> Optional[int]:
        return as_whole(self.raw.get("class_id"))

    @property
    def class_name(self) -> str:
        """Its class name; its class id as text when it has none, else ``?``."""
        class_id = self.class_id
        return as_text(self.raw.get("class_name"), default="?" if class_id is None else str(class_id))

    @property
    def score(self) -> Optional[float]:
        return as_number(self.raw.get("score"))

    @property
    def level(self) -> Optional[int]:
        return as_whole(self.raw.get("level"))

    @property
    def box(self) -> Optional[list[Optional[float]]]:
        """Its box's values (each None when not a finite number); None when it is no list."""
        box = self.raw.get("box_xyxy")
        return [as_number(v) for v in box] if isinstance(box, list) else None

    @property
    def maps(self) -> list[MapView]:
        """Its maps in the record's order, by layer name."""
        return _maps_view(self.raw.get("maps"))


class MissedView:
    """A missed object's entry as read back (``--explain-missed``)."""

    __slots__ = ("raw", "candidate")

    def __init__(self, raw: Any) -> None:
        self.raw = as_dict(raw)
        self.candidate = as_dict(self.raw.get("candidate"))

    @property
    def class_id(self) -> Optional[int]:
        return as_whole(self.raw.get("class_id"))

    @property
    def class_name(self) -> str:
        return as_text(self.raw.get("class_name"), default="?")

    @property
    def gt_box(self) -> list[float]:
        """Its ground-truth box (a value that is no finite number as 0); empty when it is no list."""
        box = self.raw.get("gt_box")
        return [as_number(v) or 0.0 for v in box] if isinstance(box, list) else []

    @property
    def why(self) -> str:
        return as_text(self.candidate.get("why"), default="?")

    @property
    def suppressed_by(self) -> Optional[int]:
        return as_whole(self.candidate.get("suppressed_by"))

    @property
    def other_class_name(self) -> Optional[str]:
        name = self.candidate.get("other_class_name")
        return None if name is None else as_text(name, default="")

    @property
    def detection(self) -> Optional[int]:
        return as_whole(self.candidate.get("detection"))

    @property
    def maps(self) -> list[MapView]:
        """Its candidate's maps (a manifest's dict of layers only)."""
        return [MapView(str(layer), one) for layer, one in as_dict(self.candidate.get("maps")).items()]


class ImageView:
    """An image's entry of a manifest as read back by the audit and the report: any manifest the kit
    wrote, old or damaged, each field its value when it has its type (see :meth:`of`)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @classmethod
    def of(cls, value: Any) -> Optional[ImageView]:
        """The view of ``value``; None when it is not a JSON object (not an image record)."""
        return cls(value) if isinstance(value, dict) else None

    @property
    def file(self) -> str:
        return as_text(self.raw.get("file"), default="?")

    @property
    def width(self) -> Optional[int]:
        return as_whole(self.raw.get("width"))

    @property
    def height(self) -> Optional[int]:
        return as_whole(self.raw.get("height"))

    @property
    def area(self) -> Optional[float]:
        """Its width times its height in pixels (any positive numbers); None when either is unknown."""
        width, height = as_number(self.raw.get("width")), as_number(self.raw.get("height"))
        return width * height if width and height and width > 0 and height > 0 else None

    @property
    def error(self) -> Optional[str]:
        """Why the image failed, as text; None for an image explained."""
        error = self.raw.get("error")
        return None if error is None else as_text(error, default="")

    @property
    def summary(self) -> Any:
        """The summary sheet's path as recorded (any value: a reader checks it is a file of the folder)."""
        return self.raw.get("summary")

    @property
    def maps_file(self) -> Optional[str]:
        return _text_or_none(self.raw.get("maps_file"))

    @property
    def stem(self) -> Optional[str]:
        """The stem its files were written under, read off their names (None: none is one)."""
        summary, maps_file = self.summary, self.maps_file
        if isinstance(summary, str) and summary.endswith(SUMMARY_SUFFIX):
            return summary[: -len(SUMMARY_SUFFIX)]
        prefix, suffix = f"{MAPS_DIR}/", ".npz"
        if maps_file is not None and maps_file.startswith(prefix) and maps_file.endswith(suffix):
            return maps_file[len(prefix) : -len(suffix)]
        return None

    def detections(self) -> Optional[list[Optional[DetectionView]]]:
        """Its detections (None for an entry that is no object); None when they are no list (none: [])."""
        found = self.raw.get("detections") or []
        if not isinstance(found, list):
            return None
        return [DetectionView(d) if isinstance(d, dict) else None for d in found]

    def missed(self) -> list[MissedView]:
        """Its missed objects (``--explain-missed``); none when it has no list of them."""
        found = self.raw.get("missed") or []
        return [MissedView(m) for m in found] if isinstance(found, list) else []


def file_of(record: Mapping[str, Any]) -> Any:
    """An image record's ``file`` as it is (any value, None when it has none)."""
    return record.get("file")


def file_key(record: Mapping[str, Any]) -> str:
    """An image record's ``file`` as the journal keys it (``str`` of any value)."""
    return str(file_of(record))


def has_error(record: Mapping[str, Any]) -> bool:
    """Whether an image record says its image failed."""
    return record.get("error") is not None


# What an image's measurement (``--eval``) must hold for kit.evaluation.evaluate.Evaluator.absorb to read it.
def _measures(value: Any) -> str | None:
    checks = {
        "pg": lambda v: (
            None
            if isinstance(v, bool) or is_finite_number(v)
            else f"{shown_value(v)} is not a hit or a number"
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
            return f"{shown_value(one)} is not an object of maps"
        return next((f"{shown_value(k)}: {p}" for k, m in one.items() if (p := _measures(m))), None)

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


@dataclass
class Measurement:
    """What one image's measurement added to the evaluation (``--eval``), recorded with the image in
    its part file so that a run split over processes, or resumed, is evaluated as one
    (:meth:`kit.evaluation.evaluate.Evaluator.absorb`). ``rows``, ``unmatched``, ``missed`` and
    ``skipped`` are ``eval.json``'s entries as the evaluator writes them; ``tried`` says, per row,
    whether its curves were attempted."""

    images: int
    ground_truth: int
    detections: int
    rows: list[dict[str, Any]]
    tried: list[bool]
    unmatched: list[dict[str, Any]]
    missed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    layers: list[str]
    curve_error: Optional[str]
    seconds: float
    curve_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The part line's ``eval``."""
        return {
            "images": self.images,
            "ground_truth": self.ground_truth,
            "detections": self.detections,
            "rows": self.rows,
            "tried": self.tried,
            "unmatched": self.unmatched,
            "missed": self.missed,
            "skipped": self.skipped,
            "layers": self.layers,
            "curve_error": self.curve_error,
            "seconds": self.seconds,
            "curve_seconds": self.curve_seconds,
        }

    @classmethod
    def from_json(cls, value: Any) -> Measurement:
        """A part line's ``eval`` read back; a :class:`RecordError` says why it cannot be trusted
        (:func:`measured_problem`). A part written before missed boxes were recorded has none."""
        _checked(measured_problem(value))
        return cls(
            images=value["images"],
            ground_truth=value["ground_truth"],
            detections=value["detections"],
            rows=value["rows"],
            tried=value["tried"],
            unmatched=value["unmatched"],
            missed=value.get("missed") or [],
            skipped=value["skipped"],
            layers=value["layers"],
            curve_error=value.get("curve_error"),
            seconds=value["seconds"],
            curve_seconds=value["curve_seconds"],
        )


# ---- eval.json's entries -------------------------------------------------------------------------
# ``--eval`` lists, per image, its matched detections (each with its maps' measures), the unmatched
# ones, the ground-truth boxes no detection matched, and the images the labels could not score.
# The evaluator writes them with these records; the audit and the report read them with
# :class:`EvalEntryView`.
@dataclass
class MatchedRow:
    """A detection matched to a ground-truth box: the detection as its record names it, the box it
    matched (to 0.01 px) and their IoU (to 1e-4), and its measures per map name (pg, ebpg, curves)."""

    file: str
    id: int
    class_id: int
    class_name: str
    score: float
    box_xyxy: list[float]
    gt_box_xyxy: list[float]
    iou: float
    maps: dict[str, dict[str, Any]]

    @classmethod
    def of(
        cls, file: str, detection: DetectionResult, *, gt_box: Iterable[float], iou: float,
        maps: dict[str, dict[str, Any]],
    ) -> MatchedRow:  # fmt: skip
        """The row of ``detection`` of image ``file`` (as the manifest names it)."""
        return cls(
            file=file,
            id=detection.id,
            class_id=detection.class_id,
            class_name=detection.class_name,
            score=detection.score,
            box_xyxy=list(detection.box_xyxy),
            gt_box_xyxy=[round(float(v), 2) for v in gt_box],
            iou=round(iou, 4),
            maps=maps,
        )

    def to_json(self) -> dict[str, Any]:
        """The entry of eval.json's ``detections``."""
        return {
            "file": self.file,
            "id": self.id,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "score": self.score,
            "box_xyxy": self.box_xyxy,
            "gt_box_xyxy": self.gt_box_xyxy,
            "iou": self.iou,
            "maps": self.maps,
        }


@dataclass
class UnmatchedRow:
    """A detection of an evaluated image that matched no ground truth (eval.json's ``unmatched``)."""

    file: str
    id: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "id": self.id}


@dataclass
class MissedBox:
    """A ground-truth box no detection matched (eval.json's ``missed``), to 0.01 px."""

    file: str
    class_id: int
    box_xyxy: list[float]

    @classmethod
    def of(cls, file: str, class_id: int, box: Iterable[float]) -> MissedBox:
        return cls(file=file, class_id=class_id, box_xyxy=[round(float(v), 2) for v in box])

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "class_id": self.class_id, "box_xyxy": self.box_xyxy}


@dataclass
class SkippedImage:
    """An image the labels could not score, and why (eval.json's ``images.skipped``)."""

    file: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason}


def row_measures(row: Mapping[str, Any]) -> dict[str, Any]:
    """A matched row's measures by map name (as the evaluator keeps it: a dict of measures)."""
    return dict(row["maps"])


def with_measures(row: Mapping[str, Any], measures: Mapping[str, Any]) -> dict[str, Any]:
    """A matched row with other measures (the same fields, in the same order)."""
    return {**row, "maps": dict(measures)}


class EvalEntryView:
    """An entry of an ``eval.json`` (matched, unmatched, missed or skipped) as read back: any file,
    each field its value when it has its type (as :class:`ImageView` reads a manifest's records)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = as_dict(raw)

    @property
    def file(self) -> str:
        return as_text(self.raw.get("file"), default="?")

    @property
    def id(self) -> Optional[int]:
        return as_whole(self.raw.get("id"))

    @property
    def class_id(self) -> Optional[int]:
        return as_whole(self.raw.get("class_id"))

    @property
    def iou(self) -> Optional[float]:
        return as_number(self.raw.get("iou"))

    @property
    def box(self) -> Optional[list[Any]]:
        """The box's values as recorded (a missed box's); None when it is no list."""
        box = self.raw.get("box_xyxy")
        return box if isinstance(box, list) else None

    @property
    def measures(self) -> dict[str, dict[str, Any]]:
        """A matched row's measures by map name (each an object; anything else as an empty one)."""
        return {str(k): as_dict(v) for k, v in as_dict(self.raw.get("maps")).items()}


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
