"""The run's journal: one append-only part file per process, merged into ``manifest.json`` at the end.

Each process appends every finished image's record to its own part file,
``.kit-parts/<attempt>-r<rank>.jsonl`` in the run folder, as one JSON line that is flushed and
fsync'd before the next image starts: writing a record costs the same at image 100,000 as at
image 1 (rewriting the whole manifest after every image cost O(n) each time, O(n^2) in all). The
first line of a part is its header (attempt, rank, world, the ``--eval`` settings its
measurements were made with); every later line is an :class:`Entry`.

A process killed with SIGKILL can leave its last line cut short: :func:`read_part` reads a part
up to its last complete line. At the end of a run (after a barrier under torchrun) rank 0 merges
the existing ``manifest.json`` and every part (:func:`merge_entries`): an image recorded more than
once (a resumed run redid it) counts with its last record, and the images come in the order one
process would have written them, the run's sorted source order. Then the parts are removed.

:func:`read_manifest` reads a run folder as the merge would, so that a run that was killed (its
``manifest.json`` holds only the header, its records are in the parts) reads like any other.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from kit.errors import OutputError

LOG = logging.getLogger("kit")
PARTS_DIR = ".kit-parts"
MANIFEST = "manifest.json"
PART_VERSION = 1
_PART_NAME = re.compile(r"(?P<attempt>[0-9a-z]+)-r(?P<rank>\d+)\.jsonl")
# An image of a run: its file as the manifest names it, and which occurrence of that name in the
# source list it is (0 unless the same file was given twice).
Key = tuple[str, int]


@dataclass
class Entry:
    """One image's line of a part: its manifest record, where it stood in the source list, and
    (with ``--eval``) what its measurement added to the evaluation."""

    record: dict[str, Any]
    index: int
    occurrence: int = 0
    evaluation: Optional[dict[str, Any]] = None
    eval_key: Optional[dict[str, Any]] = None  # the --eval settings of the part it came from

    @property
    def key(self) -> Key:
        return (str(self.record.get("file")), self.occurrence)

    def to_line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"index": self.index, "n": self.occurrence, "image": self.record}
        if self.evaluation is not None:
            line["eval"] = self.evaluation
        return line


@dataclass
class Part:
    """A part file as read: its header and its complete lines."""

    path: Path
    header: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)
    cut: bool = False  # the last line was incomplete (the process was killed while writing it)


def keys_of(files: Sequence[str]) -> list[Key]:
    """Each image's key, by position: its file and how many earlier images had the same file."""
    seen: dict[str, int] = {}
    keys: list[Key] = []
    for name in files:
        keys.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def parts_dir(out_dir: Path | str) -> Path:
    return Path(out_dir) / PARTS_DIR


