"""The run folder: overlays, summaries, raw maps and a manifest that indexes them.

Layout of ``OUT`` (all paths in the manifest are relative to it)::

    manifest.json                 what was run and, per image, detections, maps and errors
    <stem>_summary.jpg            every detection of an image on one sheet
    <stem>/det<id>_<layer>.jpg    one overlay per detection and layer
    maps/<stem>.npz               normalized maps, float16, key det<id>_<layer>: at the image's size,
                                  or with its longer side at kit.core.geometry.MAP_MAX_SIDE for a larger image

    .kit-parts/                   while a run writes: each process's records, one line per image

Each finished image's record is appended to its process's part file at once (:mod:`kit.rundir.journal`),
so a run that dies half-way, even by SIGKILL, keeps a record of every image it finished;
``manifest.json`` is written atomically when the run starts, after Ctrl-C and at the end, when
the parts are merged into it in source order and removed (:func:`kit.rundir.reader.read_manifest`
reads a folder whose run did not get there).

Every name under ``OUT`` is derived so that it stays there (:func:`safe_stem`): no ``..``, no
separator, no leading dot, at most 100 bytes, unique case-insensitively. Nothing is written or
removed through a link (:mod:`kit.rundir.naming`): a link or special file where the kit writes is refused
before the run (:func:`check_run_folder`). A lock file (``.kit.lock``: pid, host, boot id, PID
namespace, start time) keeps a second run out of a folder in use; temporary files carry the
writer's pid and a random token and are removed on failure. Records read back (``--resume``, the
merge) are checked (:mod:`kit.rundir.schema`), and NaN or an infinity never reaches a JSON file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import cv2
import numpy as np

from kit.core.errors import OutputError, ShapeError
from kit.core.geometry import energy_in_box, map_size, normalize, resize_picture, scale_box
from kit.core.images import printable
from kit.core.render import MISSED_COLOR, draw_dashed_box, overlay, summary, tile_size
from kit.core.results import DetectionResult, MissedResult, draw_overlay
from kit.core.targets import target_caption
from kit.rundir import journal, naming, reader, schema
from kit.rundir.lock import RunLock
from kit.rundir.naming import PathLike, check_run_folder, free_stem, is_folder_in, safe_stem
from kit.rundir.schema import (
    BOOKKEEPING,
    DERIVED,
    FINISHED_KEY,
    HEAD_KEYS,
    IMAGES_KEY,
    INTERRUPTED_KEY,
    LOCK_NAME,
    MANIFEST_NAME,
    MAPS_DIR,
    PARTS_DIR,
    RESERVED_NAMES,
    SCHEMA_VERSION,
    VERSION_KEY,
    DetectionRecord,
    ImageRecord,
    MapRecord,
    MissedRecord,
    summary_name,
)

LOG = logging.getLogger("kit")
MAX_LAYER_BYTES = 60
JPEG_MAX_SIDE = 65500  # libjpeg's limit: a larger picture is scaled down to fit before encoding


@dataclass(frozen=True)
class RunSettings:
    """What decides a run's maps, as its manifest records them, and how its pictures are drawn.

    ``extra``: more settings for the manifest's header (they may not reuse its own keys);
    ``eval_key``: the ``--eval`` settings the run's measurements are made with (each part file's
    header names them, so a resumed run never mixes measurements of other settings).
    """

    upstream: str
    weights: str
    method: str
    target: str
    layers: Sequence[str]
    extra: Mapping[str, Any] = field(default_factory=dict)
    eval_key: Any = None
    tile_width: int = 480
    jpeg_quality: int = 90


def _header(settings: RunSettings, layers: list[str]) -> dict[str, Any]:
    """The manifest's header of a run of ``settings``; refused (OutputError) when ``extra`` would
    overwrite one of its keys or holds what JSON cannot (NaN)."""
    s = settings
    header: dict[str, Any] = {
        VERSION_KEY: SCHEMA_VERSION,
        **dict(zip(HEAD_KEYS, (s.upstream, s.weights, s.method, s.target, layers))),
        INTERRUPTED_KEY: False,
        FINISHED_KEY: False,
    }
    clash = sorted(set(settings.extra) & (set(header) | {IMAGES_KEY}))
    if clash:
        raise OutputError(f"extra manifest keys {clash} would overwrite the run's own; rename them")
    broken = schema.non_finite(_normalized({**header, **settings.extra}))
    if broken:
        raise OutputError(f"the run's settings cannot be recorded in JSON: {broken}")
    return header


class RunWriter:
    """Writes one run's pictures, maps and manifest under ``out_dir``: a run of ``settings``
    (:class:`RunSettings`, the manifest's header after its ``schema_version``), by the process of
    ``rank`` among ``world``, in the launch ``attempt`` (default: a new one, :func:`new_attempt`).

    Each image's record goes to this process's part file (:mod:`kit.rundir.journal`: one fsync'd JSON
    line per image) as soon as its files are written; ``manifest.json`` is written when the run
    starts, after Ctrl-C (``"interrupted": true``, every finished image) and at :meth:`finish`,
    which merges every part into it in source order (``"finished": true``) and removes the parts.

    The writer that owns the run (``owner``: a plain process, or rank 0 under torchrun) holds the
    folder's lock (``.kit.lock``) from construction until :meth:`finish` or :meth:`close`; use it
    as a context manager, or call ``close()`` in a ``finally``, so an error or Ctrl-C releases it.
    A second run on the same folder is refused with an :class:`OutputError` naming the first's pid
    and host; a lock whose writer is provably gone is taken over (:func:`kit.rundir.lock.lock_state`).
    A folder that holds a run (a finished one, or one whose records would be buried: its parts,
    or a manifest with images) is refused unless ``resume`` or ``overwrite``; so is a folder with
    a link or special file where the kit writes (:func:`check_run_folder`).

    ``resume``: the folder must hold a run made with the same settings (:meth:`check_settings`);
    its records so far that pass :mod:`kit.rundir.schema` are in :attr:`previous` once :meth:`use` named
    the run's images (the others are logged and their images explained again). ``overwrite``: a
    fresh run replaces the folder's run: its manifest, part files, ``eval.json``, ``audit.json``
    and ``index.html`` go; its pictures and maps stay on disk, unlisted, where the new run does not
    write over them. Writers of the other ranks (``owner=False``) write their images' files and
    their own part, nothing else.
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        out_dir: PathLike,
        owner: bool = True,
        resume: bool = False,
        overwrite: bool = False,
        attempt: str | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if resume and overwrite:
            raise OutputError("resume and overwrite exclude each other: go on with the run, or replace it")
        self.out_dir = Path(out_dir)
        self.layers = list(settings.layers)
        self.header: dict[str, Any] = _header(settings, self.layers)
        self.extra = dict(settings.extra)
        self.overwrite = overwrite
        self.tile_width = settings.tile_width
        self.jpeg_quality = settings.jpeg_quality
        asked = self.extra.get("target_class")
        # what every map explains, in each overlay's label, where not the detection's class score
        self.explains = target_caption(
            settings.target, asked=asked.get("name") if isinstance(asked, dict) else None
        )
        self.owner = owner
        self.resumed = resume
        self.images: list[ImageRecord] = []  # this process's records of this run
        self.merged: list[dict[str, Any]] = []  # the manifest's images after finish() (owner)
        self.previous: list[journal.Entry] = []  # what an earlier run of the folder recorded (resume)
        self.entries: list[journal.Entry] = []  # the merged manifest's images with their measurements
        self._positions: dict[int, tuple[int, int]] = {}  # id(record) -> (index, occurrence)
        self._committed: set[int] = set()
        self._keys: list[journal.Key] | None = None
        self._stems: Sequence[str] | None = None
        self._taken: set[str] = {n.casefold() for n in RESERVED_NAMES}
        self._layer_names: dict[str, str] = {}
        self._token = naming.new_token()  # in every temporary file's name
        self._closed = False
        self.redo: set[int] = set()  # positions whose earlier records were invalid (resume)
        self.attempt = attempt or new_attempt()
        self._part = journal.PartWriter(
            self.out_dir, attempt=self.attempt, rank=rank, world=world, eval_key=settings.eval_key
        )
        self._lock: RunLock | None = None
        if owner:
            self._open(resume=resume)

    def _open(self, *, resume: bool) -> None:
        """The owner's start: the folder checked (and made), its lock taken, the manifest written."""
        if resume:
            check_resumable(self.out_dir)
        else:
            check_run_folder(self.out_dir)
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create the run folder {self.out_dir}: {e.strerror or e}") from e
        self._lock = RunLock(self.out_dir / LOCK_NAME, token=self._token)
        try:
            if resume:
                self._open_resumed()
            else:
                self._open_new()
        except BaseException as e:
            self._lock.release()
            if isinstance(e, OSError):
                raise OutputError(f"cannot write {self.manifest_path}: {e.strerror or e}") from e
            raise

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(error, KeyboardInterrupt):
            self.interrupted()
        self.close()

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def failed(self) -> int:
        """How many images were recorded with an error (after :meth:`finish`: in the whole run)."""
        if self.merged:
            return sum(1 for r in self.merged if schema.has_error(r))
        return sum(1 for r in self.images if r.error is not None)

    def settings(self) -> dict[str, Any]:
        """The settings that decide the maps, as the manifest records them (a resumed run must match)."""
        values = {**self.header, **self.extra}
        return {k: v for k, v in _printable_strings(values).items() if k not in BOOKKEEPING}

    def check_settings(self, recorded: Mapping[str, Any]) -> None:
        """Refuse to resume a run whose recorded settings differ from this one's, listing each.

        Settings the run did not record (made by an older kit: no ``weights_sha256``,
        ``upstream_commit``, ``fuse``) are not compared; a log line names them.
        """
        ours = self.settings()
        shown = {k: v for k, v in recorded.items() if k not in BOOKKEEPING}
        differ = [k for k in ours if k in shown and _normalized(shown[k]) != _normalized(ours[k])]
        differ += [k for k in shown if k not in ours]
        unknown = [k for k in ours if k not in shown]
        if differ:
            lines = "\n".join(
                f"  {k}: the run has {json.dumps(shown.get(k))}, this run {json.dumps(ours.get(k))}"
                for k in differ
            )
            hint = ""
            if "method" in differ and isinstance(shown.get("method"), str):
                hint = (
                    f" A run that named no method takes its detector family's default, which may have "
                    f"changed since (docs/evaluation.md): --method {shown['method']} goes on with it."
                )
            raise ResumeError(
                f"cannot resume {self.out_dir}: its maps were made with other settings, and a run must be "
                f"made with one set:\n{lines}\nResume with the run's settings, or start a new run "
                f"(another --name, or without --resume).{hint}"
            )
        if unknown:
            LOG.warning(
                "resuming %s: the run does not record %s (an older kit made it); not compared",
                self.out_dir,
                ", ".join(unknown),
            )

    def use(self, files: Sequence[str], stems: Sequence[str] | None = None) -> None:
        """The run's images (their manifest names, in source order) and each one's stem (:func:`plan_stems`):
        the ``index`` given to :meth:`write_image` and :meth:`add_error` is a position in them.

        From here on only records of these images count. A resumed run's owner reads its records
        so far here (:attr:`previous`, :attr:`redo`): each is checked (:mod:`kit.rundir.schema`, and that
        it names one of these images at its place); what fails is logged once and left out (its
        image is explained again; a record of a file that is not among them is left out of the
        manifest, its files stay)."""
        first = self._keys is None
        self._keys = journal.keys_of(files)
        if stems is not None:
            self._stems = list(stems)
        if first and self.resumed and self.owner:
            self.previous = self._records(reader.load_manifest(self.out_dir) or {}, announce=True)

    def write_image(
        self,
        *,
        source: PathLike,
        image_bgr: np.ndarray,
        detections: Sequence[DetectionResult],
        missed: Sequence[MissedResult] | None = None,
        index: int | None = None,
        commit: bool = True,
    ) -> ImageRecord:
        """Write overlays, summary and raw maps of one image; record it (unless ``commit=False``:
        then :meth:`commit` records it, with what its evaluation added).

        Each detection's ``maps`` hold an (H, W) map in [0, 1] at the image's size (or at
        :func:`kit.core.geometry.map_size` of it: an image larger than
        :data:`kit.core.geometry.MAP_MAX_SIDE` has its
        maps, overlays and summary drawn at that bounded size) per layer, or None where the
        detection had no gradient at that layer (no overlay is drawn there).

        All or nothing: when a file cannot be written (a full disk, a file-size limit), the files
        this call already wrote are removed and the error is raised; the image is not recorded.
        """
        height, width = image_bgr.shape[:2]
        _check_maps(source, detections, (height, width))  # before any file is written
        _check_maps(source, missed or (), (height, width), what="missed object")
        _check_finite(source, detections, missed or ())
        planned = self._stems is not None and index is not None
        stem = self._stems[index] if planned else self._unique_stem(Path(source))  # type: ignore[index]
        written: list[str] = []
        try:
            record = self._write_files(
                stem=stem,
                source=source,
                image_bgr=image_bgr,
                detections=detections,
                missed=missed,
                written=written,
            )
        except BaseException:
            self._remove(written, folder=stem)
            if not planned:
                self._taken -= {stem.casefold(), summary_name(stem).casefold()}
            raise
        self._add(record, index)
        if commit:
            self.commit(record)
        return record

    def _write_files(
        self,
        *,
        stem: str,
        source: PathLike,
        image_bgr: np.ndarray,
        detections: Sequence[DetectionResult],
        missed: Sequence[MissedResult] | None,
        written: list[str],
    ) -> ImageRecord:
        height, width = image_bgr.shape[:2]
        picture = resize_picture(image_bgr, map_size((height, width)))  # what the pictures are drawn on
        arrays: dict[str, np.ndarray] = {}
        missed_records = (
            None if missed is None else self._write_missed(stem, image_bgr, missed, arrays, written)
        )
        tiles: list[tuple[np.ndarray | None, list[float], str]] = []
        many = len(detections) > 12  # keep the sheet a viewable size for crowded images
        tile_width = self.tile_width // 2 if many else self.tile_width
        small = tile_size(picture.shape[:2], tile_width)  # a tile's map is kept at that size
        records: list[DetectionRecord] = []
        for index, det in enumerate(detections):
            record, drawn = self._write_detection(
                stem=stem, det=det, index=index, image_bgr=image_bgr, picture=picture, arrays=arrays,
                written=written,
            )  # fmt: skip
            records.append(record)
            # One summary tile per detection: its layers' maps fused (sum of normalized maps).
            fused = normalize(np.sum(drawn, axis=0)) if drawn else None
            tile = None if fused is None else cv2.resize(fused, small, interpolation=cv2.INTER_LINEAR)
            tiles.append(
                (
                    tile,
                    list(scale_box(record.box_xyxy, (height, width), picture.shape[:2])),
                    det.label(self.explains),
                )
            )
        sheet = summary(
            picture,  # the image at its maps' size: a summary tile is smaller still
            tiles=tiles,
            max_cols=8 if many else 4,
            tile_width=tile_width,
        )
        return ImageRecord(
            file=printable(source), width=width, height=height, detections=records, error=None,
            summary=self._write_jpeg(summary_name(stem), sheet, written),
            maps_file=self._write_npz(schema.maps_name(stem), arrays, written) if arrays else None,
            missed=missed_records,
        )  # fmt: skip

    def _write_detection(
        self,
        *,
        stem: str,
        det: DetectionResult,
        index: int,
        image_bgr: np.ndarray,
        picture: np.ndarray,
        arrays: dict[str, np.ndarray],
        written: list[str],
    ) -> tuple[DetectionRecord, list[np.ndarray]]:
        """One detection's overlays (drawn on ``picture``, the image at its maps' size) and its
        record; its maps go into ``arrays`` for the npz. Returns the record and the maps drawn."""
        height, width = image_bgr.shape[:2]
        record = DetectionRecord.of(det)
        drawn: list[np.ndarray] = []
        for layer in self._layers_of(det):
            cam = det.maps[layer]
            if cam is None:
                record.maps.append(MapRecord.unreached(layer))
                continue
            drawn.append(cam)
            key = f"det{det.id}_{self._safe_layer(layer)}"
            rel = f"{stem}/{key}.jpg"
            drawn_on = picture if picture.shape[:2] == cam.shape else image_bgr
            overlay_ = draw_overlay(
                drawn_on, det, layer, cam, index=index, layers=self.layers, box_hw=(height, width),
                explains=self.explains,
            )  # fmt: skip
            self._write_jpeg(rel, overlay_, written)
            energy = round(energy_in_box(cam, det.box_xyxy, image_hw=(height, width)), 6)
            record.maps.append(MapRecord(layer=layer, overlay=rel, energy_in_box=energy, key=key))
            arrays[key] = cam  # written as float16 one by one (_write_npz): no copy of every map
        return record, drawn

    def _write_missed(
        self,
        stem: str,
        image_bgr: np.ndarray,
        missed: Sequence[MissedResult],
        arrays: dict[str, np.ndarray],
        written: list[str],
    ) -> list[MissedRecord]:
        """Overlays ``<stem>/missed<id>_<layer>.jpg`` (the ground-truth box dashed, the candidate's
        box solid) and arrays ``missed<id>_<layer>``; the records of the manifest's ``missed``.
        Drawn at the maps' size, as the detections' overlays are."""
        hw = image_bgr.shape[:2]
        picture = resize_picture(image_bgr, map_size(hw)) if missed else image_bgr
        records = []
        for m in missed:
            record = MissedRecord.of(m)
            for layer in self._layers_of(m):
                cam = m.maps[layer]
                if cam is None:
                    record.maps.append(MapRecord.unreached(layer))
                    continue
                key = f"missed{m.id}_{self._safe_layer(layer)}"
                rel = f"{stem}/{key}.jpg"
                label = m.label() + (f" {layer}" if len(self.layers) > 1 else "")
                box = m.box_xyxy if m.box_xyxy is not None else m.gt_box_xyxy  # (no map without a candidate)
                drawn_on = picture if picture.shape[:2] == cam.shape else resize_picture(image_bgr, cam.shape)
                drawn = overlay(
                    drawn_on,
                    cam,
                    box_xyxy=scale_box(box, hw, cam.shape),
                    label=label,
                    color=MISSED_COLOR,
                )
                draw_dashed_box(drawn, scale_box(m.gt_box_xyxy, hw, cam.shape), color=MISSED_COLOR)
                self._write_jpeg(rel, drawn, written)
                # on the object, not the candidate
                energy = round(energy_in_box(cam, m.gt_box_xyxy, image_hw=hw), 6)
                record.maps.append(MapRecord(layer=layer, overlay=rel, energy_in_box=energy, key=key))
                arrays[key] = cam
            records.append(record)
        return records

    def add_error(self, source: PathLike, message: str, *, index: int | None = None) -> ImageRecord:
        """Record an image that could not be explained; the run goes on."""
        record = ImageRecord(
            file=printable(source), width=None, height=None, detections=[], error=printable(message)
        )
        self._add(record, index)
        self.commit(record)
        return record

    def set_error(self, record: ImageRecord, message: str) -> None:
        """Mark an image already written as failed after all (its files and detections stay)."""
        record.error = printable(message)
        if id(record) in self._committed:
            self.commit(record)  # a later line of the same image replaces the earlier one

    def commit(self, record: ImageRecord, evaluation: Mapping[str, Any] | None = None) -> None:
        """Append ``record`` (and what its evaluation added) to this process's part file.

        A measurement's NaN or infinity is recorded as null (with a warning); a record that cannot
        be written as a line of the part (too large) is recorded as the image's error instead."""
        index, occurrence = self._positions[id(record)]
        measured = None
        if evaluation is not None:
            measured, replaced = schema.finite_or_none(_normalized(dict(evaluation)))
            if replaced:
                LOG.warning(
                    "eval: %d values of %s are not finite numbers; recorded as null", replaced, record.file
                )
        entry = journal.Entry(
            record=_printable_strings(record.to_json()),
            index=index,
            occurrence=occurrence,
            evaluation=measured,
        )
        try:
            self._part.append(entry)
        except OutputError as error:
            LOG.error("%s", error)
            failed = ImageRecord(
                file=record.file,
                width=record.width,
                height=record.height,
                detections=[],
                error=printable(str(error)),
            )
            self._part.append(journal.Entry(record=failed.to_json(), index=index, occurrence=occurrence))
            record.error = failed.error
        self._committed.add(id(record))

    def interrupted(self) -> None:
        """Ctrl-C: keep every finished image, and (owner) index them in the manifest with
        ``"interrupted": true`` now; the parts stay for ``--resume``. Never raises OSError.
        Does nothing once the writer is closed (the lock is no longer held)."""
        if self._closed:
            return
        self.header[INTERRUPTED_KEY] = True
        try:
            self._part.close()
        except OutputError as e:
            LOG.error("%s", e)
        if self.owner:
            try:
                self._write_merged(final=False)
            except (OSError, OutputError) as e:
                LOG.error("cannot write %s after the interruption: %s", self.manifest_path, e)

    def close_part(self) -> None:
        """Write this process's last records (under torchrun: before the barrier rank 0 merges after)."""
        self._part.close()

    def finish(self) -> Path:
        """Merge every part into the final manifest, remove the parts, release the lock; return the
        manifest's path. A writer that does not own the run only closes its part.

        Raises :class:`OutputError` when the manifest cannot be written (the lock is released, the
        parts stay: ``--resume`` indexes them).
        """
        try:
            self._part.close()
            if self.owner:
                try:
                    self._write_merged(final=True)
                except OSError as e:
                    done = len(self.images) - sum(1 for r in self.images if r.error is not None)
                    raise OutputError(
                        f"cannot write the manifest {self.manifest_path}: {e.strerror or e}; the pictures "
                        f"and maps of {done} images are in {self.out_dir}, but not indexed. Free some "
                        "space and run again with --resume."
                    ) from e
                naming.remove_matching(
                    self.out_dir, PARTS_DIR, keep=lambda name: not journal.is_part_name(name)
                )
        finally:
            self.close()
        return self.manifest_path

    def close(self) -> None:
        """Remove this writer's temporary files and release the lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._part.close()
        except OutputError as e:
            LOG.error("%s", e)
        if self._lock is not None:
            self._lock.release()

    def manifest(self, images: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The manifest as a dict: run settings, ``extra``, and one entry per image (default: this
        writer's own records)."""
        shown = [r.to_json() for r in self.images] if images is None else list(images)
        return {**self.header, **self.extra, IMAGES_KEY: shown}

    def _add(self, record: ImageRecord, index: int | None) -> None:
        if self._keys is not None and index is not None:
            position = (index, self._keys[index][1])
        else:
            occurrence = sum(1 for r in self.images if r.file == record.file)
            position = (len(self.images), occurrence)
        self._positions[id(record)] = position
        self.images.append(record)

    def _open_new(self) -> None:
        unfinished = journal.part_files(self.out_dir)
        recorded = None if self.overwrite else reader.load_manifest(self.out_dir)
        if recorded is not None and recorded.get(FINISHED_KEY) is True:
            raise OutputError(_finished(self.out_dir, recorded))
        if not self.overwrite and (unfinished or (recorded is not None and recorded[IMAGES_KEY])):
            held = f"{len(unfinished)} part files in {PARTS_DIR}/" if unfinished else "its manifest.json"
            raise OutputError(_unfinished(self.out_dir, held))
        if self.overwrite:
            naming.remove_matching(self.out_dir, PARTS_DIR, keep=lambda name: not journal.is_part_name(name))
            for name in DERIVED:
                naming.remove(self.out_dir, name)
        self._write_manifest(self.manifest([]))

    def _open_resumed(self) -> None:
        recorded = reader.load_manifest(self.out_dir)
        assert recorded is not None  # check_resumable
        self.check_settings(recorded)
        _remove_stale_temporaries(self.out_dir)
        images = journal.manifest_entries(recorded[IMAGES_KEY])  # the settings now; records as they were
        self._write_manifest(self.manifest([e.record for e in journal.checked_entries(images)[0]]))

    def _records(self, recorded: Mapping[str, Any], *, announce: bool = False) -> list[journal.Entry]:
        """The run's records so far, from its manifest and every part, each checked
        (:mod:`kit.rundir.schema`; with :meth:`use`'s images, against them), the last of each image kept.
        ``announce``: log what is left out, and note which images to explain again (:attr:`redo`)."""
        images = recorded.get(IMAGES_KEY)
        earlier, left = journal.checked_entries(
            journal.manifest_entries(images if isinstance(images, list) else []), self._keys
        )
        if left and announce:
            _log_left_out(left, self.out_dir)
        parts = journal.read_parts(self.out_dir, keys=self._keys)
        if announce:
            self.redo = journal.untrusted(parts)
        if self._keys is not None:
            order: list[journal.Key] = self._keys
        else:
            lines = sorted((e for p in parts for e in p.entries), key=lambda e: e.index)
            order = [e.key for e in [*earlier, *lines]]
        return journal.merge_entries(earlier, parts, order)

    def _write_merged(self, *, final: bool) -> None:
        """``manifest.json`` from the manifest as it is and every part, in source order."""
        merged = self._records(reader.load_manifest(self.out_dir) or {IMAGES_KEY: []})
        self.header[FINISHED_KEY] = final
        self.merged = [e.record for e in merged]
        self.entries = merged
        self._write_manifest(self.manifest(self.merged))

    def _unique_stem(self, source: Path) -> str:
        """A safe stem (:func:`safe_stem`) unique in this run, case-insensitively: a.jpg, A.png -> a, A_2.

        The stem's folder and its ``_summary.jpg`` must both be free of every name taken so far,
        the run folder's own files included.
        """
        candidate = free_stem(safe_stem(source.stem or source.name), self._taken)
        self._taken |= {candidate.casefold(), summary_name(candidate).casefold()}
        return candidate

    def _layers_of(self, det: DetectionResult | MissedResult) -> list[str]:
        """Layers with a map for ``det`` (or a missed object's candidate): the run's layers first,
        then any others in given order."""
        given = list(det.maps)
        return [la for la in self.layers if la in given] + [la for la in given if la not in self.layers]

    def _safe_layer(self, layer: str) -> str:
        """A file-name-safe, run-unique spelling of a layer name (model.24 stays model.24)."""
        if layer not in self._layer_names:
            base = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer).strip(".") or "layer"
            if len(base) > MAX_LAYER_BYTES:
                base = f"{base[: MAX_LAYER_BYTES - 9]}-{hashlib.sha1(layer.encode()).hexdigest()[:8]}"
            name, n = base, 1
            while name.casefold() in {v.casefold() for v in self._layer_names.values()}:
                n += 1
                name = f"{base}_{n}"
            self._layer_names[layer] = name
        return self._layer_names[layer]

    def _write_jpeg(self, rel: str, image: np.ndarray, written: list[str]) -> str:
        image = _fit_jpeg(image)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise OutputError(f"OpenCV could not encode {rel} as JPEG")
        payload = data.tobytes()
        self._atomic_write(rel, lambda f: f.write(payload), written)
        return rel

    def _write_npz(self, rel: str, arrays: dict[str, np.ndarray], written: list[str]) -> str:
        """``np.savez_compressed`` of ``arrays`` as float16, each converted as it is written (one
        float16 copy at a time, never one of every map of the image)."""

        def write(f: IO[bytes]) -> None:
            with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
                for key, cam in arrays.items():
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array(
                            entry, np.asarray(cam, dtype=np.float16), allow_pickle=False
                        )

        self._atomic_write(rel, write, written)
        return rel

    def _atomic_write(
        self, rel: str, write: Callable[[IO[bytes]], Any], written: list[str], *, sync: bool = False
    ) -> None:
        """Write ``rel`` (relative to the run folder) through a temporary sibling named for this
        writer and a rename, never through a link (:func:`kit.rundir.naming.write_file`).

        ``written`` gets ``rel`` (and any folder made for it, first) once it exists, so a failed
        image's files can be removed. ``sync``: fsync the file before the rename (the manifest).
        """
        naming.write_file(self.out_dir, rel, write, token=self._token, sync=sync, made=written)
        written.append(rel)

    def _remove(self, written: list[str], *, folder: str) -> None:
        """Remove the files of a failed image, and its folder when this writer made it or it is
        empty; never through a link."""
        for rel in reversed(written):
            naming.remove(self.out_dir, rel)
        naming.remove(self.out_dir, folder, folder_only=True)

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
        data = _printable_strings(manifest)
        text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default, allow_nan=False)
        payload = (text + "\n").encode("utf-8")
        self._atomic_write(MANIFEST_NAME, lambda f: f.write(payload), [], sync=True)


