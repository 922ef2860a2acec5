"""The run's journal: one append-only part file per process, merged into ``manifest.json`` at the end.

Each process appends every finished image's record to its own part file,
``.kit-parts/<attempt>-r<rank>.jsonl`` in the run folder, as one JSON line that is flushed and
fsync'd before the next image starts: writing a record costs the same at image 100,000 as at
image 1 (rewriting the whole manifest after every image cost O(n) each time, O(n^2) in all). The
first line of a part is its header (attempt, rank, world, the ``--eval`` settings its
measurements were made with); every later line is an :class:`Entry`.

A process killed with SIGKILL can leave its last line cut short: :func:`read_part` reads a part
up to its last complete line. Every line read back is checked (:mod:`kit.rundir.schema`: the type of
each field, finite numbers, paths the writer would have made; with the run's source list, that it
names one of its images at its position): a line that fails is logged once and left out, so its
image is explained again on ``--resume``, never trusted. Nothing is read through a link.

At the end of a run (after a barrier under torchrun) rank 0 merges the existing
``manifest.json`` and every part (:func:`merge_entries`): an image recorded more than
once (a resumed run redid it) counts with its last record, and the images come in the order one
process would have written them, the run's sorted source order. Then the parts are removed.

:func:`kit.rundir.reader.read_manifest` reads a run folder as the merge would, so that a run that
was killed (its ``manifest.json`` holds only the header, its records are in the parts) reads like
any other.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from kit.core.errors import OutputError
from kit.rundir import naming, schema
from kit.rundir.schema import MANIFEST_NAME, PART_VERSION, PARTS_DIR, shown_value

LOG = logging.getLogger("kit")
MAX_LINE_BYTES = 16 * 1024 * 1024  # one image's record; a longer line is not one the kit wrote
SHOWN_PROBLEMS = 5  # invalid lines logged per part file and reading; the rest are counted
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
    where: str = ""  # where it was read: "<part file> line N", "manifest.json image N"

    @property
    def key(self) -> Key:
        return (schema.file_key(self.record), self.occurrence)

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
    invalid: set[int] = field(default_factory=set)  # positions whose last line here was left out


def keys_of(files: Sequence[str]) -> list[Key]:
    """Each image's key, by position: its file and how many earlier images had the same file."""
    seen: dict[str, int] = {}
    keys: list[Key] = []
    for name in files:
        keys.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def is_part_name(name: str) -> bool:
    """Whether ``name`` is a part file's name (``<attempt>-r<rank>.jsonl``)."""
    return _PART_NAME.fullmatch(name) is not None


def parts_dir(out_dir: Path | str) -> Path:
    return Path(out_dir) / PARTS_DIR


def part_files(out_dir: Path | str) -> list[Path]:
    """The part files of a run folder, oldest attempt first, then by rank. A ``.kit-parts`` that is
    a link raises :class:`kit.rundir.naming.LinkError` (its files would be read, and later removed,
    elsewhere)."""
    folder = parts_dir(out_dir)
    try:
        mode = os.lstat(folder).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not stat.S_ISDIR(mode):
        if stat.S_ISREG(mode):
            return []
        raise naming.refusal(folder, mode, "its part files")
    found = []
    for name in naming.entries(folder):
        match = _PART_NAME.fullmatch(name)
        if match:
            found.append(((match["attempt"], int(match["rank"])), folder / name))
    return [path for _, path in sorted(found)]


