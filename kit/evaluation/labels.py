"""Ground truth for ``--eval``: YOLO txt label folders and COCO json files.

Both are read for the run's images before the first image is explained, so a bad label file
stops the run at once with the file, the line (or annotation) and what to do. Boxes come out as
``(x1, y1, x2, y2)`` in the image's own pixels, classes as the model's class ids.

- **YOLO txt** (a folder): ``<image stem>.txt`` per image, one ``class cx cy w h`` row per object,
  normalized to [0, 1], as in yolov7's and yolov3's datasets (a polygon row ``class x1 y1 x2 y2
  ...`` becomes its bounding box, as yolov7's loader does). As there, a missing label file means
  the image has no objects; the run warns once with the count.
- **COCO json** (a file): ``images`` (``file_name``, ``id``, ``width``, ``height``), ``annotations``
  (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` in pixels, ``iscrowd``) and
  ``categories`` (``id``, ``name``). An image is found by its file name (the json's ``file_name``
  may carry folders; its last parts must match the image's path). An image the json does not
  list has no ground truth and is left out of the evaluation; a listed image without annotations
  has no objects. Crowd annotations (``iscrowd: 1``) are left out, as COCO's evaluator ignores
  them. Categories become class ids by :func:`map_categories`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from kit.core.errors import KitError
from kit.core.files import read_at_most
from kit.rundir.schema import is_finite_number

LOG = logging.getLogger("kit")
PathLike = Union[str, Path]
NORMALIZED_SLACK = 1e-6  # rounding in label writers (yolov7 checks <= 1 exactly)
EXAMPLES = 5  # file names quoted in a warning
# The largest label files read, so that a hostile or mistaken one cannot take the memory: one image's
# YOLO txt (tens of KB for hundreds of objects, polygons included), a COCO json (train2017's is
# 448 MB; parsing takes about 4x its size in memory).
MAX_TXT_BYTES = 16 * 2**20
MAX_JSON_BYTES = 512 * 2**20


class LabelError(KitError, ValueError):
    """A ground-truth file or entry that cannot be read as labels for the run's images."""


