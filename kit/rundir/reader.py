"""Reading a run folder: what the audit, the report, resume and the evaluation read it through.

A run folder may come from someone else, from an older kit, or from a run that was killed, so
everything here reads without trusting it: each file is a regular file reached without a link and
of bounded size (:func:`read_run_file`); a manifest is checked for its ``schema_version``
(:func:`kit.rundir.schema.check_version`: older ones read, newer ones are refused with what to
do); a run whose last records are still in its part files reads as the end of the run would merge
them (:func:`read_manifest`, :func:`stream_manifest`); and a record is read through
:mod:`kit.rundir.schema`: checked (:meth:`~kit.rundir.schema.ImageRecord.from_json`) where it is
trusted (resume), tolerantly (:class:`~kit.rundir.schema.ImageView`) where an old or damaged one is
shown (the audit, the report), never trusted to have its types.

:func:`stream_manifest` hands a manifest's image records to a function one at a time, so that
memory grows with what the caller keeps, not with the size of the records (the audit of a run of
hundreds of thousands of detections). A map of ``maps/<stem>.npz`` is read only when its declared
size and array header are a map's, never unpickled (:func:`read_map`). Torch-free.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kit.core.errors import OutputError
from kit.core.files import read_at_most
from kit.rundir import journal, lock
from kit.rundir.naming import LinkError, PathLike, is_regular, open_regular
from kit.rundir.schema import (
    EVAL_NAME,
    FUSED,
    IMAGES_KEY,
    LOCK_NAME,
    MANIFEST_NAME,
    UNMERGED_KEY,
    ImageRecord,
    ImageView,
    RecordError,
    SchemaVersionError,
    check_version,
    stem_of_summary,
)

LOG = logging.getLogger("kit")
MAX_MANIFEST_BYTES = 512 * 2**20  # parsing takes about 4x this; a 5,000-image run's is a few MB
PASS_A_RUN = "pass the folder of a run of the kit"


class RunFolderError(OutputError):
    """A folder that is not a run, a run file that cannot be read, or a run folder in use."""


# ---- where the run is ----------------------------------------------------------------------------
def run_folder(path: PathLike) -> Path:
    """The run folder ``path`` names (a ``manifest.json`` stands for its folder), or a
    :class:`RunFolderError` that says what the folder is instead and what to pass."""
    p = Path(path)
    if p.name == MANIFEST_NAME and p.is_file():
        return p.parent
    if not p.exists():
        raise RunFolderError(f"{p} does not exist; pass a run folder (the folder holding {MANIFEST_NAME})")
    if not p.is_dir():
        raise RunFolderError(f"{p} is a file, not a run folder; pass the folder holding {MANIFEST_NAME}")
    if (p / MANIFEST_NAME).is_file():
        return p
    if (p / EVAL_NAME).is_file() and (p / "table.txt").is_file():
        raise RunFolderError(
            f"{p} is not a run folder (no {MANIFEST_NAME}): it holds make eval's eval.json and table.txt. "
            "Pass the folder of a run (make cam, main_gradcam.py, Explainer.run)"
        )
    try:
        runs = sorted(q.parent.name for q in p.glob(f"*/{MANIFEST_NAME}"))
    except OSError:
        runs = []
    hint = f"; run folders in it: {', '.join(runs[:8])}{', ...' if len(runs) > 8 else ''}" if runs else ""
    raise RunFolderError(
        f"{p} is not a run folder: it has no {MANIFEST_NAME}. Pass the folder a run wrote "
        f"(e.g. runs/cam/yolov7/exp){hint}"
    )


def check_final(run_dir: PathLike, *, output: str, reader: str, later: str) -> Optional[str]:
    """Refuse a run folder that a live run holds (its lock): its manifest is not final, so
    ``output`` is not written; ``later`` says what to do instead.

    Returns a note (naming ``reader``, what reads the folder) when the lock is left by a run that
    provably died (:func:`kit.rundir.lock.lock_state`), else None.
    """
    folder = Path(run_dir)
    held = lock.holder(folder)  # a link named like the lock: refused (LinkError)
    if held is None:
        return None
    path = folder / LOCK_NAME
    state, _, other = held
    if state == lock.STALE:
        return (
            f"{path} is left by pid {other.get('pid')}, which no longer runs: that run did not finish; "
            f"{reader} covers what its manifest holds"
        )
    raise RunFolderError(
        f"run folder {folder} is in use by a kit run (pid {other.get('pid')} on host {other.get('host')}, "
        f"started {other.get('started')}): its manifest is not final, so {output} is not written. "
        f"{later}. If no such run is active, delete {path}"
    )


# ---- whole files ---------------------------------------------------------------------------------
def read_run_file(path: Path, *, what: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """The bytes of a JSON file of a run folder (``manifest.json``, ``eval.json``, ``audit.json``):
    a regular file reached without a link (else :class:`kit.rundir.naming.LinkError`), refused
    unread beyond ``limit`` bytes (:class:`OutputError`). Read in chunks, so the memory taken is the
    file's size, never ``limit`` (a buffer of ``limit`` bytes failed a small run under an
    address-space limit)."""
    with open_regular(path, what=what) as f:
        size = os.fstat(f.fileno()).st_size
        data = b"" if size > limit else read_at_most(f, limit + 1, expected=size)
    if size <= limit and len(data) <= limit:
        return data
    raise OutputError(
        f"{path} is larger than {limit // 2**20} MiB, more than the kit writes there for hundreds of "
        "thousands of images; it was left as it is and not read"
    )


def load_manifest(out_dir: PathLike) -> dict[str, Any] | None:
    """``manifest.json`` of a run folder as a dict; None when there is none. A file that is not a
    manifest is refused with :class:`OutputError`, one of a newer kit with
    :class:`kit.rundir.schema.SchemaVersionError`."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(read_run_file(path, what="its manifest").decode("utf-8"))
    except FileNotFoundError:
        return None
    except (LinkError, OutputError):
        raise
    except (OSError, ValueError, RecursionError) as e:
        raise OutputError(f"{path} cannot be read as a kit manifest ({e}); it was left as it is") from e
    if not isinstance(data, dict) or not isinstance(data.get(IMAGES_KEY), list):
        raise OutputError(f"{path} is not a kit manifest (no 'images' list); it was left as it is")
    check_version(data, path)
    return data