class PartWriter:
    """One process's part file, opened on the first record: one fsync'd JSON line per image.

    A line that cannot be written (a full disk) is kept and written before the next one;
    :meth:`close` raises :class:`OutputError` when some still cannot be written.
    """

    def __init__(self, out_dir: Path, *, attempt: str, rank: int, world: int, eval_key: Any = None) -> None:
        self.root = Path(out_dir)
        self.rel = f"{PARTS_DIR}/{attempt}-r{rank}.jsonl"
        self.path = self.root / self.rel
        self.header = {"kit_part": PART_VERSION, "attempt": attempt, "rank": rank, "world": world}
        if eval_key is not None:
            self.header["eval"] = eval_key
        self._file: Any = None
        self._pending: list[bytes] = []
        self._warned = False
        self.lines = 0  # entries written so far

    def append(self, entry: Entry) -> None:
        """Write ``entry`` now (and any earlier one a failure held back); a failure is logged.

        Raises :class:`OutputError` for an entry that could not be read back: a number that is not
        finite, or a line longer than :data:`MAX_LINE_BYTES`."""
        line = _line(entry.to_line())
        if len(line) > MAX_LINE_BYTES:
            raise OutputError(
                f"the record of {schema.file_key(entry.record)} is {len(line) / 2**20:.0f} MiB, more than "
                f"the {MAX_LINE_BYTES // 2**20} MiB a record may hold; explain fewer detections (--max-det) "
                "or layers"
            )
        self._pending.append(line)
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
            self._file = naming.open_append(self.root, self.rel)  # never through a link; kept open
            if os.fstat(self._file.fileno()).st_size == 0:
                self._file.write(_line(self.header))
        while self._pending:
            self._file.write(self._pending[0])
            self._file.flush()
            os.fsync(self._file.fileno())
            self._pending.pop(0)
            self.lines += 1
        self._warned = False


def _line(value: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=_json_default, allow_nan=False
        )
    except ValueError as e:  # NaN or an infinity: no JSON reader would take the line back
        raise OutputError(f"a record holds a number that is not finite ({e}); it cannot be written") from e
    return (text + "\n").encode("utf-8", "backslashreplace")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a journal line is not JSON serializable: {value!r}")


def read_part(path: Path, *, keys: Sequence[Key] | None = None) -> Part:
    """A part up to its last complete line; a missing header (killed at once) gives no entries.

    A line is complete when its newline was written: a process killed while writing leaves its
    last line without one, and that record is left out (the image is redone on resume). A complete
    line that does not parse (the file was edited, or the disk corrupted it), or is longer than any
    record, stops the reading there, with a warning naming the file and line. A line that parses but
    fails :func:`check_line` (with ``keys``, the run's images by position: also when it does not
    name the image at its position) is left out with a warning, and the reading goes on. Of lines
    naming the same image, the last one is kept. A part that is a link or a special file raises
    :class:`kit.rundir.naming.LinkError`.
    """
    part = Part(path=path, header={})
    kept: dict[Key, Entry] = {}
    problems = 0
    with naming.open_regular(path, what="a part file") as f:
        for number, raw in enumerate(_complete_lines(f, part), start=1):
            if number == 1:
                if not _take_header(part, raw):
                    break
                continue
            taken = _take_line(part, kept, raw, number=number, keys=keys, shown=problems < SHOWN_PROBLEMS)
            if taken is None:  # not JSON: what follows is not trusted either
                break
            problems += not taken
    part.entries = list(kept.values())
    if problems > SHOWN_PROBLEMS:
        _warn(path, 0, f"{problems - SHOWN_PROBLEMS} more lines are not records of this run; left out")
    if part.cut:
        LOG.info("%s: its last line was cut short (the process was stopped while writing it); left out", path)
    return part


def _complete_lines(f: IO[bytes], part: Part) -> Iterator[bytes]:
    """The part's lines that end in a newline, each read with at most :data:`MAX_LINE_BYTES`; a
    line cut short sets ``part.cut``, a longer one stops the reading with a warning."""
    number = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        if raw.endswith(b"\n"):
            yield raw
            continue
        if len(raw) > MAX_LINE_BYTES:
            limit = f"it is longer than {MAX_LINE_BYTES // 2**20} MiB; the lines after it are not read"
            _warn(part.path, number, limit)
        else:
            part.cut = True
        return


def _take_header(part: Part, raw: bytes) -> bool:
    value, problem = _parse(raw)
    if problem is None and value.get("kit_part") != PART_VERSION:
        problem = f"not a kit part header (kit_part {shown_value(value.get('kit_part'))})"
    if problem is not None:
        _warn(part.path, 1, f"{problem}; the lines after it are not read")
        return False
    part.header = value
    return True


def _take_line(
    part: Part, kept: dict[Key, Entry], raw: bytes, *, number: int, keys: Sequence[Key] | None, shown: bool
) -> bool | None:
    """Add line ``number`` to ``kept`` when it is a good record (True); log why not (False, or None
    for a line that is not JSON). The parsed line lives only here: one at a time in memory."""
    value, problem = _parse(raw)
    if problem is not None:
        _warn(part.path, number, f"{problem}; the lines after it are not read")
        return None
    entry, invalid = check_line(value, keys=keys, eval_key=part.header.get("eval"))
    if entry is None:
        index = value.get("index")
        if isinstance(index, int) and schema.safe_count(index) and (keys is None or index < len(keys)):
            part.invalid.add(index)
        if shown:
            _warn(part.path, number, f"{invalid}; its image is explained again on --resume")
        return False
    entry.where = f"{part.path} line {number}"
    kept.pop(entry.key, None)  # an image's last line comes last, as in the file
    kept[entry.key] = entry
    part.invalid.discard(entry.index)
    return True