class ResumeError(OutputError):
    """A run folder that cannot be resumed as asked: not a run, or made with other settings."""


def new_attempt() -> str:
    """A name for one launch's part files that sorts after every earlier launch's (time, then random)."""
    return f"{time.time_ns():020d}{secrets.token_hex(3)}"


def check_resumable(out_dir: PathLike) -> None:
    """Refuse, before anything is loaded or changed, to resume a folder that is not a kit run, or
    one with a link or special file where the kit writes (:func:`check_run_folder`)."""
    folder = Path(out_dir)
    fix = "pass the run folder (--project/--name, --output) of the run to resume, or drop --resume"
    if not folder.is_dir():
        raise ResumeError(f"--resume: there is no run folder {folder} to resume; {fix}")
    check_run_folder(folder)
    if reader.load_manifest(folder) is None:
        raise ResumeError(
            f"--resume: {folder} is not a kit run folder (it has no manifest.json); nothing in it was "
            f"changed; {fix}"
        )


def check_not_finished(out_dir: PathLike) -> None:
    """Refuse early (before a model is loaded) a new run into a folder that holds a run it would
    replace or bury, as :class:`RunWriter` does (``--overwrite`` replaces it, ``--resume`` goes on)."""
    folder = Path(out_dir)
    recorded = reader.load_manifest(folder) if folder.is_dir() else None
    if recorded is not None and recorded.get(FINISHED_KEY) is True:
        raise OutputError(_finished(folder, recorded))
    if (recorded is not None and recorded[IMAGES_KEY]) or (folder.is_dir() and journal.part_files(folder)):
        raise OutputError(_unfinished(folder, "its manifest.json and part files"))


