"""How results show in a notebook (Jupyter calls ``_repr_png_`` / ``_repr_html_``): an image's
detections with their maps as one picture, and a list of results as a compact table.

The picture is the run folder's summary sheet (:func:`kit.core.render.summary`: the image with every
box, then one overlay per detection, labelled with what it explains and carrying the colour scale),
bounded in size: at most :data:`MAX_TILES` detections (the rest named in the caption) and
:data:`MAX_SIDE` pixels a side, so a crowded or huge image stays a small PNG. Names from outside are
escaped (:func:`kit.core.display.shown`, then HTML).
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from kit.core.display import shown
from kit.core.geometry import map_size, resize_picture, scale_box
from kit.core.render import summary

if TYPE_CHECKING:
    from kit.core.results import DetectionResult, ImageResult

MAX_TILES = 12  # detections drawn in one image's picture
MAX_SIDE = 1600  # pixels, the picture's longer side at most
TILE_WIDTH = 320
MAX_ROWS = 50  # images listed in a results table


def detection_map(det: DetectionResult, layers: Sequence[str]) -> tuple[Optional[str], Optional[np.ndarray]]:
    """The map a picture shows for ``det``: the fused one if the run made it, else its first layer's
    that gradient reached (a YOLO detection has one, at its head level); (None, None) if none."""
    for layer in ["fused", *layers, *det.maps]:
        cam = det.maps.get(layer)
        if cam is not None:
            return layer, cam
    return None, None


def sheet(result: ImageResult) -> Optional[np.ndarray]:
    """The picture of one image's result (BGR uint8), or None for an image without pixels."""
    image = result.image
    if image is None:
        return None
    hw = map_size((image.shape[0], image.shape[1]))  # a large image's maps are kept smaller: drawn there
    small = resize_picture(image, hw)
    tiles = []
    for det in result.detections[:MAX_TILES]:
        layer, cam = detection_map(det, result.layers)
        label = det.label(result.explains) + (f" {layer}" if layer and len(result.layers) > 1 else "")
        if cam is not None and cam.shape != hw:
            cam = cv2.resize(np.asarray(cam, np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        tiles.append((cam, scale_box(det.box_xyxy, image.shape[:2], hw), label))
    image = small
    picture = summary(image, tiles=tiles, tile_width=min(TILE_WIDTH, max(1, image.shape[1])))
    longest = max(picture.shape[:2])
    if longest > MAX_SIDE:
        f = MAX_SIDE / longest
        size = (max(1, round(picture.shape[1] * f)), max(1, round(picture.shape[0] * f)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    return picture


def png(result: ImageResult) -> Optional[bytes]:
    """:func:`sheet` as PNG bytes (None: nothing to show)."""
    picture = sheet(result)
    if picture is None:
        return None
    ok, data = cv2.imencode(".png", picture)
    return data.tobytes() if ok else None


def caption(result: ImageResult) -> str:
    """One line about an image's result: file, size, detections (and those not drawn), error."""
    name = shown(result.file)
    if result.error is not None:
        return f"{name}: failed: {shown(result.error)}"
    n = len(result.detections)
    more = f" (the first {MAX_TILES} drawn)" if n > MAX_TILES else ""
    explains = f"; each map explains {result.explains}" if result.explains else ""
    word = "detection" if n == 1 else "detections"
    return f"{name} ({result.width}x{result.height}): {n} {word}{more}{explains}"


def image_html(result: ImageResult) -> str:
    """An image's result as HTML: its picture (base64 PNG) above its caption."""
    data = png(result)
    text = f"<figcaption>{html.escape(caption(result))}</figcaption>"
    if data is None:
        return f"<figure>{text}</figure>"
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{src}" style="max-width:100%"/>{text}</figure>'


def classes(result: ImageResult) -> str:
    """'2 square, 1 triangle': the detections' classes, most frequent first."""
    counts = Counter(d.class_name for d in result.detections)
    return ", ".join(f"{n} {shown(name)}" for name, n in counts.most_common())


def table_html(results: Sequence[ImageResult]) -> str:
    """A list of results as a compact table: one row per image (at most :data:`MAX_ROWS`)."""
    head = "<tr><th>#</th><th>file</th><th>size</th><th>detections</th><th>classes</th><th>error</th></tr>"
    rows = []
    for i, r in enumerate(results[:MAX_ROWS]):
        size = "" if r.width is None else f"{r.width}x{r.height}"
        cells = [str(i), shown(r.file), size, str(len(r.detections)), classes(r), shown(r.error or "")]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    if len(results) > MAX_ROWS:
        rows.append(
            f'<tr><td colspan="6">... {len(results) - MAX_ROWS} more (index the list to see one)</td></tr>'
        )
    detections = sum(len(r.detections) for r in results)
    failed = sum(r.error is not None for r in results)
    title = f"{len(results)} images, {detections} detections, {failed} failed"
    return f"<table><caption>{title}</caption>{head}{''.join(rows)}</table>"
