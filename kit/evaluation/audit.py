"""``python -m kit.evaluation.audit RUN``: where a whole run's maps lie against their boxes, per class.

A run folder's manifest holds, per detection and map, ``energy_in_box``: the share of the map's
mass inside the detection's box. The audit reads every detection of a run at one map and gives,
per class, how many detections there are, the median and 10th percentile of ``energy_in_box``,
and the share of maps that put more than half their mass outside the box (``energy_in_box <
0.5``); then the K detections whose maps lie most outside their boxes: the candidates for
shortcut cues (context, background, watermarks), the list a person opens first. With the run's
``--eval`` results (``eval.json``), the same statistics for matched and unmatched detections.

Detections without a value at the map are counted apart, never as 0: no gradient reached the
layer (``energy_in_box`` null), the map is all zero (``energy_in_box`` 0 and no mass in
``maps/<stem>.npz``), the value is not a number in [0, 1], or the detection has no such map.

The audit reads any manifest the kit wrote (older ones lack ``interrupted``; fields missing from
a record are tolerated and counted) one image at a time, so memory grows with the number of
detections, not with the size of their records. It writes ``audit.json`` into the run folder
(temporary file, then rename), never while a live run holds the folder's lock, and changes
nothing else there.

    audit = audit_run("runs/cam/yolov7/exp")  # reads only
    print(audit.format_table())
    write_audit(audit)  # <run>/audit.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from kit.core.display import shown
from kit.core.errors import KitError
from kit.core.table import format_columns
from kit.rundir.naming import replace_file
from kit.rundir.reader import (
    PathLike,
    RunFolderError,
    check_final,
    map_names,
    open_maps,
    read_map,
    read_text,
    run_folder,
    scan_json,
    stream_manifest,
)
from kit.rundir.schema import (
    AUDIT_NAME,
    EVAL_NAME,
    FUSED,
    HEAD_KEYS,
    INTERRUPTED_KEY,
    MANIFEST_NAME,
    UNMERGED_KEY,
    DetectionView,
    EvalEntryView,
    ImageView,
    MapView,
    as_dict,
    as_whole,
    finite_or_none,
)

AUDIT_VERSION = 1
OUTSIDE = 0.5  # a map with energy_in_box below this puts more than half its mass outside the box
DEFAULT_TOP = 20
REACHED = "reached"  # --layer: each detection's map at the one layer its gradient reached
RANKS = {  # --rank: the order of the top list
    "energy": "lowest energy_in_box first",
    "density": "lowest density first (energy_in_box / box share: small boxes not favoured)",
}

# Why a detection has no value at the audited map (counted apart, never as 0).
NO_GRADIENT = "no_gradient"  # energy_in_box null: no gradient reached the layer
EMPTY = "empty"  # an all-zero map: energy_in_box 0 by definition, not "outside"
INVALID = "invalid"  # NaN, infinite, not a number, or outside [0, 1]
MISSING = "missing"  # the detection has no map of that name at all
UNMEASURED = (NO_GRADIENT, EMPTY, INVALID, MISSING)
MATCH_GROUPS = ("matched", "unmatched", "not evaluated", "not matched")

EXIT_OK, EXIT_REFUSED, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 2, 3, 130  # as the entry points' (README)


class AuditError(RunFolderError):
    """An audit that cannot be made as asked (a layer the run does not have, a bad ``top`` or
    ``rank``); a folder that is not a run, or cannot be read, is a
    :class:`kit.rundir.reader.RunFolderError`."""


# ---- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassStats:
    """``energy_in_box`` of one class's detections (or of all: ``class_name`` "all") at the audited map.

    ``n`` counts every detection; ``measured`` those with a value, of which ``outside`` have
    ``energy_in_box < 0.5``; ``median``, ``p10`` (numpy's linear interpolation) and
    ``share_outside`` are over the measured ones (None when there is none). The rest are counted
    by why they have no value: ``no_gradient``, ``empty`` (all-zero map), ``invalid``, ``missing``.
    """

    class_id: Optional[int]
    class_name: str
    n: int
    measured: int
    median: Optional[float]
    p10: Optional[float]
    outside: int
    share_outside: Optional[float]
    no_gradient: int = 0
    empty: int = 0
    invalid: int = 0
    missing: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Breakdown:
    """All detections of a group (the run, or its matched / unmatched ones) and each class's."""

    total: ClassStats
    classes: tuple[ClassStats, ...]

    def to_json(self) -> dict[str, Any]:
        return {"all": self.total.to_json(), "classes": [c.to_json() for c in self.classes]}


@dataclass(frozen=True)
class TopEntry:
    """One of the detections whose maps lie most outside their boxes, and where to look at it.

    ``overlay`` is the picture in the run folder (relative to it), ``layer`` the map's layer,
    ``match`` "matched"/"unmatched"/... with ``--eval`` results, else None. ``box_share`` is the
    box's share of the image's area and ``density`` = energy_in_box / box_share: how many times
    denser the map is inside the box than over the whole image (1: no denser; a uniform map has
    energy_in_box = box_share, so a small box has a low energy_in_box even when the map is on it).
    """

    file: str
    id: Optional[int]
    class_id: Optional[int]
    class_name: str
    score: Optional[float]
    energy_in_box: float
    layer: Optional[str]
    overlay: Optional[str]
    match: Optional[str] = None
    box_share: Optional[float] = None
    density: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Audit:
    """What :func:`audit_run` found; :meth:`to_json` is ``audit.json``, :meth:`format_table` the table."""

    run_dir: Path
    run: dict[str, Any]  # the manifest's settings and counts of images and detections
    layer: Optional[str]  # the audited map: a layer name, "fused", "reached", or None (no maps)
    layer_rule: str  # in words: which map each detection was audited at
    layers: tuple[str, ...]  # every map name the run has
    overall: Breakdown
    split: dict[str, Breakdown]  # with --eval results: "matched", "unmatched", ...; else empty
    split_rule: Optional[str]  # how matched/unmatched were read from eval.json
    top: tuple[TopEntry, ...]
    top_k: int
    rank: str = "energy"  # the top list's order: lowest energy_in_box, or lowest density
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """``audit.json``: plain JSON values only (no NaN)."""
        return {
            "audit_version": AUDIT_VERSION,
            "run": self.run,
            "map": {"layer": self.layer, "rule": self.layer_rule, "available": list(self.layers)},
            "outside_below": OUTSIDE,
            "all": self.overall.total.to_json(),
            "classes": [c.to_json() for c in self.overall.classes],
            "eval": None
            if not self.split and self.split_rule is None
            else {"rule": self.split_rule, "groups": {k: v.to_json() for k, v in self.split.items()}},
            "top_k": self.top_k,
            "top_by": RANKS[self.rank],
            "top": [t.to_json() for t in self.top],
            "notes": list(self.notes),
        }

    def format_table(self) -> str:
        """The audit as text for a terminal: headline, per-class table, split, top-K list, notes."""
        return _format(self)


# ---- reading the run folder ------------------------------------------------------------------
class _Det:
    """One detection at the audited map(s), kept small (a run may hold hundreds of thousands)."""

    __slots__ = ("image", "id", "class_id", "class_name", "score", "box_share", "picks", "match")

    def __init__(
        self,
        image: int,
        det_id: Optional[int],
        class_id: Optional[int],
        class_name: str,
        score: Optional[float],
        box_share: Optional[float],
        picks: dict[str, _Pick],
    ) -> None:
        self.image, self.id, self.class_id, self.class_name = image, det_id, class_id, class_name
        self.score, self.box_share = score, box_share
        self.picks = picks  # candidate map name ("fused", "reached" or the --layer) -> its value
        self.match: Optional[str] = None


# A detection's value at one map: (energy or None, why none or None, layer, overlay, npz key).
_Pick = tuple[Optional[float], Optional[str], Optional[str], Optional[str], Optional[str]]


def audit_run(
    run_dir: PathLike, *, layer: Optional[str] = None, top: int = DEFAULT_TOP, rank: str = "energy"
) -> Audit:
    """Audit the run folder ``run_dir`` at one map; reads only (see :func:`write_audit`).

    layer: the map to audit: a layer name of the run, ``"fused"``, or ``"reached"`` (each
        detection's map at the one layer its gradient reached). Default: ``fused`` when the run
        has fused maps (``--fuse``), the layer when it has one, else ``reached``.
    top: how many of the detections whose maps lie most outside their boxes to list (K >= 0).
    rank: their order: ``"energy"`` (lowest energy_in_box first) or ``"density"`` (lowest
        energy_in_box / box share first, which does not favour small boxes).

    Raises :class:`AuditError` when ``run_dir`` is not a run folder, its manifest cannot be read,
    or ``layer`` is none of the run's maps.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise AuditError(f"top must be a whole number >= 0 (how many detections to list), got {top!r}")
    if rank not in RANKS:
        raise AuditError(f"unknown rank {rank!r}; rank by {' or '.join(RANKS)}")
    folder = run_folder(run_dir)
    reader = _ManifestReader(layer)
    header = stream_manifest(folder / MANIFEST_NAME, reader.add_image)
    source, chosen, rule = reader.choose(header, layer)
    notes = list(reader.notes)
    dets = reader.dets
    for d in dets:  # keep only the audited map's value, under its name
        d.picks = {chosen: d.picks[source]} if chosen is not None and source in d.picks else {}
    _check_empty_maps(folder, dets, reader.maps_files, notes)
    split_rule = _read_matches(folder, dets, reader.files, notes)
    key = chosen or ""
    split = _split(dets, key) if split_rule is not None else {}
    notes += _run_notes(header, reader.image_count)
    run = {
        **{k: finite_or_none(header.get(k))[0] for k in (*HEAD_KEYS, INTERRUPTED_KEY)},  # strict JSON
        "images": reader.image_count,
        "failed_images": reader.failed,
        "detections": len(dets),
    }
    return Audit(
        run_dir=folder,
        run=run,
        layer=chosen,
        layer_rule=rule,
        layers=tuple(reader.layer_order(header)),
        overall=_breakdown(dets, key),
        split=split,
        split_rule=split_rule,
        top=_top(dets, key, top, reader.files, with_match=split_rule is not None, rank=rank),
        top_k=top,
        rank=rank,
        notes=tuple(notes),
    )


def _split(dets: Sequence[_Det], key: str) -> dict[str, Breakdown]:
    """The statistics of each match group (matched, unmatched, ...) that has detections."""
    split = {}
    for group in MATCH_GROUPS:
        members = [d for d in dets if d.match == group]
        if members:
            split[group] = _breakdown(members, key)
    return split


def _run_notes(header: dict[str, Any], images: int) -> list[str]:
    """What the audit says of a run that did not finish, or was interrupted."""
    notes = []
    if header.get(UNMERGED_KEY):
        notes.append(
            "the run did not finish (killed, or still running elsewhere): the audit covers the "
            f"{images} images recorded so far; run the same command with --resume to finish it"
        )
    if header.get(INTERRUPTED_KEY) is True:
        notes.append(f"the run was interrupted (Ctrl-C): the audit covers the {images} images it finished")
    return notes


class _ManifestReader:
    """Per image record: its detections, each with its value at the candidate maps."""

    def __init__(self, layer: Optional[str]) -> None:
        self.layer = layer
        self.dets: list[_Det] = []
        self.files: list[str] = []
        self.maps_files: list[Optional[str]] = []
        self.image_count = 0
        self.failed = 0
        self.seen: dict[str, None] = {}  # map names in order of first sight
        self.has_fused = False
        self.several_reached = 0
        self.bad_images = 0
        self.bad_detections = 0
        self._names: dict[str, str] = {}  # one str per class/layer name (memory)

    @property
    def notes(self) -> list[str]:
        notes = []
        if self.bad_images:
            notes.append(f"{self.bad_images} image records of the manifest are not objects: left out")
        if self.bad_detections:
            notes.append(
                f"{self.bad_detections} detection records are not objects (or an image's detections not "
                "a list): left out"
            )
        return notes

    def intern(self, name: str) -> str:
        return self._names.setdefault(name, name)

    def add_image(self, image: Optional[ImageView]) -> None:
        self.image_count += 1
        if image is None:
            self.bad_images += 1
            return
        if image.error is not None:
            self.failed += 1
        detections = image.detections()
        if detections is None:
            self.bad_detections += 1
            return
        index = len(self.files)
        area = image.area
        self.files.append(image.file)
        self.maps_files.append(image.maps_file)
        for det in detections:
            if det is None:
                self.bad_detections += 1
                continue
            self.dets.append(self._detection(index, det, area))

    def _detection(self, image: int, det: DetectionView, area: Optional[float]) -> _Det:
        maps = {m.layer: m for m in det.maps}
        for name in maps:
            if name not in self.seen:
                self.seen[self.intern(name)] = None
        picks: dict[str, _Pick] = {}
        if self.layer is None or self.layer == FUSED:
            if FUSED in maps:
                self.has_fused = True
            picks[FUSED] = self._pick(FUSED, maps.get(FUSED))
        if self.layer is None or self.layer == REACHED:
            picks[REACHED] = self._reached(maps)
        if self.layer is not None and self.layer not in picks:
            picks[self.layer] = self._pick(self.layer, maps.get(self.layer))
        name = self.intern(det.class_name)
        share = _box_share(det.box, area)
        return _Det(image, det.id, det.class_id, name, det.score, share, picks)

    def _pick(self, layer: str, rec: Optional[MapView]) -> _Pick:
        if rec is None or not rec.is_record:
            return (None, MISSING, layer, None, None)
        overlay, key = rec.overlay, rec.key
        if not rec.energy_given or rec.no_gradient:
            return (None, NO_GRADIENT, layer, overlay, key)
        value = rec.energy_in_box
        if value is None or not 0.0 <= value <= 1.0:
            return (None, INVALID, layer, overlay, key)
        return (value, None, layer, overlay, key)

    def _reached(self, maps: dict[str, MapView]) -> _Pick:
        """The map at the one layer the detection's gradient reached (the first, if several did)."""
        picks = [self._pick(self.intern(name), rec) for name, rec in maps.items() if name != FUSED]
        reached = [p for p in picks if p[1] != NO_GRADIENT]
        if len(reached) > 1:
            self.several_reached += 1
        if reached:
            return reached[0]
        return picks[0] if picks else (None, MISSING, None, None, None)

    def layer_order(self, header: dict[str, Any]) -> list[str]:
        """Every map name: the run's layers in order, then others as first seen (``fused`` last)."""
        return map_names(header, self.seen)

    def choose(self, header: dict[str, Any], layer: Optional[str]) -> tuple[str, Optional[str], str]:
        """Which candidate value to keep, the audited map's name, and in words what it is."""
        names = self.layer_order(header)
        layers = [n for n in names if n != FUSED]
        fused = "fused (each detection's layers fused into one map, as --fuse writes it)"
        if layer is not None:
            if layer == REACHED:
                return REACHED, REACHED, _reached_rule(layers, self.several_reached)
            if layer not in names:
                raise AuditError(
                    f"this run has no map {layer!r}; its maps are {', '.join(names) or 'none'} "
                    f"(or {REACHED!r}: each detection's map at the layer its gradient reached)"
                )
            return layer, layer, fused if layer == FUSED else f"{layer} (--layer)"
        if self.has_fused:
            return FUSED, FUSED, fused[:-1] + "; the default when a run has it)"
        if len(layers) == 1:
            return REACHED, layers[0], f"{layers[0]} (the run's only layer)"
        if not layers:
            return REACHED, None, "none: the run has no maps"
        return REACHED, REACHED, _reached_rule(layers, self.several_reached)


def _reached_rule(layers: Sequence[str], several: int) -> str:
    rule = (
        f"reached: each detection's map at the layer its gradient reached, of {', '.join(layers)} "
        "(YOLO at the default layers: the head level that found it)"
    )
    if several:
        rule += f"; {several} detections reached several layers: the first of them in this order is used"
    return rule


def _box_share(box: Optional[list[Optional[float]]], area: Optional[float]) -> Optional[float]:
    """The box's share of the image's area (the box clipped to the image), or None if unknown."""
    if area is None or box is None or len(box) != 4:
        return None
    x1, y1, x2, y2 = box
    if x1 is None or y1 is None or x2 is None or y2 is None:
        return None
    share = max(0.0, x2 - x1) * max(0.0, y2 - y1) / area
    return min(share, 1.0) if share > 0 else None


def _check_empty_maps(
    folder: Path, dets: list[_Det], maps_files: list[Optional[str]], notes: list[str]
) -> None:
    """A value of exactly 0 is an all-zero map or a map wholly outside the box: ``maps/<stem>.npz`` tells.

    Only these few maps are read (each image's npz at most once); one that cannot be read keeps its 0.
    """
    zeros: dict[int, list[_Det]] = {}
    for d in dets:
        for pick in d.picks.values():
            if pick[0] == 0.0 and pick[4] is not None:
                zeros.setdefault(d.image, []).append(d)
    unchecked = 0
    for image, members in zeros.items():
        archive = open_maps(folder, maps_files[image])
        for d in members:
            for name, pick in list(d.picks.items()):
                if pick[0] != 0.0:
                    continue
                cam = None if archive is None else read_map(archive, pick[4])
                if cam is None:
                    unchecked += 1
                elif not np.any(np.nan_to_num(np.asarray(cam, dtype=np.float32)) > 0):
                    d.picks[name] = (None, EMPTY, *pick[2:])
        if archive is not None:
            archive.close()
    if unchecked:
        notes.append(
            f"{unchecked} maps have energy_in_box 0 but their maps/<stem>.npz could not be read: each is "
            "either all zero or wholly outside its box, and is counted as 0"
        )


# ---- eval.json -------------------------------------------------------------------------------
Listed = dict[str, list[tuple[str, Optional[int]]]]  # eval.json's "detections"/"unmatched": (file, id)


def _read_matches(folder: Path, dets: list[_Det], files: list[str], notes: list[str]) -> Optional[str]:
    """Mark each detection matched / unmatched / not evaluated from ``eval.json``; return the rule used
    (None without usable --eval results)."""
    path = folder / EVAL_NAME
    read = _read_eval(path, notes) if path.is_file() else None
    if read is None:
        return None
    report, listed = read
    by_key: dict[tuple[str, Optional[int]], list[_Det]] = {}
    for d in dets:
        by_key.setdefault((files[d.image], d.id), []).append(d)
    known = [(key, group) for group, name in (("matched", "detections"), ("unmatched", "unmatched"))
             for key in listed[name] if key in by_key]  # fmt: skip
    unknown = len(listed["detections"]) + len(listed["unmatched"]) - len(known)
    if unknown and not known:
        notes.append(f"{path} names none of the manifest's detections: it is another run's; no split")
        return None
    for key, group in known:
        for d in by_key[key]:
            d.match = group
    if isinstance(report.get("unmatched"), int):
        options = as_dict(report.get("options"))
        rule = (
            f"each detection the run's --eval evaluated, matched to a ground-truth box (greedy by score, "
            f"IoU >= {options.get('match_iou', 0.5)}) or unmatched"
        )
        rest = "not evaluated"
    else:
        rule, rest = _older_split(report, dets, files)
    for d in dets:
        if d.match is None:
            d.match = rest
    if unknown:
        notes.append(
            f"{unknown} detections of {EVAL_NAME} are not in the manifest: it may belong to another run "
            "of this folder (--exist-ok); the split uses the others"
        )
    return rule


def _read_eval(path: Path, notes: list[str]) -> Optional[tuple[dict[str, Any], Listed]]:
    """``eval.json``'s top-level values and the (file, id) of its matched ("detections") and
    unmatched rows, streamed; None, with a note, when it is not a run's --eval report."""
    listed: Listed = {"detections": [], "unmatched": []}

    def keep(name: str) -> Callable[[Any], None]:
        def add(row: Any) -> None:
            if isinstance(row, dict):
                entry = EvalEntryView(row)
                listed[name].append((entry.file, entry.id))

        return add

    try:
        report = scan_json(read_text(path), path, {name: keep(name) for name in listed})
    except RunFolderError as e:
        notes.append(f"{e} (no matched/unmatched split)")
        return None
    if not isinstance(report.get("detections"), int):
        notes.append(
            f"{path} is not the --eval report of a run (no 'detections' list): no matched/unmatched split"
        )
        return None
    return report, listed


def _older_split(report: dict[str, Any], dets: Sequence[_Det], files: list[str]) -> tuple[str, str]:
    """An older eval.json lists only the matched rows: the rule, and what the other detections are.
    When its count of evaluated detections is every detection of the images it did not skip, the
    others are the unmatched ones (those of skipped images are marked "not evaluated" here)."""
    summary, images = as_dict(report.get("summary")), as_dict(report.get("images"))
    skipped = {EvalEntryView(s).file for s in images.get("skipped") or [] if isinstance(s, dict)}
    for d in dets:
        if d.match is None and files[d.image] in skipped:
            d.match = "not evaluated"
    evaluated = sum(1 for d in dets if d.match != "not evaluated")
    if as_whole(summary.get("detections")) == evaluated:
        rule = (
            "the matched detections as eval.json lists them; it evaluated every other detection of "
            "the run, so the rest are unmatched"
        )
        return rule, "unmatched"
    rule = (
        "the matched detections as eval.json lists them (written before it listed unmatched ones); "
        "it "
        f"evaluated {summary.get('detections')} of {evaluated}: the rest are 'not matched' "
        "(unmatched, or in images the labels do not cover); run --eval again for the exact split"
    )
    return rule, "not matched"


# ---- statistics ------------------------------------------------------------------------------
def _stats(class_id: Optional[int], class_name: str, dets: Sequence[_Det], key: str) -> ClassStats:
    values = []
    why = dict.fromkeys(UNMEASURED, 0)
    for d in dets:
        pick = d.picks.get(key)
        if pick is None:
            why[MISSING] += 1
        elif pick[0] is None:
            why[pick[1] or INVALID] += 1
        else:
            values.append(pick[0])
    energies = np.asarray(values, dtype=np.float64)
    outside = int(np.count_nonzero(energies < OUTSIDE))
    measured = len(values)
    return ClassStats(
        class_id=class_id,
        class_name=class_name,
        n=len(dets),
        measured=measured,
        median=float(np.median(energies)) if measured else None,
        p10=float(np.percentile(energies, 10)) if measured else None,
        outside=outside,
        share_outside=outside / measured if measured else None,
        no_gradient=why[NO_GRADIENT],
        empty=why[EMPTY],
        invalid=why[INVALID],
        missing=why[MISSING],
    )


def _breakdown(dets: Sequence[_Det], key: str) -> Breakdown:
    groups: dict[tuple[Optional[int], str], list[_Det]] = {}
    for d in dets:
        groups.setdefault((d.class_id, d.class_name), []).append(d)
    order = sorted(groups, key=lambda k: (k[0] is None, k[0] if k[0] is not None else 0, k[1]))
    return Breakdown(
        total=_stats(None, "all", dets, key),
        classes=tuple(_stats(cid, name, groups[(cid, name)], key) for cid, name in order),
    )


def _top(
    dets: Sequence[_Det], key: str, k: int, files: list[str], *, with_match: bool, rank: str
) -> tuple[TopEntry, ...]:
    """The ``k`` measured detections of lowest energy_in_box (or density, with a known box share);
    ties: higher score first, then file, id."""

    def density(d: _Det, energy: float) -> Optional[float]:
        return None if d.box_share is None else energy / d.box_share

    measured = [(d, d.picks[key]) for d in dets if key in d.picks and d.picks[key][0] is not None]
    if rank == "density":
        measured = [(d, pick) for d, pick in measured if d.box_share is not None]

    def order(item: tuple[_Det, _Pick]) -> tuple[float, float, str, int]:
        d, pick = item
        energy = pick[0] or 0.0
        first = energy if rank == "energy" else density(d, energy) or 0.0
        return (first, -(d.score if d.score is not None else -math.inf), files[d.image], d.id or 0)

    return tuple(
        TopEntry(
            file=files[d.image],
            id=d.id,
            class_id=d.class_id,
            class_name=d.class_name,
            score=d.score,
            energy_in_box=float(pick[0] or 0.0),
            layer=pick[2],
            overlay=pick[3],
            match=d.match if with_match else None,
            box_share=d.box_share,
            density=density(d, float(pick[0] or 0.0)),
        )
        for d, pick in heapq.nsmallest(k, measured, key=order)
    )


# ---- the table -------------------------------------------------------------------------------
def _num(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _stat_table(
    rows: Sequence[tuple[str, ClassStats]], *, first: str, extra: Sequence[str]
) -> list[list[str]]:
    head = [first, "class", "n", "no grad", *extra, "measured", "median", "p10", "outside"]
    table = [head if first else head[1:]]
    for label, s in rows:
        name = s.class_name if s.class_id is None else f"{s.class_name} ({s.class_id})"
        share = "-" if s.share_outside is None else f"{s.outside} ({100 * s.share_outside:.1f}%)"
        cells = [shown(name), str(s.n), str(s.no_gradient), *(str(getattr(s, e)) for e in extra)]
        cells += [str(s.measured), _num(s.median), _num(s.p10), share]
        table.append([label, *cells] if first else cells)
    return table


def _format(audit: Audit) -> str:
    run = audit.run
    what = ", ".join(str(run[k]) for k in ("upstream", "method", "target") if run.get(k) is not None)
    failed = f" ({run['failed_images']} failed)" if run["failed_images"] else ""
    lines = [
        f"audit of {shown(str(audit.run_dir))}: {run['images']} images{failed}, {run['detections']} "
        f"detections{f' ({what})' if what else ''}",
        f"map: {shown(audit.layer_rule)}",
    ]
    if audit.layers:
        lines.append(
            f"     the run has {', '.join(shown(la) for la in audit.layers)}: choose with --layer NAME "
            f"(or --layer {REACHED})"
        )
    lines.append(
        f"energy_in_box = share of a map's mass inside its box; outside = measured maps with energy_in_box "
        f"< {OUTSIDE} (more than half their mass outside the box)"
    )
    everything = [audit.overall.total, *audit.overall.classes]
    for b in audit.split.values():
        everything += [b.total, *b.classes]
    extra = [e for e in (EMPTY, INVALID, MISSING) if any(getattr(s, e) for s in everything)]
    overall = [("", s) for s in (*audit.overall.classes, audit.overall.total)]
    lines += ["", format_columns(_stat_table(overall, first="", extra=extra))]
    if audit.split_rule is not None:
        lines += ["", f"matched vs unmatched ({EVAL_NAME}): {audit.split_rule}"]
        rows = [(group, s) for group, b in audit.split.items() for s in (*b.classes, b.total)]
        if rows:
            lines.append(format_columns(_stat_table(rows, first="match", extra=extra)))
    measured = audit.overall.total.measured
    lines += [
        "",
        f"top {len(audit.top)} of {measured} measured: the maps most outside their boxes, "
        f"{RANKS[audit.rank]}; open the overlay (in the run folder) first",
        "(box = the box's share of the image; density = energy / box: a map no denser in the box than "
        "elsewhere has 1)",
    ]
    if audit.top:
        head = ["rank", "energy", "box", "density", "score", "class", "id"]
        head += ["match"] if audit.split_rule else []
        head += [*(["layer"] if audit.layer == REACHED else []), "overlay", "file"]
        table = [head]
        for rank, t in enumerate(audit.top, 1):
            row = [str(rank), _num(t.energy_in_box), _num(t.box_share), _num(t.density, 2), _num(t.score)]
            row += [shown(t.class_name), str(t.id)]
            row += [t.match or "-"] if audit.split_rule else []
            row += [shown(t.layer or "-")] if audit.layer == REACHED else []
            table.append([*row, shown(t.overlay or "-"), shown(t.file)])
        lines.append(format_columns(table))
    if audit.notes:
        lines += ["", "notes:", *(f"- {shown(n)}" for n in audit.notes)]
    return "\n".join(lines)


# ---- writing audit.json ----------------------------------------------------------------------
AUDIT_LATER = "Audit it when that run has finished (--no-write prints the table of what it has finished now)"


def check_not_in_use(run_dir: PathLike) -> Optional[str]:
    """Refuse a run folder that a live run holds: its manifest is not final, so ``audit.json`` is not
    written (:func:`kit.rundir.reader.check_final`); a note when a dead run left its lock."""
    return check_final(run_dir, output=AUDIT_NAME, reader="the audit", later=AUDIT_LATER)


def write_audit(audit: Audit, *, run_dir: Optional[PathLike] = None) -> Path:
    """Write ``audit.json`` into the run folder (``audit.run_dir`` unless ``run_dir``): a temporary
    file, then a rename, so a reader never sees half of it. Refused while a live run holds the folder."""
    folder = Path(run_dir) if run_dir is not None else audit.run_dir
    check_not_in_use(folder)
    path = folder / AUDIT_NAME
    text = json.dumps(audit.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    payload = text.encode("utf-8", "backslashreplace")  # a lone surrogate stays a valid \\udcNN escape
    try:
        replace_file(path, payload)
    except OSError as e:
        raise AuditError(
            f"cannot write {path}: {e.strerror or e}; --no-write prints the table without writing"
        ) from e
    return path


# ---- command line ----------------------------------------------------------------------------
def _top_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def run_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The flags of ``python -m <module> RUN``, a command that reads a run folder (more may be added)."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    p.add_argument(
        "run", help="a run folder (holding manifest.json) of make cam, main_gradcam.py or Explainer.run"
    )
    return p


def parser() -> argparse.ArgumentParser:
    p = run_parser(
        "kit.evaluation.audit",
        "Per class, where a run's maps lie against their boxes (energy_in_box), and the detections "
        "whose maps lie most outside them; writes audit.json into the run folder.",
    )
    p.add_argument(
        "--layer",
        default=None,
        help=f"the map to audit: a layer name of the run, {FUSED!r}, or {REACHED!r} (each detection's map at "
        "the layer its gradient reached); default: fused when the run has it, else the run's layer(s)",
    )
    p.add_argument(
        "--top",
        type=_top_count,
        default=DEFAULT_TOP,
        metavar="K",
        help=f"list the K detections whose maps lie most outside their boxes (default {DEFAULT_TOP})",
    )
    p.add_argument(
        "--rank",
        choices=sorted(RANKS),
        default="energy",
        help="order of the top list: energy (lowest energy_in_box first, the default) or density "
        "(energy_in_box / the box's share of the image: small boxes, whose energy is low even under a "
        "uniform map, are not favoured)",
    )
    p.add_argument("--no-write", action="store_true", help=f"print the table only; do not write {AUDIT_NAME}")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m kit.evaluation.audit``: 0 when audited, 2 for a folder that is not a run, a manifest that
    cannot be read or a folder in use, 3 for a bug (as the entry points' exit codes)."""
    try:
        opt = parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed why
        return e.code if isinstance(e.code, int) else EXIT_REFUSED
    try:
        folder = run_folder(opt.run)
        note = None if opt.no_write else check_not_in_use(folder)  # before reading a big manifest
        audit = audit_run(folder, layer=opt.layer, top=opt.top, rank=opt.rank)
        if note:
            audit = replace(audit, notes=(*audit.notes, note))
        path = None if opt.no_write else write_audit(audit)  # first: a reader may stop reading the table
        print(audit.format_table(), flush=True)
        if path is not None:
            print(f"audit written to {shown(str(path))}", file=sys.stderr)
        return EXIT_OK
    except BrokenPipeError:  # the table piped into `head`: fine, and nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as error:
        return command_failed(error, output=AUDIT_NAME)


def command_failed(error: BaseException, *, output: str) -> int:
    """The exit code of a command that reads a run folder and writes ``output`` into it, when it
    ended with ``error``; says why on stderr: 2 refused (a KitError: one line), 130 Ctrl-C, 3 a bug
    (the traceback and a request to report it), as the entry points' exit codes."""
    if isinstance(error, KitError):
        print(f"error: {shown(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    if isinstance(error, KeyboardInterrupt):
        print(f"interrupted: {output} not written (or left as it was)", file=sys.stderr)
        return EXIT_INTERRUPTED
    traceback.print_exception(type(error), error, error.__traceback__)
    print(
        f"internal error (exit {EXIT_INTERNAL}): this is a bug, not a problem with your run folder; "
        "please report it with the command line and the traceback above",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