@dataclass(frozen=True)
class GroundTruth:
    """One image's objects: ``boxes`` (n, 4) xyxy in original pixels, ``classes`` (n,) model class ids."""

    boxes: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> GroundTruth:
        return cls(boxes=np.zeros((0, 4)), classes=np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class Labels:
    """Ground truth for a run's images, read by :func:`load_labels`."""

    path: Path
    format: str  # "yolo" or "coco"
    class_rule: str  # how label classes became the model's class ids, in words
    # per image path: ("yolo", rows (n, 5) normalized) | ("coco", (boxes, classes, width, height))
    _entries: dict[Path, Any] = field(default_factory=dict, repr=False)
    without_file: list[Path] = field(default_factory=list)  # YOLO: no txt, i.e. no objects
    not_listed: list[Path] = field(default_factory=list)  # COCO: not in `images`, not evaluated
    crowd_ignored: int = 0

    def ground_truth(self, source: PathLike, hw: tuple[int, int]) -> GroundTruth | None:
        """The objects of ``source`` (an image of the run, ``hw`` = its height and width).

        None when the labels do not cover the image (COCO: not in ``images``). Raises
        :class:`LabelError` when the json's ``width``/``height`` are not the image's.
        """
        entry = self._entries.get(Path(source))
        if entry is None:
            return None
        height, width = int(hw[0]), int(hw[1])
        if self.format == "yolo":
            rows = entry
            cx, cy = rows[:, 1] * width, rows[:, 2] * height
            w, h = rows[:, 3] * width, rows[:, 4] * height
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            return GroundTruth(boxes=boxes.reshape(-1, 4), classes=rows[:, 0].astype(np.int64))
        boxes, classes, json_w, json_h = entry
        if (json_w is not None and json_w != width) or (json_h is not None and json_h != height):
            raise LabelError(
                f"{self.path}: {Path(source).name} is {width}x{height} pixels but the json says "
                f"{json_w}x{json_h}; its boxes are for another size. Evaluate the images the json was "
                "made for, or fix width/height and the boxes"
            )
        return GroundTruth(boxes=boxes, classes=classes)


def load_labels(path: PathLike, *, names: Sequence[str], sources: Sequence[PathLike]) -> Labels:
    """Read the ground truth of ``sources`` from ``path``: a folder of YOLO txt files or a COCO json.

    ``names`` are the model's class names (their index is the class id).
    """
    p = Path(path)
    try:
        is_dir, is_file, exists = p.is_dir(), p.is_file(), p.exists()
    except OSError as error:  # a name too long, a path through a file, a loop of links
        raise LabelError(f"--eval {p}: cannot be read ({error.strerror or error})") from error
    if is_dir:
        return _load_yolo(p, names=names, sources=[Path(s) for s in sources])
    if is_file and p.suffix.lower() == ".json":
        return _load_coco(p, names=names, sources=[Path(s) for s in sources])
    if exists and not is_file:
        raise LabelError(
            f"--eval {p}: not a regular file or folder (a FIFO, socket or device is never read); pass a "
            "folder of YOLO .txt labels or a COCO .json"
        )
    if is_file:
        raise LabelError(
            f"--eval {p}: expected a folder of YOLO .txt label files (one <image stem>.txt per image) "
            "or a COCO .json file; for one YOLO label file, pass its folder"
        )
    where = "" if p.is_absolute() else f" (looked in {Path.cwd()})"
    raise LabelError(
        f"--eval {p}: no such file or folder{where}; pass a folder of YOLO .txt labels or a COCO .json"
    )


# ---- YOLO txt --------------------------------------------------------------------------------


def _load_yolo(folder: Path, *, names: Sequence[str], sources: Sequence[Path]) -> Labels:
    if not any(folder.glob("*.txt")):
        raise LabelError(
            f"--eval {folder}: the folder holds no .txt label files; pass the labels/ folder of a YOLO "
            "dataset (one <image stem>.txt with `class cx cy w h` rows per image) or a COCO .json"
        )
    labels = Labels(path=folder, format="yolo", class_rule=f"class ids as written (0..{len(names) - 1})")
    for source in sources:
        txt = folder / f"{source.stem}.txt"
        if _is_label_file(txt):
            try:
                labels._entries[source] = read_yolo_file(txt, nc=len(names), names=names)
            except MemoryError:
                raise LabelError(f"{txt}: the label file does not fit in memory") from None
        else:
            labels._entries[source] = np.zeros((0, 5))
            labels.without_file.append(source)
    if sources and len(labels.without_file) == len(sources):
        raise LabelError(
            f"--eval {folder}: none of the {len(sources)} images has a label file there (looked for "
            f"{sources[0].stem}.txt, ...); pass the labels folder of these images"
        )
    _warn_some(
        labels.without_file,
        f"of {len(sources)} images have no label file in {folder} and count as images without objects "
        "(as in yolov7's datasets)",
    )
    return labels


def read_yolo_file(path: Path, *, nc: int, names: Sequence[str] = ()) -> np.ndarray:
    """Rows ``(class, cx, cy, w, h)`` normalized, (n, 5) float64; LabelError naming file and line."""
    rows: list[list[float]] = []
    try:
        text = read_bounded(path, limit=MAX_TXT_BYTES, what="label file").decode("utf-8")
    except UnicodeDecodeError as error:
        raise LabelError(f"{path}: cannot read the label file ({error})") from error
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise LabelError(
                f"{where}: {line.strip()!r} is not a row of numbers; a YOLO label row is "
                "`class cx cy w h` (class id, then box centre and size normalized to [0, 1])"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise LabelError(f"{where}: {line.strip()!r} has a non-finite value")
        if len(values) == 5:
            cls, cx, cy, w, h = values
            coordinates = [cx, cy, w, h]
        elif len(values) >= 7 and len(values) % 2 == 1:  # a polygon (yolov7 segments)
            cls, points = values[0], np.array(values[1:]).reshape(-1, 2)
            (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
            coordinates = [float(x1), float(y1), float(x2), float(y2)]
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        else:
            raise LabelError(
                f"{where}: {len(values)} values in {line.strip()!r}; a YOLO label row has 5: "
                "`class cx cy w h` (or a polygon `class x1 y1 x2 y2 x3 y3 ...`)"
            )
        if cls != int(cls) or not 0 <= cls < nc:
            known = f" ({', '.join(names)})" if names and len(names) <= 20 else ""
            raise LabelError(
                f"{where}: class {fields[0]} is not a class id of the model: 0..{nc - 1}{known}. "
                "Label with the model's class ids, or evaluate the model these labels were made for"
            )
        if any(v < -NORMALIZED_SLACK or v > 1 + NORMALIZED_SLACK for v in coordinates):
            raise LabelError(
                f"{where}: coordinates {' '.join(fields[1:])} are not normalized to [0, 1]; YOLO labels "
                "divide x and width by the image width, y and height by its height"
            )
        rows.append([float(cls), float(cx), float(cy), float(w), float(h)])
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# ---- COCO json -------------------------------------------------------------------------------


def map_categories(
    categories: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> tuple[dict[int, int | None], str]:
    """COCO category id -> model class id (None: not a class of the model), and the rule used.

    By name where category names are the model's class names (case and surrounding spaces
    ignored); categories whose name is not a class name are then left out, and say so. When no
    name matches: by order, the k-th category in ascending id is class k (detectron2's rule for
    COCO's non-contiguous ids), which needs no more categories than the model has classes.
    """
    index = {str(n).strip().lower(): k for k, n in enumerate(names)}
    by_name = {int(c["id"]): index.get(str(c["name"]).strip().lower()) for c in categories}
    found = [i for i, k in by_name.items() if k is not None]
    if found:
        left_out = [c for c in categories if by_name[int(c["id"])] is None]
        rule = f"by name: {len(found)} of {len(categories)} categories are model classes"
        if left_out:
            listed = ", ".join(f"{c['name']!r} (id {c['id']})" for c in left_out[:10])
            rule += (
                f"; annotations of the others are left out: {listed}{', ...' if len(left_out) > 10 else ''}"
            )
        return by_name, rule
    ordered = sorted(int(c["id"]) for c in categories)
    if len(ordered) > len(names):
        raise LabelError(
            f"no category name is a class name of the model ({', '.join(names[:10])}"
            f"{', ...' if len(names) > 10 else ''}) and there are {len(ordered)} categories for "
            f"{len(names)} classes, so they cannot be mapped by order either; name the categories as the "
            "model's classes"
        )
    mapping: dict[int, int | None] = {cid: k for k, cid in enumerate(ordered)}
    shown = ", ".join(f"{cid}->{k}" for cid, k in list(mapping.items())[:10])
    rule = (
        "by order: no category name is a model class name, so the k-th category in ascending id is "
        f"class k ({shown}{', ...' if len(mapping) > 10 else ''})"
    )
    return mapping, rule


def _coco_images(path: Path, listed: list[Any]) -> dict[int, dict[str, Any]]:
    """A COCO file's ``images`` by id, each checked, with empty ``boxes`` and ``classes``."""
    images: dict[int, dict[str, Any]] = {}
    for i, raw in enumerate(listed):
        image = _entry(path, "images", i, raw, {"id": int, "file_name": str})
        if image["id"] in images:
            raise LabelError(f"{path}: images[{i}]: image id {image['id']} is listed twice")
        for key in ("width", "height"):
            value = image.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise LabelError(f"{path}: images[{i}] ({image['file_name']}): {key} {value!r} is not a size")
        images[image["id"]] = {**image, "boxes": [], "classes": []}
    return images


def _coco_boxes(
    path: Path, annotations: list[Any], *, images: dict[int, dict[str, Any]], mapping: dict[int, int | None]
) -> int:
    """Each annotation's box (xyxy) and class into its image's ``boxes`` and ``classes``, checked;
    returns how many crowd annotations were left out."""
    crowd = 0
    for i, raw in enumerate(annotations):
        ann = _entry(path, "annotations", i, raw, {"image_id": int, "category_id": int, "bbox": list})
        where = f"{path}: annotations[{i}] (id {ann.get('id', '?')})"
        if ann["image_id"] not in images:
            raise LabelError(f"{where}: image_id {ann['image_id']} is not in `images`")
        if ann["category_id"] not in mapping:
            raise LabelError(f"{where}: category_id {ann['category_id']} is not in `categories`")
        bbox = ann["bbox"]
        if len(bbox) != 4 or not all(is_finite_number(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
            raise LabelError(
                f"{where}: bbox {bbox!r} is not [x, y, width, height] in pixels with width, height >= 0"
            )
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        cls = mapping[ann["category_id"]]
        if cls is None:
            continue
        x, y, w, h = (float(v) for v in bbox)
        images[ann["image_id"]]["boxes"].append([x, y, x + w, y + h])
        images[ann["image_id"]]["classes"].append(cls)
    return crowd


def _load_coco(path: Path, *, names: Sequence[str], sources: Sequence[Path]) -> Labels:
    data = read_json(path)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not all(isinstance(data.get(k), list) for k in ("images", "categories"))
        or not isinstance(annotations, (list, type(None)))
    ):
        raise LabelError(
            f"{path}: not a COCO detection file: expected an object with lists `images`, `annotations` "
            "and `categories`"
        )
    categories = [
        _entry(path, "categories", i, c, {"id": int, "name": str}) for i, c in enumerate(data["categories"])
    ]
    if not categories:
        raise LabelError(f"{path}: `categories` is empty; list the categories with their id and name")
    mapping, rule = map_categories(categories, names)
    images = _coco_images(path, data["images"])
    labels = Labels(path=path, format="coco", class_rule=rule)
    labels.crowd_ignored = _coco_boxes(path, annotations or [], images=images, mapping=mapping)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for image in images.values():
        by_name.setdefault(Path(image["file_name"]).name, []).append(image)
    for source in sources:
        found = _find_image(path, source, by_name.get(source.name, []))
        if found is None:
            labels.not_listed.append(source)
        else:
            labels._entries[source] = (
                np.array(found["boxes"], dtype=np.float64).reshape(-1, 4),
                np.array(found["classes"], dtype=np.int64),
                found.get("width"),
                found.get("height"),
            )
    if sources and not labels._entries:
        raise LabelError(
            f"--eval {path}: none of the {len(sources)} images is in its `images` (looked for file_name "
            f"{sources[0].name!r}, ...); pass the json of these images"
        )
    _warn_some(
        labels.not_listed, f"of {len(sources)} images are not in {path} and are left out of the evaluation"
    )
    return labels


def read_bounded(path: Path, *, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; LabelError naming the file
    otherwise. Opened without blocking (a FIFO put in its place never hangs the run)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise LabelError(f"{path}: cannot read the {what} ({error.strerror or error})") from error
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise LabelError(
                f"{path}: the {what} is not a regular file (a FIFO, socket or device is never read)"
            )
        size = info.st_size
        data = b"" if size > limit else read_at_most(file, limit + 1, expected=size)
        size = max(size, len(data))  # a file that grew while it was read stops at the limit too
    if size > limit:
        raise LabelError(
            f"{path}: the {what} is larger than {limit // 2**20} MiB ({size} bytes); the kit does not "
            "read label files that large: give the labels of the run's images only"
        )
    return data


def read_json(path: Path) -> Any:
    """``path`` parsed as JSON (at most MAX_JSON_BYTES); every way it cannot be is a LabelError: not
    UTF-8, not JSON, nested deeper than Python's parser follows, an integer of thousands of digits,
    or more than memory holds."""
    try:
        data = read_bounded(path, limit=MAX_JSON_BYTES, what="file")
        return json.loads(data.decode("utf-8"))
    except LabelError:
        raise
    except json.JSONDecodeError as error:
        where = f"{path}:{error.lineno}"
        raise LabelError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise LabelError(f"{path}: cannot read the file: not UTF-8 text ({error})") from None
    except RecursionError:
        raise LabelError(
            f"{path}: its JSON is nested deeper than Python's parser follows; a COCO file has a few levels"
        ) from None
    except MemoryError:
        raise LabelError(
            f"{path}: its JSON does not fit in memory; give the labels of the run's images only"
        ) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise LabelError(f"{path}: not a COCO detection file: {error}") from None


def _warn_some(files: Sequence[Path], what: str) -> None:
    """One warning ``eval: <count> <what>: a.png, b.png, ...`` naming up to EXAMPLES of ``files``."""
    if files:
        examples = ", ".join(f.name for f in files[:EXAMPLES]) + (", ..." if len(files) > EXAMPLES else "")
        LOG.warning("eval: %d %s: %s", len(files), what, examples)


def _entry(path: Path, key: str, index: int, value: Any, required: Mapping[str, type]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LabelError(f"{path}: {key}[{index}] is not an object")
    for name, kind in required.items():
        v = value.get(name)
        if v is None:
            raise LabelError(
                f"{path}: {key}[{index}] has no `{name}`; a COCO {key} entry needs {', '.join(required)}"
            )
        if not isinstance(v, kind) or isinstance(v, bool):
            raise LabelError(f"{path}: {key}[{index}]: `{name}` is {v!r}, expected {kind.__name__}")
    return value


def _is_label_file(path: Path) -> bool:
    """Whether the label file ``path`` is there: False when nothing is (or its name cannot be: too
    long for the filesystem), a LabelError when something other than a regular file is."""
    try:
        mode = path.stat().st_mode
    except OSError:  # no such file, a dangling link, a name too long
        return False
    if not stat.S_ISREG(mode):
        raise LabelError(
            f"{path}: the label file is not a regular file (a folder, FIFO, socket or device); replace it "
            "with the image's `class cx cy w h` rows, or remove it if the image has no objects"
        )
    return True


def _find_image(path: Path, source: Path, candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The json image whose file_name is ``source``: same name, and its folders end ``source``'s path."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    parts = source.resolve().parts
    fitting = [
        c for c in candidates if parts[-len(Path(c["file_name"]).parts) :] == Path(c["file_name"]).parts
    ]
    if len(fitting) != 1:
        listed = ", ".join(repr(c["file_name"]) for c in candidates[:5])
        raise LabelError(
            f"{path}: {len(candidates)} images are called {source.name} ({listed}) and "
            f"{'none' if not fitting else 'several'} fits {source}; give file_name with the folders that "
            "tell them apart"
        )
    return fitting[0]
