"""The run folder: overlays, summaries, raw maps and a manifest that indexes them.

Layout of ``OUT`` (all paths in the manifest are relative to it)::

    manifest.json                 what was run and, per image, detections, maps and errors
    <stem>_summary.jpg            every detection of an image on one sheet
    <stem>/det<id>_<layer>.jpg    one overlay per detection and layer
    maps/<stem>.npz               normalized maps at original size, float16, key det<id>_<layer>

The manifest is rewritten (atomically) after every image, so a run that dies half-way still
leaves a valid record of what it finished.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

from kit.errors import OutputError, ShapeError
from kit.maps import energy_in_box, normalize
from kit.render import color_for, overlay, summary

PathLike = Union[str, Path]
MapKey = tuple[int, str]
RESERVED_STEMS = frozenset({"maps"})  # the raw-map folder; an image called maps.jpg becomes maps_2


def increment_path(path: PathLike, *, exist_ok: bool = False, sep: str = "") -> Path:
    """Return ``path`` if free (or ``exist_ok``), else the next free ``path{sep}N`` (N >= 2), as yolov7.

    ``runs/exp`` -> ``runs/exp2``, ``runs/exp3``, ...; a file keeps its suffix (``a.txt`` -> ``a2.txt``).
    """
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    stem, suffix = (path.stem, path.suffix) if path.is_file() else (path.name, "")
    pattern = re.compile(rf"{re.escape(stem)}{re.escape(sep)}(\d+){re.escape(suffix)}")
    taken = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name))]
    return path.with_name(f"{stem}{sep}{max(taken, default=1) + 1}{suffix}")


@dataclass
class MapRecord:
    """One map of one detection: where its overlay is, and how much of it falls in the box."""

    layer: str
    overlay: Optional[str]
    energy_in_box: Optional[float]
    no_gradient: bool = False
    key: Optional[str] = None  # the array's name in maps/<stem>.npz


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

    def to_json(self) -> dict[str, Any]:
        """The manifest entry: like ``asdict`` but maps keyed by layer name."""
        out = asdict(self)
        for det, rec in zip(out["detections"], self.detections):
            det["maps"] = {m.layer: {k: v for k, v in asdict(m).items() if k != "layer"} for m in rec.maps}
        return out


class RunWriter:
    """Writes one run's pictures, maps and manifest under ``out_dir``."""

    def __init__(
        self,
        *,
        out_dir: PathLike,
        upstream: str,
        weights: str,
        method: str,
        target: str,
        layers: Sequence[str],
        extra: Mapping[str, Any] | None = None,
        tile_width: int = 480,
        jpeg_quality: int = 90,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.layers = list(layers)
        self.header: dict[str, Any] = {
            "upstream": upstream,
            "weights": weights,
            "method": method,
            "target": target,
            "layers": self.layers,
        }
        clash = sorted(set(extra or {}) & (set(self.header) | {"images"}))
        if clash:
            raise OutputError(f"extra manifest keys {clash} would overwrite the run's own; rename them")
        self.extra = dict(extra or {})
        self.tile_width = tile_width
        self.jpeg_quality = jpeg_quality
        self.images: list[ImageRecord] = []
        self._stems: set[str] = set(RESERVED_STEMS)
        self._layer_names: dict[str, str] = {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def failed(self) -> int:
        """How many images were recorded with an error."""
        return sum(1 for r in self.images if r.error is not None)

    def write_image(
        self,
        *,
        source: PathLike,
        image_bgr: np.ndarray,
        detections: Sequence[Any],
        maps: Mapping[MapKey, np.ndarray | None],
    ) -> ImageRecord:
        """Write overlays, summary and raw maps of one image; record it in the manifest.

        ``detections`` are dicts or objects with ``box_xyxy`` (original pixels), ``class_id``,
        ``score`` and optionally ``id`` (default: position), ``class_name`` and ``level``. ``maps``
        holds an (H, W) map in [0, 1] at original size per ``(id, layer)``, or None where the
        detection had no gradient at that layer.
        """
        records = [_detection_record(d, i) for i, d in enumerate(detections)]
        height, width = image_bgr.shape[:2]
        _check_maps(source, records, maps, (height, width))  # before any file is written
        stem = self._unique_stem(Path(source))
        arrays: dict[str, np.ndarray] = {}
        tiles: list[tuple[np.ndarray | None, list[float], str]] = []
        for index, det in enumerate(records):
            drawn: list[np.ndarray] = []
            for layer in self._layers_of(det.id, maps):
                cam = maps[(det.id, layer)]
                label = f"{det.id} {det.class_name} {det.score:.2f}"
                if len(self.layers) > 1:
                    label += f" {layer}"
                if cam is not None:
                    drawn.append(cam)
                if cam is None:
                    det.maps.append(
                        MapRecord(layer=layer, overlay=None, energy_in_box=None, no_gradient=True)
                    )
                    continue
                key = f"det{det.id}_{self._safe_layer(layer)}"
                rel = f"{stem}/{key}.jpg"
                picture = overlay(image_bgr, cam, box_xyxy=det.box_xyxy, label=label, color=color_for(index))
                self._write_jpeg(rel, picture)
                energy = round(energy_in_box(cam, det.box_xyxy), 6)
                det.maps.append(MapRecord(layer=layer, overlay=rel, energy_in_box=energy, key=key))
                arrays[key] = cam.astype(np.float16)
            # One summary tile per detection: its layers' maps fused (sum of normalized maps).
            fused = normalize(np.sum(drawn, axis=0)) if drawn else None
            tiles.append((fused, det.box_xyxy, f"{det.id} {det.class_name} {det.score:.2f}"))
        many = len(tiles) > 12  # keep the sheet a viewable size for crowded images
        sheet = summary(
            image_bgr,
            tiles=tiles,
            max_cols=8 if many else 4,
            tile_width=self.tile_width // 2 if many else self.tile_width,
        )
        record = ImageRecord(
            file=str(source), width=width, height=height, detections=records, error=None,
            summary=self._write_jpeg(f"{stem}_summary.jpg", sheet),
            maps_file=self._write_npz(f"maps/{stem}.npz", arrays) if arrays else None,
        )  # fmt: skip
        self.images.append(record)
        self._write_manifest()
        return record

    def add_error(self, source: PathLike, message: str) -> ImageRecord:
        """Record an image that could not be explained; the run goes on."""
        record = ImageRecord(file=str(source), width=None, height=None, detections=[], error=message)
        self.images.append(record)
        self._write_manifest()
        return record

    def finish(self) -> Path:
        """Write the final manifest; return its path."""
        self._write_manifest()
        return self.manifest_path

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict: run settings, ``extra``, and one entry per image."""
        return {**self.header, **self.extra, "images": [r.to_json() for r in self.images]}

    def _layers_of(self, det_id: int, maps: Mapping[MapKey, Any]) -> list[str]:
        """Layers with a map for ``det_id``: the run's layers first, then any others in given order."""
        given = [layer for (i, layer) in maps if i == det_id]
        return [la for la in self.layers if la in given] + [la for la in given if la not in self.layers]

    def _unique_stem(self, source: Path) -> str:
        """The file's stem, made unique in this run (case-insensitively): a.jpg, a.png -> a, a_2."""
        stem = source.stem or "image"
        candidate, n = stem, 1
        while candidate.lower() in self._stems:
            n += 1
            candidate = f"{stem}_{n}"
        self._stems.add(candidate.lower())
        return candidate

    def _safe_layer(self, layer: str) -> str:
        """A file-name-safe, run-unique spelling of a layer name (model.24 stays model.24)."""
        if layer not in self._layer_names:
            base = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer).strip(".") or "layer"
            name, n = base, 1
            while name in self._layer_names.values():
                n += 1
                name = f"{base}_{n}"
            self._layer_names[layer] = name
        return self._layer_names[layer]

    def _write_jpeg(self, rel: str, image: np.ndarray) -> str:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise OutputError(f"OpenCV could not encode {rel} as JPEG")
        _atomic_write(self.out_dir / rel, data.tobytes())
        return rel

    def _write_npz(self, rel: str, arrays: dict[str, np.ndarray]) -> str:
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
        return rel

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest(), indent=2, ensure_ascii=False, default=_json_default)
        _atomic_write(self.manifest_path, (text + "\n").encode("utf-8"))