def check_not_foreign(out_dir: PathLike, stems: Sequence[str]) -> None:
    """Refuse (before any write) a new run into an existing folder that is not a kit run (no
    manifest.json, no part files) but holds files the run would replace: its derived files
    (index.html, eval.json, audit.json) or, for each of ``stems``, the summary sheet, the maps file
    or a non-empty image folder. ``--exist-ok`` into a folder of the user's own files replaced them
    silently; ``--overwrite`` is how to say so."""
    folder = Path(out_dir)
    if not folder.is_dir() or journal.part_files(folder) or reader.load_manifest(folder) is not None:
        return
    top = naming.entries(folder)
    maps = naming.entries(folder / MAPS_DIR) if is_folder_in(top, MAPS_DIR) else {}
    found = [n for n in (*DERIVED, *(summary_name(s) for s in stems)) if n in top]
    found += [schema.maps_name(s) for s in stems if f"{s}.npz" in maps]
    found += [f"{s}/" for s in stems if is_folder_in(top, s) and naming.entries(folder / s)]
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise OutputError(
            f"{folder} is not a kit run folder (no manifest.json) and holds files the run would replace "
            f"({shown}); nothing was changed. Choose another --name (or drop --exist-ok), or pass "
            "--overwrite (overwrite=True) to replace them"
        )