def read_manifest(out_dir: PathLike) -> dict[str, Any]:
    """A run folder's manifest with the records its parts hold (a run still going, or killed).

    The parts' images are merged as the end of the run would merge them (source order, by each
    line's position in the source list). Raises :class:`OutputError` for a folder that is not a run.
    """
    folder = Path(out_dir)
    manifest = load_manifest(folder)
    parts = journal.read_parts(folder)
    if manifest is None:
        if not parts:
            raise OutputError(f"{folder} is not a kit run folder: it has no {MANIFEST_NAME}")
        manifest = {}
    if not parts:
        return manifest
    earlier = journal.manifest_entries(manifest.get(IMAGES_KEY) or [])
    recorded = sorted((e for part in parts for e in part.entries), key=lambda e: e.index)  # stable
    merged = journal.merge_entries(earlier, parts, [e.key for e in [*earlier, *recorded]])
    images = [e.record for e in merged]
    LOG.debug("%s: %d images from %s and its parts", folder, len(images), MANIFEST_NAME)
    return {**manifest, IMAGES_KEY: images}


def read_text(path: Path) -> str:
    """A JSON file of a run folder as text, or a :class:`RunFolderError` that names the file and
    what to do."""
    try:  # a regular file of bounded size: a sparse file of gigabytes, or a pipe, is refused unread
        text = read_run_file(path, what=path.name).decode("utf-8")
    except OutputError as e:
        raise RunFolderError(f"{e}; {PASS_A_RUN}") from None
    except UnicodeDecodeError as e:
        raise RunFolderError(
            f"{path} is not UTF-8 text ({e.reason}): it is not a manifest the kit wrote, or it is "
            "damaged; run again, or restore it from a copy"
        ) from e
    except OSError as e:
        raise RunFolderError(f"cannot read {path}: {e.strerror or e}") from e
    if not text.strip():
        raise RunFolderError(
            f"{path} is empty: the run did not write it (or it was cut); run again, or restore it from a copy"
        )
    return text


def read_json(path: Path, key: str, notes: list[str]) -> Optional[dict[str, Any]]:
    """A run's ``eval.json`` or ``audit.json`` (a JSON object with a ``key`` list), when the run
    has it and it is one; else None, with a note saying why it is left out."""
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text(path))
    except RunFolderError as error:
        notes.append(f"{error} ({path.name} left out of the page)")
        return None
    except (ValueError, RecursionError, MemoryError) as error:  # also nested too deep, numbers too long
        why = type(error).__name__ if isinstance(error, (RecursionError, MemoryError)) else error
        notes.append(f"{path} is not valid JSON ({why}): left out of the page")
        return None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        notes.append(f"{path} is not the {path.stem} of a run of the kit (no '{key}' list): left out")
        return None
    return data