_warned: set[tuple[str, int]] = set()  # (part file, line) already logged by this process


def _warn(path: Path, number: int, text: str) -> None:
    """Log a problem of a part's line once per process (a run reads its parts at start and at the end)."""
    if (str(path), number) in _warned:
        return
    _warned.add((str(path), number))
    if number:
        LOG.warning("%s: line %d is not a record (%s)", path, number, text)
    else:
        LOG.warning("%s: %s", path, text)


def _parse(raw: bytes) -> tuple[dict[str, Any], str | None]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        return {}, f"not JSON: {error}"[:200]
    if not isinstance(value, dict):
        return {}, "not a JSON object"
    return value, None


def check_line(
    value: Mapping[str, Any], *, keys: Sequence[Key] | None = None, eval_key: Any = None
) -> tuple[Entry | None, str | None]:
    """A part's line as an :class:`Entry`, or why it cannot be trusted: the fields of a line, the
    record's (:func:`kit.rundir.schema.record_problem`), the measurement's, and with ``keys`` (the run's
    images by position) that the record names the image at its ``index``."""
    index, occurrence, record = value.get("index"), value.get("n", 0), value.get("image")
    if not (isinstance(index, int) and isinstance(occurrence, int)) or not (
        schema.safe_count(index) and schema.safe_count(occurrence)
    ):
        return (
            None,
            f"its position ({shown_value(index)}, {shown_value(occurrence)}) is not a place in the "
            "source list",
        )
    problem = schema.record_problem(record)
    if problem is None and value.get("eval") is not None:
        problem = schema.measured_problem(value.get("eval"))
        problem = problem and f"its measurement: {problem}"
    if problem is not None or not isinstance(record, dict):
        return None, problem or "the record is not an object"
    entry = Entry(
        record=record, index=index, occurrence=occurrence, evaluation=value.get("eval"), eval_key=eval_key
    )
    if keys is not None and (index >= len(keys) or keys[index] != entry.key):
        return (
            None,
            f"{shown_value(schema.file_of(record))} is not the image at position {index} of this run's "
            "sources",
        )
    return entry, None


def read_parts(out_dir: Path | str, *, keys: Sequence[Key] | None = None) -> list[Part]:
    return [read_part(path, keys=keys) for path in part_files(out_dir)]


def untrusted(parts: Iterable[Part]) -> set[int]:
    """The positions whose latest line (parts in attempt order) was left out: their images are
    explained again, whatever an earlier line said."""
    redo: set[int] = set()
    for part in parts:
        redo -= {e.index for e in part.entries}
        redo |= part.invalid
    return redo


def manifest_entries(images: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """A manifest's ``images`` as entries, in its order (written by any version of the kit)."""
    records = [dict(image) for image in images if isinstance(image, Mapping)]
    keys = keys_of([schema.file_key(r) for r in records])
    return [
        Entry(record=r, index=i, occurrence=k[1], where=f"{MANIFEST_NAME} image {i + 1}")
        for i, (r, k) in enumerate(zip(records, keys))
    ]


def checked_entries(
    entries: Iterable[Entry], keys: Sequence[Key] | None = None
) -> tuple[list[Entry], list[str]]:
    """The entries (a manifest's) that pass :func:`kit.rundir.schema.record_problem` and, with ``keys``
    (the run's images), name one of them; and a line for each one left out."""
    known = None if keys is None else set(keys)
    kept: list[Entry] = []
    left: list[str] = []
    for entry in entries:
        problem = schema.record_problem(entry.record)
        if problem is None and known is not None and entry.key not in known:
            problem = f"{shown_value(schema.file_of(entry.record))} is not one of this run's sources"
        if problem is None:
            kept.append(entry)
        else:
            left.append(f"{entry.where or MANIFEST_NAME}: {problem}")
    return kept, left


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