def part_files(out_dir: Path | str) -> list[Path]:
    """The part files of a run folder, oldest attempt first, then by rank."""
    folder = parts_dir(out_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _PART_NAME.fullmatch(path.name)
        if match:
            found.append(((match["attempt"], int(match["rank"])), path))
    return [path for _, path in sorted(found)]


class PartWriter:
    """One process's part file, opened on the first record: one fsync'd JSON line per image.

    A line that cannot be written (a full disk) is kept and written before the next one;
    :meth:`close` raises :class:`OutputError` when some still cannot be written.
    """

    def __init__(self, out_dir: Path, *, attempt: str, rank: int, world: int, eval_key: Any = None) -> None:
        self.path = parts_dir(out_dir) / f"{attempt}-r{rank}.jsonl"
        self.header = {"kit_part": PART_VERSION, "attempt": attempt, "rank": rank, "world": world}
        if eval_key is not None:
            self.header["eval"] = eval_key
        self._file: Any = None
        self._pending: list[bytes] = []
        self._warned = False
        self.lines = 0  # entries written so far

    def append(self, entry: Entry) -> None:
        """Write ``entry`` now (and any earlier one a failure held back); a failure is logged."""
        self._pending.append(_line(entry.to_line()))
        try:
            self._flush()
        except OSError as e:
            if not self._warned:
                LOG.error(
                    "cannot record an image in %s: %s; will try again after the next image", self.path, e
                )
                self._warned = True

    def close(self) -> None:
        """Write what is still held back, then close the file."""
        try:
            if self._pending:
                self._flush()
        except OSError as e:
            raise OutputError(
                f"cannot record {len(self._pending)} images in {self.path}: {e.strerror or e}; their "
                "pictures and maps are written but not indexed. Free some space and run again with --resume."
            ) from e
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _flush(self) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the run
            if self._file.tell() == 0:
                self._file.write(_line(self.header))
        while self._pending:
            self._file.write(self._pending[0])
            self._file.flush()
            os.fsync(self._file.fileno())
            self._pending.pop(0)
            self.lines += 1
        self._warned = False


def _line(value: Mapping[str, Any]) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return (text + "\n").encode("utf-8", "backslashreplace")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a journal line is not JSON serializable: {value!r}")


def read_part(path: Path) -> Part:
    """A part up to its last complete line; a missing header (killed at once) gives no entries.

    A line is complete when its newline was written: a process killed while writing leaves its
    last line without one, and that record is left out (the image is redone on resume). A complete
    line that does not parse (the file was edited, or the disk corrupted it) stops the reading
    there, with a warning naming the file and line.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    cut = lines[-1] != b""
    complete = lines[:-1]
    part = Part(path=path, header={}, cut=cut)
    for number, raw in enumerate(complete, start=1):
        try:
            value = json.loads(raw.decode("utf-8"))
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            if number == 1:
                if value.get("kit_part") != PART_VERSION:
                    raise ValueError(f"not a kit part header (kit_part {value.get('kit_part')!r})")
                part.header = value
                continue
            part.entries.append(
                Entry(
                    record=dict(value["image"]),
                    index=int(value["index"]),
                    occurrence=int(value.get("n", 0)),
                    evaluation=value.get("eval"),
                    eval_key=part.header.get("eval"),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            LOG.warning(
                "%s: line %d is not a record (%s); the lines after it are not read", path, number, error
            )
            break
    if cut:
        LOG.info("%s: its last line was cut short (the process was stopped while writing it); left out", path)
    return part


def read_parts(out_dir: Path | str) -> list[Part]:
    return [read_part(path) for path in part_files(out_dir)]


def manifest_entries(images: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """A manifest's ``images`` as entries, in its order (written by any version of the kit)."""
    records = [dict(image) for image in images if isinstance(image, Mapping)]
    keys = keys_of([str(r.get("file")) for r in records])
    return [Entry(record=r, index=i, occurrence=k[1]) for i, (r, k) in enumerate(zip(records, keys))]


def merge_entries(earlier: Iterable[Entry], parts: Iterable[Part], order: Sequence[Key] = ()) -> list[Entry]:
    """Every image once, with its last record, in the order of ``order`` (the run's sources).

    ``earlier`` (a manifest's images) come first, then each part's lines in attempt order: a later
    record of the same image replaces an earlier one. Images ``order`` does not name (a resumed run
    whose source folder lost some files) follow, in the order they were first recorded.
    """
    latest: dict[Key, Entry] = {}
    first_seen: dict[Key, int] = {}
    for entry in [*earlier, *(e for part in parts for e in part.entries)]:
        first_seen.setdefault(entry.key, len(first_seen))
        latest[entry.key] = entry
    position: dict[Key, int] = {}
    for key in order:
        position.setdefault(key, len(position))
    known = sorted((k for k in latest if k in position), key=position.__getitem__)
    rest = sorted((k for k in latest if k not in position), key=first_seen.__getitem__)
    return [latest[k] for k in [*known, *rest]]


def read_manifest(out_dir: Path | str) -> dict[str, Any]:
    """A run folder's manifest with the records its parts hold (a run still going, or killed).

    The parts' images are merged as the end of the run would merge them (source order, by each
    line's position in the source list). Raises :class:`OutputError` for a folder that is not a run.
    """
    folder = Path(out_dir)
    path = folder / MANIFEST
    manifest = load_manifest(folder)
    parts = read_parts(folder)
    if manifest is None:
        if not parts:
            raise OutputError(f"{folder} is not a kit run folder: it has no {MANIFEST}")
        manifest = {}
    if not parts:
        return manifest
    earlier = manifest_entries(manifest.get("images") or [])
    recorded = sorted((e for part in parts for e in part.entries), key=lambda e: e.index)  # stable
    merged = merge_entries(earlier, parts, [e.key for e in [*earlier, *recorded]])
    images = [e.record for e in merged]
    LOG.debug("%s: %d images from %s and its parts", folder, len(images), path.name)
    return {**manifest, "images": images}


def load_manifest(out_dir: Path | str) -> dict[str, Any] | None:
    """``manifest.json`` of a run folder as a dict; None when there is none. A file that is not a
    manifest is refused with :class:`OutputError`."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OutputError(f"{path} cannot be read as a kit manifest ({e}); it was left as it is") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise OutputError(f"{path} is not a kit manifest (no 'images' list); it was left as it is")
    return data
