"""A run folder as a comparable record: what must stay equal kept exactly, what differs between runs
of the same code taken out.

Kept exactly: every value of ``manifest.json``, ``eval.json`` and ``audit.json`` (boxes, scores,
class ids, levels, energies, eval numbers, missed objects and their candidates), the sha256 of
every picture the run wrote, and each raw map of ``maps/*.npz`` as its dtype, shape and the sha256
of its values (the archive's own bytes hold the time each entry was written, so they are not
compared).

Taken out, and nothing else:

- absolute paths: the folders a case runs in (inputs, run folders, the upstream checkout, the
  repository) become ``<work>``, ``<yolov7>``, ... ``<repo>`` wherever they appear in a string;
  a ``weights`` value is its file name (the demo detector may move inside the kit; its
  ``weights_sha256`` stays);
- the upstream checkout's commit (``upstream_commit``) when it is the checkout's HEAD: it follows
  the patch series, not the kit; any other value is kept;
- durations (``seconds``), the kit's own version (``kit_version``) and command line (``argv``), and
  a top-level ``schema_version``: a manifest may gain one, and it says nothing about the maps;
- ``index.html``: only that it exists (it shows the manifest, so it changes with any key added).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

RUN_JSON = ("manifest.json", "eval.json", "audit.json")
PRESENCE_ONLY = frozenset({"index.html"})
DROPPED_TOP_LEVEL = frozenset({"schema_version", "kit_version", "argv", "seconds"})
HEAD = "<checkout HEAD>"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tokens(folders: Mapping[str, Path]) -> dict[str, str]:
    """``{absolute path: <name>}`` for each named folder, as given and resolved, longest first (so a
    folder inside another is replaced before it)."""
    found: dict[str, str] = {}
    for name, folder in folders.items():
        for spelling in {str(folder), str(folder.resolve())}:
            found.setdefault(spelling, f"<{name}>")
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


def replace_paths(value: Any, paths: Mapping[str, str]) -> Any:
    """``value`` with every folder of ``paths`` replaced by its token, in every string at any depth."""
    if isinstance(value, str):
        for path, token in paths.items():
            value = value.replace(path, token)
        return value
    if isinstance(value, list):
        return [replace_paths(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: replace_paths(v, paths) for k, v in value.items()}
    return value


def weights_by_name(value: Any) -> Any:
    """Every ``weights`` string at any depth reduced to its file name."""
    if isinstance(value, list):
        return [weights_by_name(v) for v in value]
    if isinstance(value, dict):
        return {
            k: (Path(v).name if k == "weights" and isinstance(v, str) else weights_by_name(v))
            for k, v in value.items()
        }
    return value


def normalize_json(data: Any, *, paths: Mapping[str, str], head: str | None) -> Any:
    """One run JSON file's content, normalized (see the module's docstring)."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in DROPPED_TOP_LEVEL}
        if head is not None and data.get("upstream_commit") == head:
            data["upstream_commit"] = HEAD
    return replace_paths(weights_by_name(data), paths)


def npz_arrays(path: Path) -> dict[str, dict[str, Any]]:
    """Each array of an ``.npz`` as its dtype, shape and the sha256 of its values (C order), with
    their sum and maximum for a reader of a difference."""
    arrays: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            with archive.open(name) as entry:
                array = np.lib.format.read_array(entry, allow_pickle=False)
            values = array.astype(np.float64)
            arrays[name.removesuffix(".npy")] = {
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "sha256": sha256(np.ascontiguousarray(array).tobytes()),
                # equal whenever the hash is; where it is not, they show how far apart the maps are
                "sum": round(float(values.sum()), 3),
                "max": round(float(values.max()), 4) if values.size else None,
            }
    return arrays


def file_record(path: Path) -> Any:
    if path.name in PRESENCE_ONLY:
        return "present"
    if path.suffix == ".npz":
        return npz_arrays(path)
    return sha256(path.read_bytes())


def normalize_run(out: Path, *, paths: Mapping[str, str], head: str | None = None) -> dict[str, Any]:
    """The run folder ``out`` as a record: its JSON files normalized, every other file by content.

    ``head``: the commit of the upstream checkout the run used (``upstream_commit`` equal to it is
    replaced by a token). Every file of the folder is listed, hidden ones too, so a file left
    behind or not written shows.
    """
    record: dict[str, Any] = {}
    for name in RUN_JSON:
        if (out / name).is_file():
            data = json.loads((out / name).read_text(encoding="utf-8"))
            record[name.removesuffix(".json")] = normalize_json(data, paths=paths, head=head)
    record["files"] = {
        path.relative_to(out).as_posix(): file_record(path)
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name not in RUN_JSON
    }
    return record


def dumps(record: Any) -> str:
    """The stored form of a record: sorted keys, two-space indents, a final newline."""
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