def _finished(folder: Path, recorded: Mapping[str, Any]) -> str:
    return (
        f"run folder {folder} holds a finished run ({len(recorded[IMAGES_KEY])} images in its "
        "manifest.json); a new run would replace its manifest. Choose another --name (or drop "
        "--exist-ok), or pass --overwrite (overwrite=True) to replace that run"
    )


def _unfinished(folder: Path, held: str) -> str:
    return (
        f"run folder {folder} holds a run that did not finish ({held} index its images): resume it with "
        "--resume (resume=True), or choose another --name (or drop --exist-ok), or pass --overwrite "
        "(overwrite=True) to replace it"
    )


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of the killed processes of an earlier run (this run holds the lock: none is
    being written); the walk never follows a link, and removes through each folder's descriptor."""
    for _, _, names, fd in os.fwalk(out_dir, follow_symlinks=False):
        for name in names:
            if naming.TEMPORARY.fullmatch(name):
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    LOG.warning("could not remove %s: %s", name, e)


def _log_left_out(left: Sequence[str], out_dir: Path) -> None:
    """Say once which records of a run are not trusted (their images are explained again, or are
    not this run's sources): the first few, and how many."""
    for line in left[:5]:
        LOG.warning("%s: left out: %s", out_dir, line)
    if len(left) > 5:
        LOG.warning("%s: %d more records left out", out_dir, len(left) - 5)