# ---- a manifest, one image at a time -------------------------------------------------------------
def stream_manifest(manifest: Path, on_image: Callable[[Optional[ImageView]], None]) -> dict[str, Any]:
    """A run's ``manifest.json``: its top-level values, with each image record handed to ``on_image``
    one at a time as a :class:`kit.rundir.schema.ImageView` (None for an entry that is no JSON
    object), its fields read tolerantly (``images`` maps to their count). Any manifest the kit wrote
    reads, old ones too; a :class:`RunFolderError` names the file and what to do when it is not a
    kit manifest or cannot be read, a :class:`kit.rundir.schema.SchemaVersionError` when a newer
    kit wrote it.

    A run that did not finish (killed, or still going on another machine) keeps the records of its
    last images in part files beside the manifest (:mod:`kit.rundir.journal`); they are read too,
    merged as the run's end would merge them, and ``unmerged_parts`` in the result counts the part
    files.
    """
    parts = len(journal.part_files(manifest.parent))
    if parts:
        return _stream_unfinished(manifest, on_image, parts)
    header = scan_json(read_text(manifest), manifest, {IMAGES_KEY: lambda one: on_image(ImageView.of(one))})
    if IMAGES_KEY in header and not isinstance(header[IMAGES_KEY], int):
        raise RunFolderError(f"{manifest} is not a kit manifest: its 'images' is not a list; {PASS_A_RUN}")
    if IMAGES_KEY not in header:
        raise RunFolderError(
            f"{manifest} is not a kit manifest: it has no 'images' list (keys: "
            f"{', '.join(sorted(header)[:10]) or 'none'}). Pass the folder of a run of the kit"
        )
    check_version(header, manifest)
    return header


def _stream_unfinished(
    manifest: Path, on_image: Callable[[Optional[ImageView]], None], parts: int
) -> dict[str, Any]:
    """:func:`stream_manifest` of a run whose last records are still in its part files (held in
    memory at once: the parts of an unfinished run, not a finished run's whole manifest)."""
    try:
        data = read_manifest(manifest.parent)
    except SchemaVersionError:
        raise
    except OutputError as error:
        raise RunFolderError(f"{error}; {PASS_A_RUN}") from None
    images = data.get(IMAGES_KEY)
    if not isinstance(images, list):
        raise RunFolderError(f"{manifest} is not a kit manifest: its 'images' is not a list; {PASS_A_RUN}")
    for image in images:
        on_image(ImageView.of(image))
    return {**data, IMAGES_KEY: len(images), UNMERGED_KEY: parts}


_SPACE = re.compile(r"[ \t\n\r]*")
_TOKEN_START = re.compile(r"[-+.0-9eEa-zA-Z]{0,9}")  # of a number, true/false/null, NaN, Infinity


def scan_json(text: str, path: Path, streams: Mapping[str, Callable[[Any], None]]) -> dict[str, Any]:
    """A JSON object's top-level keys; the items of a list under a key of ``streams`` are handed to
    its function one at a time (never all held as parsed objects), and the key maps to their count.
    A :class:`RunFolderError` says what is wrong with the file (cut short, damaged, nested too deep)."""
    if not text.lstrip().startswith("{"):
        raise RunFolderError(f"{path} is not a kit manifest (a JSON object with 'images'); {PASS_A_RUN}")
    try:
        return _Scanner(text, streams).top()
    except json.JSONDecodeError as e:
        # Cut short: the decoder ran out of text (an unterminated string, or nothing but the start
        # of one number or literal after the error): the rest of the manifest is missing, not wrong.
        cut = e.msg.startswith("Unterminated string") or _TOKEN_START.fullmatch(text[e.pos :].rstrip())
        why = (
            "it was cut short (the kit replaces it whole, so a copy or a crash of the machine cut it)"
            if cut
            else "it is damaged"
        )
        raise RunFolderError(
            f"{path} is not valid JSON ({e.msg}: line {e.lineno}, column {e.colno}): {why}. "
            "Run again to rewrite it, or restore it from a copy"
        ) from e
    except RecursionError:
        raise RunFolderError(
            f"{path} is nested deeper than Python's JSON parser follows: it is not a manifest the kit "
            f"wrote; {PASS_A_RUN}"
        ) from None
    except MemoryError:
        raise RunFolderError(f"{path} does not fit in memory; {PASS_A_RUN}") from None
    except ValueError as e:  # an integer of thousands of digits
        raise RunFolderError(f"{path} is not a manifest the kit wrote ({e}); {PASS_A_RUN}") from None