def _check_maps(
    source: PathLike, records: list[DetectionRecord], maps: Mapping[MapKey, Any], hw: tuple[int, int]
) -> None:
    """Unique detection ids, every map belongs to one, and maps are at the original size."""
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise OutputError(f"detection ids of {source} are not unique: {ids}")
    unknown = sorted(key for key in maps if key[0] not in set(ids))
    if unknown:
        raise OutputError(f"maps {unknown} of {source} belong to no detection; ids are {ids}")
    for key, cam in maps.items():
        if cam is not None and cam.shape != hw:
            raise ShapeError(
                f"map {key} of {source} is {cam.shape}, expected the original size {hw}; "
                "bring it back with kit.maps.to_original"
            )


def _detection_record(det: Any, index: int) -> DetectionRecord:
    """Read a detection given as a dict or an object (dataclass) into a DetectionRecord."""

    def get(*names: str, default: Any = KeyError) -> Any:
        for name in names:
            value = det.get(name, KeyError) if isinstance(det, Mapping) else getattr(det, name, KeyError)
            if value is not KeyError:
                return value
        if default is KeyError:
            raise OutputError(f"detection {index} has no {' or '.join(names)}: {det!r}")
        return default

    class_id = int(get("class_id", "cls"))
    level = get("level", default=None)
    return DetectionRecord(
        id=int(get("id", default=index)),
        box_xyxy=[float(v) for v in np.asarray(get("box_xyxy", "box"), dtype=np.float64).reshape(4)],
        class_id=class_id,
        class_name=str(get("class_name", "name", default=class_id)),
        score=float(get("score", "conf")),
        level=None if level is None else int(level),
    )


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and paths in ``extra`` become plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} in the manifest is not JSON serializable: {value!r}")