def _normalized(value: Any) -> Any:
    """JSON's view of a value (tuples are lists, paths strings), so that recorded and new compare."""
    return json.loads(json.dumps(value, default=_json_default))


def _check_maps(
    source: PathLike,
    detections: Sequence[DetectionResult | MissedResult],
    hw: tuple[int, int],
    *,
    what: str = "detection",
) -> None:
    """Unique detection ids, and maps at the original size or at its bounded size (:func:`map_size`)."""
    ids = [d.id for d in detections]
    if len(set(ids)) != len(ids):
        raise OutputError(f"{what} ids of {source} are not unique: {ids}")
    bounded = map_size(hw)
    for det in detections:
        for layer, cam in det.maps.items():
            if cam is not None and cam.shape not in (hw, bounded):
                also = "" if bounded == hw else f" or its bounded size {bounded}"
                raise ShapeError(
                    f"map {layer!r} of {what} {det.id} of {source} is {cam.shape}, expected the "
                    f"original size {hw}{also}; bring it back with kit.core.geometry.to_original"
                )


def _check_finite(
    source: PathLike, detections: Sequence[DetectionResult], missed: Sequence[MissedResult]
) -> None:
    """Every number an image's record holds is finite (JSON has no NaN): a broken model's NaN score,
    box or map fails the image, named, before any file is written."""
    for what, ones in (("detection", detections), ("missed object", missed)):
        for det in ones:
            numbers: dict[str, Any] = {"score": det.score, "box": det.box_xyxy or ()}
            if isinstance(det, MissedResult):
                numbers.update(gt_box=det.gt_box_xyxy, iou=det.iou)
            for name, value in numbers.items():
                values = np.asarray(value, dtype=np.float64).ravel()
                if not np.isfinite(values).all():
                    raise OutputError(
                        f"{what} {det.id} of {printable(source)} has a {name} that is not a finite number "
                        f"({', '.join(map(str, values.tolist()))}): the model's output is broken"
                    )
            bad = [layer for layer, cam in det.maps.items() if cam is not None and not np.isfinite(cam).all()]
            if bad:
                raise OutputError(
                    f"{what} {det.id} of {printable(source)} has a map with NaN or infinite values at "
                    f"{bad[0]}"
                )


def _fit_jpeg(image: np.ndarray) -> np.ndarray:
    """Scale a picture down to fit JPEG's largest side (a 10 x 100000 image still gets its overlay)."""
    h, w = image.shape[:2]
    if max(h, w) <= JPEG_MAX_SIDE:
        return image
    scale = JPEG_MAX_SIDE / max(h, w)
    size = (max(1, min(JPEG_MAX_SIDE, round(w * scale))), max(1, min(JPEG_MAX_SIDE, round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _printable_strings(value: Any) -> Any:
    """Every string of ``value`` (dicts, lists) valid UTF-8: undecodable file-name bytes as ``\\xNN``."""
    if isinstance(value, (str, Path)):
        return printable(value)
    if isinstance(value, Mapping):
        return {_printable_strings(k): _printable_strings(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable_strings(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and paths in ``extra`` become plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} in the manifest is not JSON serializable: {value!r}")