class _Scanner:
    """:func:`scan_json`'s walk over the text: one top-level object, lists under ``streams`` item by item."""

    def __init__(self, text: str, streams: Mapping[str, Callable[[Any], None]]) -> None:
        self.text = text
        self.streams = streams
        self.decoder = json.JSONDecoder()

    def skip(self, i: int) -> int:
        m = _SPACE.match(self.text, i)
        return m.end() if m else i

    def expect(self, i: int, chars: str) -> str:
        if i >= len(self.text):
            raise json.JSONDecodeError("the file ends here: it was cut short", self.text, i)
        if self.text[i] not in chars:
            wanted = " or ".join(repr(c) for c in chars)
            raise json.JSONDecodeError(f"expected {wanted}", self.text, i)
        return self.text[i]

    def top(self) -> dict[str, Any]:
        header: dict[str, Any] = {}
        i = self.skip(0)
        self.expect(i, "{")
        i = self.skip(i + 1)
        if self.text.startswith("}", i):
            i += 1
        else:
            while True:
                self.expect(i, '"')
                key, i = self.decoder.raw_decode(self.text, i)
                i = self.skip(i)
                self.expect(i, ":")
                i = self.skip(i + 1)
                if key in self.streams and self.text.startswith("[", i):
                    header[key], i = self.stream(i, self.streams[key])
                else:
                    header[key], i = self.decoder.raw_decode(self.text, i)
                i = self.skip(i)
                if self.expect(i, ",}") == "}":
                    i += 1
                    break
                i = self.skip(i + 1)
        if self.skip(i) != len(self.text):
            raise json.JSONDecodeError("extra data after the manifest", self.text, self.skip(i))
        return header

    def stream(self, i: int, each: Callable[[Any], None]) -> tuple[int, int]:
        """The list starting at ``i``: each item handed to ``each``; how many, and where it ends."""
        count = 0
        i = self.skip(i + 1)
        if self.text.startswith("]", i):
            return count, i + 1
        while True:
            item, i = self.decoder.raw_decode(self.text, i)
            each(item)
            count += 1
            i = self.skip(i)
            if self.expect(i, ",]") == "]":
                return count, i + 1
            i = self.skip(i + 1)


# ---- maps/<stem>.npz ---------------------------------------------------------------------------
MAX_MAP_BYTES = 64 * 2**20  # a map the kit writes: at most 2048 x 2048 float16 (8 MiB); old runs' more
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def open_maps(folder: Path, rel: Optional[str]) -> Optional[zipfile.ZipFile]:
    """An image's ``maps/<stem>.npz`` (``rel``, as its record names it) opened as a zip archive, or
    None when it is missing, outside the run folder, or not a zip file; the caller closes it."""
    path = (folder / rel).resolve() if rel else None
    if path is None or not path.is_relative_to(folder.resolve()) or not path.is_file():
        return None
    try:
        return zipfile.ZipFile(path)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def read_map(archive: zipfile.ZipFile, key: Any) -> Optional[np.ndarray]:
    """The map ``key`` of a run's ``maps/<stem>.npz``, or None when it is missing or not one the kit
    could have written. A run folder may come from someone else: the member's declared size and its
    array header are checked before anything is decompressed or allocated (a small npz can declare
    gigabytes), and nothing is unpickled."""
    if not isinstance(key, str):
        return None
    try:
        info = archive.getinfo(f"{key}.npy")
        if info.file_size > MAX_MAP_BYTES:
            return None
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                return None
            shape, fortran, dtype = _HEADER_READERS[version](f)
            size = math.prod(shape) * dtype.itemsize
            if dtype.kind != "f" or len(shape) != 2 or size > info.file_size:
                return None
            data = f.read(size + 1)
    except (KeyError, OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if len(data) != size:
        return None
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


# ---- a record, for --resume --------------------------------------------------------------------
def stem_of(record: Mapping[str, Any]) -> str | None:
    """The stem an image's files were written under, read from its record (None: no files)."""
    return stem_of_summary(ImageView(record).summary)


def is_complete(record: Mapping[str, Any], out_dir: Path) -> bool:
    """An image explained without error whose every file (summary, maps, overlays) is a regular
    file in the run folder, reached without a link. A record that fails :mod:`kit.rundir.schema` is
    never complete."""
    try:
        image = ImageRecord.from_json(record)
    except RecordError:
        return False
    if image.error is not None or image.stem is None:
        return False
    return all(is_regular(out_dir, f) for f in image.files())


def map_names(header: Mapping[str, Any], seen: Iterable[str]) -> list[str]:
    """Every map name of a run: its header's ``layers`` in order, then the others of ``seen`` (the
    names its records hold) as first seen, ``fused`` last."""
    given = header.get("layers")
    run_layers = [str(la) for la in given] if isinstance(given, list) else []
    seen = list(seen)
    names = [*run_layers, *(n for n in seen if n not in run_layers and n != FUSED)]
    return [*dict.fromkeys(names), *([FUSED] if FUSED in seen else [])]
