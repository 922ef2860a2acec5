"""``python -m kit.report.page RUN``: ``index.html``, the page a person opens to look at a run folder.

The page is written from the finished run folder's own files (``manifest.json``, and ``eval.json``
and ``audit.json`` when the run has them) and links to the pictures beside it by relative paths,
so it opens from ``file://`` with no server and no network: no CDN, no fonts, plots drawn as
inline SVG. The first screens' pictures are ``<img>`` elements loaded with the page (screenshots and
print show them), the rest are put in as they near the screen, and the page holds no more than a
card per detection, so a run of thousands of images opens in seconds (docs/report.md has the times).

What it shows, detections first: a header (the run's name; one line of counts, method, target,
upstream, recall; warnings; failed images and their errors; the provenance folded: upstream,
commit, weights, every setting); then image by image, the image with its boxes numbered as its
cards (cropped out of its summary sheet, :mod:`kit.report.pictures`), its missed objects and why,
and a card per detection with what its maps explain, its eval numbers, and each layer's overlay
large, named in words beside its index (:mod:`kit.report.layers`; a layer no gradient reached is
named, not drawn); filters (class, minimum score, layer, one image) and sorting (score,
``energy_in_box``) that work without reloading; with ``--eval`` the measures, deletion/insertion
curves and missed objects; with ``--audit`` the per-class shares and the detections whose maps lie
most outside their boxes.

The DOM is a contract for tests and scripts: every detection card is an element of class
``detection`` with ``data-image`` (the image's stem in the run folder), ``data-id``,
``data-class`` (class name) and ``data-score``; a card a filter hides has the ``hidden``
attribute; each image's head is ``section.image-head`` (``id="i<n>"``, ``data-image``) before its
cards; the class filter is ``<select id="class-filter">``, the score filter ``<input
id="score-filter">`` (also ``#layer-filter``, ``#sort``, ``#shown-count``); the provenance is
``details#provenance``.

Every name from the run folder is escaped for HTML and percent-encoded in links, and a
Content-Security-Policy lets only the page's own script run and only the run folder's pictures
load. The manifest is read with :mod:`kit.rundir.reader` (old and damaged manifests alike),
without torch; ``index.html`` is written through a temporary file and a rename, never while a
live run holds the folder.

    write_report("runs/cam/yolov7/exp")  # -> runs/cam/yolov7/exp/index.html
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional
from urllib.parse import quote, unquote

from kit.core.display import shown
from kit.evaluation.audit import EXIT_OK, EXIT_REFUSED, command_failed, run_parser
from kit.report.layers import STRIDES_KEY, layer_names, level_words
from kit.report.pictures import first_panel, jpeg_size
from kit.rundir import reader, schema
from kit.rundir.naming import replace_file
from kit.rundir.reader import PathLike, RunFolderError
from kit.rundir.schema import AUDIT_NAME, EVAL_NAME, FUSED, HEAD_KEYS, MANIFEST_NAME, REPORT_NAME, VERSION_KEY

EAGER_PICTURES = 48  # pictures loaded with the page (the first screens); the rest as they near the screen
EVAL_MEASURES = (("pg", "PG"), ("ebpg", "EBPG"), ("deletion_auc", "deletion"), ("insertion_auc", "insertion"))
MAX_CURVES_DRAWN = 40  # per map and mode: thin lines under the mean curve
COMMIT_KEYS = ("upstream_commit", "commit")
SHA256_KEYS = ("weights_sha256", "sha256")
# Keys of the manifest's header shown apart (HEAD_KEYS first, in order), or not at all.
NOT_SETTINGS = {
    *(schema.IMAGES_KEY, schema.INTERRUPTED_KEY, schema.FINISHED_KEY, schema.UNMERGED_KEY, VERSION_KEY),
    *(*HEAD_KEYS, *COMMIT_KEYS, *SHA256_KEYS),
}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


class ReportError(RunFolderError):
    """A folder that is not a finished run, or an ``index.html`` that cannot be written."""


# ---- reading the run folder ------------------------------------------------------------------
@dataclass
class MapView:
    """One map of a detection as the page shows it."""

    layer: str
    href: Optional[str]  # the overlay's URL relative to index.html; None: not drawn
    energy: Optional[float]
    no_gradient: bool
    overlay: Optional[str] = None  # the overlay's path as the manifest names it


@dataclass
class CardView:
    """One detection."""

    image: int
    id: Optional[int]
    class_id: Optional[int]
    class_name: str
    score: Optional[float]
    level: Optional[int]
    box: Optional[list[float]]
    maps: list[MapView]


@dataclass
class ImageView:
    """One image record of the manifest."""

    index: int
    file: str
    stem: Optional[str]  # its name in the run folder (<stem>_summary.jpg); None for a failed image
    width: Optional[int]
    height: Optional[int]
    summary: Optional[str]  # URL of the summary sheet
    error: Optional[str]
    cards: list[CardView] = field(default_factory=list)
    # --explain-missed: (class id, class name, ground-truth box, why, [(layer, overlay URL)]) per object
    missed: list[tuple[Optional[int], str, list[float], str, list[tuple[str, str]]]] = field(
        default_factory=list
    )


@dataclass
class RunView:
    """What the page shows of a run folder: :func:`read_run`."""

    folder: Path
    header: dict[str, Any]
    images: list[ImageView]
    layers: list[str]  # every map name, the run's layers first, fused last
    eval: Optional[dict[str, Any]]
    audit: Optional[dict[str, Any]]
    notes: list[str]
    layer_words: dict[str, str] = field(default_factory=dict)  # kit.report.layers.layer_names
    # per (file, detection id): eval.json's measures of each map
    measures: dict[tuple[str, Optional[int]], dict[str, dict[str, Any]]] = field(default_factory=dict)

    def stride(self, level: int) -> Optional[int]:
        """The stride of head level ``level`` when the manifest records it."""
        strides = self.header.get(STRIDES_KEY)
        if isinstance(strides, list) and 0 <= level < len(strides):
            return schema.as_whole(strides[level])
        return None

    @property
    def cards(self) -> list[CardView]:
        return [c for image in self.images for c in image.cards]

    @property
    def failed(self) -> list[ImageView]:
        return [image for image in self.images if image.error is not None]


def read_run(run_dir: PathLike) -> RunView:
    """Read a run folder (its manifest, and eval.json and audit.json when there): reads only.

    Raises :class:`kit.rundir.reader.RunFolderError` when the folder is not a run or its manifest cannot be
    read; an ``eval.json`` or ``audit.json`` that cannot be used is noted and left out.
    """
    folder = reader.run_folder(run_dir)
    images: list[ImageView] = []
    notes: list[str] = []
    seen: dict[str, None] = {}

    def add(record: Optional[schema.ImageView]) -> None:
        image = _image(folder, len(images), record, notes)
        images.append(image)
        for card in image.cards:
            seen.update((m.layer, None) for m in card.maps)

    header = reader.stream_manifest(folder / MANIFEST_NAME, add)  # with a killed run's part files
    if header.get(schema.UNMERGED_KEY):
        notes.append(
            f"{header[schema.UNMERGED_KEY]} part files in .kit-parts/ hold records that manifest.json does "
            "not index yet: the page shows them merged as the end of the run would merge them"
        )
    run = RunView(
        folder=folder,
        header=header,
        images=images,
        layers=reader.map_names(header, seen),
        eval=reader.read_json(folder / EVAL_NAME, "detections", notes),
        audit=reader.read_json(folder / AUDIT_NAME, "top", notes),
        notes=notes,
    )
    run.layer_words = layer_names(run.layers, header=header, reached=_reached(run))
    run.measures = _measures(run.eval)
    return run


def _reached(run: RunView) -> dict[str, set[int]]:
    """Per layer, the levels of the detections whose map there was drawn."""
    reached: dict[str, set[int]] = {}
    for card in run.cards:
        for m in card.maps:
            if not m.no_gradient and card.level is not None:
                reached.setdefault(m.layer, set()).add(card.level)
    return reached


def _measures(report: Optional[dict[str, Any]]) -> dict[tuple[str, Optional[int]], dict[str, dict[str, Any]]]:
    found: dict[tuple[str, Optional[int]], dict[str, dict[str, Any]]] = {}
    for row in (report or {}).get("detections") or []:
        if isinstance(row, dict):
            entry = schema.EvalEntryView(row)
            found[(entry.file, entry.id)] = {
                layer: {
                    k: v for k, v in values.items() if isinstance(v, bool) or schema.as_number(v) is not None
                }
                for layer, values in entry.measures.items()
            }
    return found


def _image(folder: Path, index: int, entry: Optional[schema.ImageView], notes: list[str]) -> ImageView:
    if entry is None:
        notes.append(f"image record {index + 1} of the manifest is not an object: shown as failed")
        return ImageView(index, "?", None, None, None, None, "not an image record (the manifest is damaged)")
    image = ImageView(
        index=index,
        file=entry.file,
        stem=None,
        width=entry.width,
        height=entry.height,
        summary=_href(folder, entry.summary),
        error=entry.error,
    )
    for det in entry.detections() or []:
        if det is not None:
            image.cards.append(_card(folder, index, det))
    for m in entry.missed():
        links = [(m_.layer, url) for m_ in m.maps if (url := _href(folder, m_.overlay))]
        image.missed.append((m.class_id, m.class_name, m.gt_box, _why(m), links))
    overlays = [m.overlay for c in image.cards for m in c.maps if m.overlay]
    image.stem = entry.stem or _stem_of_overlays(overlays)
    if image.stem is None and image.error is None:
        image.stem = PurePosixPath(image.file).stem  # an old record without files of its own
    return image


def _card(folder: Path, image: int, det: schema.DetectionView) -> CardView:
    maps = []
    for rec in det.maps:
        overlay, energy = rec.overlay, rec.energy_in_box
        no_gradient = rec.no_gradient or (not rec.overlay_given and energy is None)
        href = None if no_gradient else _href(folder, overlay)
        maps.append(MapView(rec.layer, href, energy, no_gradient, overlay))
    box = det.box
    return CardView(
        image=image,
        id=det.id,
        class_id=det.class_id,
        class_name=det.class_name,
        score=det.score,
        level=det.level,
        box=None if box is None else [v for v in box if v is not None],
        maps=maps,
    )


def _why(missed: schema.MissedView) -> str:
    """``--explain-missed``'s reason, in words (kit.evaluation.missed.REASONS)."""
    why = missed.why
    if why == "suppressed":
        by = missed.suppressed_by
        return "suppressed" + ("" if by is None else f" by detection {by}")
    if why == "other_class":
        name = missed.other_class_name
        return f"scored as {'another class' if name is None else name}"
    if why == "mislocalized":
        kept = missed.detection
        return "found, box off" + ("" if kept is None else f" (detection {kept})")
    return {"below_threshold": "below the threshold", "no_candidate": "no candidate there"}.get(why, why)


def _stem_of_overlays(overlays: Sequence[str]) -> Optional[str]:
    """The image's stem read off its overlays' folder (a record without a summary or maps file)."""
    for overlay in overlays:
        if "/" in overlay:
            return overlay.split("/", 1)[0]
    return None


def _href(folder: Path, rel: Any) -> Optional[str]:
    """``rel`` (a path the manifest gives relative to the run folder) as a URL relative to
    index.html, percent-encoded part by part; None unless it names a file inside the folder."""
    if not isinstance(rel, str) or not rel:
        return None
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or "\\" in rel:
        return None
    try:
        url = "/".join(quote(part, safe="") for part in path.parts)
        return url if (folder / path).is_file() else None
    except (UnicodeEncodeError, OSError, ValueError):
        return None


# ---- the page --------------------------------------------------------------------------------
def render_report(run: RunView, *, notes: Sequence[str] = ()) -> str:
    """The page of ``run`` (see :func:`read_run`) as HTML text."""
    head = run.header
    title = f"{run.folder.name or run.folder}: {schema.as_text(_value(head, 'upstream'), default='run')}"
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )
    matches = _matches(run)
    parts = [
        "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n",
        '<meta name=viewport content="width=device-width, initial-scale=1">\n',
        f'<meta http-equiv=Content-Security-Policy content="{csp}">\n',
        '<meta name=referrer content="no-referrer">\n',
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        "<noscript><p class=warn>Filters and sorting need JavaScript; so do the pictures after the first "
        f"{EAGER_PICTURES}: each grey box links to its picture.</p></noscript>\n",
        _header(run, [*run.notes, *notes]),
        '<main id="content">\n',
        _detections(run, matches),
        _eval_section(run) if run.eval is not None else "",
        _audit_section(run) if run.audit is not None else "",
        "</main>\n",
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def _e(value: Any) -> str:
    """Text for the page: control characters shown as escapes, then escaped for HTML."""
    return html.escape(shown(str(value)), quote=True)


def _lines(value: Any) -> str:
    """:func:`_e` line by line: an error message keeps its line breaks (shown with ``pre-wrap``)."""
    return "\n".join(_e(line) for line in str(value).split("\n"))


def _file(path: str) -> str:
    """An image's file name, its whole path as the run was given it in the tooltip (paths repeat a
    folder that crowds the cards; the header and the manifest keep them whole)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1] or path
    return f'<bdi title="{_a(shown(path))}">{_e(name)}</bdi>'


def _a(value: Any) -> str:
    """An attribute's value, as the run folder has it, escaped for a double-quoted attribute."""
    return html.escape(str(value), quote=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _num(value: Any, digits: int = 3) -> str:
    """A number of the run's files to ``digits`` decimals; "–" for none or for no finite number."""
    number = schema.as_number(value)
    return "–" if number is None else f"{number:.{digits}f}"


def _value(head: dict[str, Any], key: str) -> Any:
    """A header value; ``upstream``/``weights`` may be objects in a newer manifest (name or path)."""
    value = head.get(key)
    if isinstance(value, dict):
        return value.get("name", value.get("path"))
    return value


def _first(head: dict[str, Any], keys: Sequence[str], inner: str) -> Any:
    for key in keys:
        if head.get(key) is not None:
            return head[key]
    for outer in ("upstream", "weights"):
        value = head.get(outer)
        if isinstance(value, dict) and value.get(inner) is not None:
            return value[inner]
    return None


def _shown_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as the manifest writes it
    if isinstance(value, list):
        return ", ".join(_e(v) for v in value) or "–"
    if isinstance(value, dict):
        return _e(json.dumps(value, ensure_ascii=False))
    return "–" if value is None else _e(value)


def _header(run: RunView, notes: Sequence[str]) -> str:
    """The run's name, one summary line, warnings and failures; what was run folded (provenance)."""
    head = run.header
    failed = run.failed
    rows = _settings(run)
    out = [
        f"<header class=top>\n<h1>Run <bdi>{_e(run.folder.name or run.folder)}</bdi></h1>\n",
        f"<p class=lead>{_summary_line(run)}</p>\n",
    ]
    if head.get(schema.INTERRUPTED_KEY) is True:
        out.append(
            "<p class=warn>This run was interrupted (Ctrl-C): the page shows the "
            f"{len(run.images)} images it finished; --resume finishes it.</p>\n"
        )
    elif head.get(schema.FINISHED_KEY) is False:
        out.append(
            "<p class=warn>This run did not finish (it was killed, or its last step failed): the page "
            f"shows the {len(run.images)} images it recorded; --resume finishes it.</p>\n"
        )
    if notes:
        out.append("<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>\n")
    if failed:
        out.append(f'<section id="failed"><h2>Failed images ({len(failed)})</h2>\n<ul class=failed>')
        out += [
            f'<li><a href="#i{i.index}"><bdi>{_e(i.file)}</bdi></a>: '
            f"<span class=error>{_lines(i.error)}</span>{' (its detections are kept)' * bool(i.cards)}</li>\n"
            for i in failed
        ]
        out.append("</ul></section>\n")
    out.append(
        f'<details id="provenance"><summary>What was run: upstream, commit, weights and every setting '
        f"({len(rows)} rows)</summary>\n<dl class=settings>\n"
    )
    out += [f"<dt>{k}</dt><dd>{v}</dd>\n" for k, v in rows]
    out.append("</dl>\n</details>\n")
    out.append('<nav class=jump><a href="#detections">Detections</a>')
    out.append(' <a href="#eval">Evaluation</a>' if run.eval is not None else "")
    out.append(' <a href="#audit">Audit</a>' if run.audit is not None else "")
    out.append(' <a href="#failed">Failed images</a>' if failed else "")
    out.append("</nav>\n</header>\n")
    return "".join(out)


def _summary_line(run: RunView) -> str:
    """ "4 images · 10 detections · gradcam on class-logit · yolov7 · 1 failed · recall 0.9"."""
    head, failed = run.header, run.failed
    counts = f"{_count(len(run.images), 'image')}, {_count(len(run.cards), 'detection')}"
    parts = [counts + (f", <strong>{len(failed)} failed</strong>" if failed else "")]
    missed = sum(len(image.missed) for image in run.images)
    parts += [f"{missed} missed explained"] if missed else []
    method, target = _value(head, "method"), _value(head, "target")
    if method:
        parts.append(_e(method) + (f" on {_e(target)}" if target else ""))
    if head.get("target_class") is not None:
        parts.append(f"class asked: <bdi>{_e(head['target_class'])}</bdi>")
    if _value(head, "upstream"):
        parts.append(_e(_value(head, "upstream")))
    summary = schema.as_dict((run.eval or {}).get("summary"))
    if summary.get("recall") is not None:
        parts.append(f"recall {_num(summary.get('recall'))}, precision {_num(summary.get('precision'))}")
    return " · ".join(parts)


def _settings(run: RunView) -> list[tuple[str, str]]:
    """The provenance rows: what was run (the manifest's settings), then the counts."""
    head, cards, failed = run.header, run.cards, run.failed
    commit, sha256 = _first(head, COMMIT_KEYS, "commit"), _first(head, SHA256_KEYS, "sha256")
    missing = "<span class=muted>not recorded in this manifest</span>"
    rows: list[tuple[str, str]] = [
        ("upstream", _shown_value(_value(head, "upstream"))),
        ("commit", missing if commit is None else _shown_value(commit)),
        ("weights", _shown_value(_value(head, "weights"))),
        ("sha256", missing if sha256 is None else _shown_value(sha256)),
        *((k, _shown_value(head.get(k))) for k in ("method", "target")),
        ("layers", _layers_value(run)),
        *((_e(k), _shown_value(v)) for k, v in head.items() if k not in NOT_SETTINGS),
    ]
    counts: dict[tuple[Optional[int], str], int] = {}
    for c in cards:
        counts[(c.class_id, c.class_name)] = counts.get((c.class_id, c.class_name), 0) + 1
    per_class = ", ".join(
        f"<bdi>{_e(name)}</bdi> {n}"
        for (_, name), n in sorted(counts.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1]))
    )
    rows += [
        ("images", f"{len(run.images)} ({len(failed)} failed)" if failed else str(len(run.images))),
        ("detections", f"{len(cards)}{': ' + per_class if per_class else ''}"),
    ]
    return rows


def _layers_value(run: RunView) -> str:
    """The run's layers, each with its words (kit.report.layers) where a rule names it."""
    layers = run.header.get("layers")
    if not isinstance(layers, list):
        return _shown_value(layers)
    words = run.layer_words
    return ", ".join(_e(la) + (f" ({_e(words[la])})" if la in words else "") for la in layers) or "–"


def _layer_label(run: RunView, layer: str) -> str:
    """ "head input, level P3 (stride 8) · layer 74", or "layer 74" where no rule names it."""
    words = run.layer_words.get(layer)
    if layer == FUSED:
        return _e(words or layer)
    named = f"layer <bdi>{_e(layer)}</bdi>"
    return f"{_e(words)} · {named}" if words else named


def _default_map(run: RunView) -> tuple[Optional[str], str]:
    """The map whose energy_in_box a card shows first and sorts by, as the audit chooses it."""
    if FUSED in run.layers:
        return FUSED, "fused map"
    return None, "map at the layer its gradient reached"


class _Pictures:
    """Writes a picture as an ``<img>`` loaded with the page (the first EAGER_PICTURES: the first
    screens, in screenshots and print) or as a link the page's script fills when it nears the
    screen, or before printing (the rest: a run of thousands of images opens at once)."""

    def __init__(self, eager: int = 0) -> None:
        self.left = eager

    def __call__(self, href: str, alt: str, *, style: str = "", cls: str = "pic") -> str:
        styled = f' style="{style}"' if style else ""
        if self.left > 0:
            self.left -= 1
            return f'<a class="{cls} on" href="{href}"{styled}><img src="{href}" alt="{_a(shown(alt))}"></a>'
        return f'<a class="{cls}" href="{href}" data-alt="{_a(shown(alt))}"{styled}></a>'


def _controls(run: RunView) -> str:
    cards = run.cards
    classes: dict[str, tuple[Optional[int], int]] = {}
    for c in cards:
        cid, k = classes.get(c.class_name, (c.class_id, 0))
        classes[c.class_name] = (cid, k + 1)
    options = "".join(
        f'<option value="{_a(name)}">{_e(name)}{f" ({cid})" if cid is not None else ""} · {k}</option>'
        for name, (cid, k) in sorted(classes.items(), key=lambda kv: (kv[1][0] is None, kv[1][0] or 0, kv[0]))
    )
    layer_options = "".join(f'<option value="{_a(la)}">{_e(la)}</option>' for la in run.layers)
    return (
        '<form class=controls id="controls" autocomplete=off>'
        f'<label>class <select id="class-filter"><option value="">all</option>{options}</select></label>'
        '<label>score ≥ <input id="score-filter" type=number min=0 max=1 step=0.05 value=0 '
        "inputmode=decimal></label>"
        '<label>layer <select id="layer-filter"><option value="">all</option>'
        f"{layer_options}</select></label>"
        '<label>sort <select id="sort"><option value="manifest">image, id</option>'
        '<option value="score-desc">score, highest first</option>'
        '<option value="score-asc">score, lowest first</option>'
        '<option value="energy-asc">energy in box, lowest first</option>'
        '<option value="energy-desc">energy in box, highest first</option></select></label>'
        '<span id="image-only" hidden>image <bdi id="image-only-name"></bdi> '
        "<button type=button id=image-all>all images</button></span>"
        f'<output id="shown-count">{len(cards)} of {len(cards)} detections shown</output></form>\n'
    )


def _detections(run: RunView, matches: dict[tuple[str, Optional[int]], str]) -> str:
    """Per image: the image with its numbered boxes, then a card per detection with its maps large."""
    cards = run.cards
    fused, rule = _default_map(run)
    pictures = _Pictures(EAGER_PICTURES)
    out = [
        f'<section id="detections" class=block><h2>Detections ({len(cards)})</h2>\n',
        "<p class=hint>Each image with its boxes, numbered as the cards; each detection's maps (red: "
        f"high). <em>in box</em>: the share of a map's mass inside the box (the card's: the {rule}).</p>\n",
        _controls(run),
        '<div id="cards" class=cards>\n',
    ]
    for image in run.images:
        out.append(_image_head(run, image, pictures=pictures))
        out += [
            _card_html(run, image, c=c, fused=fused, matches=matches, pictures=pictures) for c in image.cards
        ]
    out.append("</div>\n")
    if not cards:
        out.append("<p class=muted>This run has no detections.</p>\n")
    out.append("</section>\n")
    return "".join(out)


def _image_head(run: RunView, image: ImageView, *, pictures: _Pictures) -> str:
    """An image's file name and counts, the image with its boxes (numbered by detection id), its
    missed objects and why, and its error."""
    attrs = f' data-image="{_a(image.stem)}"' if image.stem is not None else ""
    cls = "image-head failed" if image.error is not None else "image-head"
    k = len(image.cards)
    counts = [_count(k, "detection")] + ([f"{len(image.missed)} missed"] if image.missed else [])
    button = f' <button type=button data-only="{image.index}">only this image</button>' if k else ""
    out = [
        f'<section class="{cls}" id="i{image.index}"{attrs}>'
        f"<h3><span class=name>{_file(image.file)}</span> <span class=muted>{' · '.join(counts)}</span>"
        f"{button}</h3>"
    ]
    if image.summary:
        out.append(_boxes(run, image, pictures=pictures))
    elif image.error is None:
        out.append("<p class=muted>no summary sheet in the run folder</p>")
    if image.error is not None:
        out.append(f"<p class=error>failed: {_lines(image.error)}</p>")
    if image.missed:
        out.append("<ul class=missed>")
        for _, name, box, why, maps in image.missed:
            where = ", ".join(_num(v, 0) for v in box)
            links = " ".join(
                pictures(url, f"missed {name} at {layer}", cls="pic small") for layer, url in maps
            )
            out.append(f"<li>missed <bdi>{_e(name)}</bdi> at [{where}]: {_e(why)}{links}</li>")
        out.append("</ul>")
    out.append("</section>\n")
    return "".join(out)


def _boxes(run: RunView, image: ImageView, *, pictures: _Pictures) -> str:
    """The sheet's first tile (the image with every box), cropped out of the summary sheet, with
    each box's detection id at its bottom-right corner; the whole sheet where its grid is not recognized."""
    href = image.summary or ""
    size = jpeg_size(run.folder / unquote(href)) if href else None
    width, height = image.width or 0, image.height or 0
    panel = None
    if size is not None and width > 0 and height > 0:
        panel = first_panel(size, detections=len(image.cards), image=(width, height))
    alt = f"{image.file} with its boxes"
    if panel is None:
        return f"<div class=sheet>{pictures(href, alt)}</div>"
    scale = 100 * panel.sheet_width / panel.width
    badges = []
    for c in image.cards:
        if c.box is not None and len(c.box) == 4 and c.id is not None:
            # at the box's bottom-right corner, inside it: its label (class, score) is at the top left
            left, top = 100 * c.box[2] / width, 100 * c.box[3] / height
            at = f"left:{min(max(left, 6), 100):.2f}%;top:{min(max(top, 8), 100):.2f}%"
            badges.append(f'<span class=badge style="{at}">{c.id}</span>')
    crop = pictures(href, alt, style=f"width:{scale:.4f}%", cls="pic crop")
    return f'<div class=boxes style="aspect-ratio:{panel.width}/{panel.height}">{crop}{"".join(badges)}</div>'


def _card_html(
    run: RunView,
    image: ImageView,
    *,
    c: CardView,
    fused: Optional[str],
    matches: dict[tuple[str, Optional[int]], str],
    pictures: _Pictures,
) -> str:
    drawn = [m for m in c.maps if not m.no_gradient]
    chosen = next((m for m in drawn if m.layer == fused), None) if fused else None
    chosen = chosen or next((m for m in drawn if m.layer != FUSED), None)
    energy = chosen.energy if chosen else None
    score = "" if c.score is None else repr(round(c.score, 6))
    attrs = (
        f'class=detection id="d{image.index}-{c.id}" data-image="{_a(image.stem or "")}" '
        f'data-id="{"" if c.id is None else c.id}" data-class="{_a(c.class_name)}" data-score="{score}" '
        f'data-energy="{"" if energy is None else repr(round(energy, 6))}"'
    )
    meta = [_explains(run, c)]
    if c.level is not None:
        meta.append(f"found at {_e(level_words(c.level, run.stride(c.level)))}")
    if chosen is not None:
        meta.append(f"in box {_num(energy)} ({_e(chosen.layer)})")
    match = matches.get((image.file, c.id))
    if match:
        meta.append(f"<b>{_e(match)}</b>")
    measures = run.measures.get((image.file, c.id), {})
    figures = [_figure(run, image, m=m, measures=measures.get(m.layer, {}), pictures=pictures) for m in drawn]
    nograd = [m.layer for m in c.maps if m.no_gradient]
    said = (
        f"<p class=nograd>no gradient reached {', '.join(_layer_label(run, x) for x in nograd)}</p>"
        if nograd
        else ""
    )
    if not c.maps:
        said = "<p class=nograd>no maps recorded for this detection</p>"
    return (
        f"<article {attrs}><h3><span><span class=num>#{'' if c.id is None else c.id}</span> "
        f"<bdi>{_e(c.class_name)}</bdi></span> <span class=score>{_num(c.score)}</span></h3>"
        f"<p class=meta>{' · '.join(meta)}</p><div class=maps>{''.join(figures)}</div>{said}</article>\n"
    )


def _explains(run: RunView, c: CardView) -> str:
    """What the card's maps explain: "gradcam of class-logit, class square"."""
    head = run.header
    asked = head.get("target_class")
    what = _e(_value(head, "method") or "map") + (
        f" of {_e(_value(head, 'target'))}" if head.get("target") else ""
    )
    cls = (
        f"class asked <bdi>{_e(asked)}</bdi>" if asked is not None else f"class <bdi>{_e(c.class_name)}</bdi>"
    )
    return f"{what}, {cls}"


def _measure(value: Any) -> str:
    """An eval.json measure: the pointing game's hit (true/false, or 1/0 as older runs wrote it) in words."""
    if isinstance(value, bool):
        return "hit" if value else "miss"
    return _num(value)


def _figure(
    run: RunView, image: ImageView, *, m: MapView, measures: dict[str, Any], pictures: _Pictures
) -> str:
    """One map of a card: its overlay, its layer in words and index, its energy in box and eval numbers."""
    numbers = [f"in box {_num(m.energy)}"]
    numbers += [f"{label} {_measure(measures[key])}" for key, label in EVAL_MEASURES if key in measures]
    caption = f"<figcaption>{_layer_label(run, m.layer)} · {' · '.join(numbers)}</figcaption>"
    data = f'data-layer="{_a(m.layer)}" data-energy="{"" if m.energy is None else repr(m.energy)}"'
    if m.href is None:
        where = f": {_e(m.overlay)} is not in the run folder" if m.overlay else ""
        return f"<figure {data} class=gone><p>no picture{where}</p>{caption}</figure>"
    ratio = f"aspect-ratio:{image.width}/{image.height}" if image.width and image.height else ""
    return f"<figure {data}>{pictures(m.href, m.layer, style=ratio)}{caption}</figure>"


# ---- --eval ----------------------------------------------------------------------------------
def _matches(run: RunView) -> dict[tuple[str, Optional[int]], str]:
    """Per (file, id): "matched, IoU 0.83" or "unmatched", from eval.json."""
    if run.eval is None:
        return {}
    found: dict[tuple[str, Optional[int]], str] = {}
    for row in run.eval.get("unmatched") or []:
        if isinstance(row, dict):
            entry = schema.EvalEntryView(row)
            found[(entry.file, entry.id)] = "unmatched"
    for row in run.eval.get("detections") or []:
        if isinstance(row, dict):
            entry = schema.EvalEntryView(row)
            iou = entry.iou
            found[(entry.file, entry.id)] = f"matched, IoU {_num(iou, 2)}" if iou is not None else "matched"
    return found


def _eval_section(run: RunView) -> str:
    report = run.eval or {}
    s, images, labels = (
        schema.as_dict(report.get("summary")),
        schema.as_dict(report.get("images")),
        schema.as_dict(report.get("labels")),
    )
    gt, matched = schema.as_whole(s.get("ground_truth")), schema.as_whole(s.get("matched"))
    out = [
        '<section id="eval" class=block><h2>Evaluation (--eval)</h2>\n<p>',
        f"{_e(images.get('evaluated', '?'))} images, {_e(gt if gt is not None else '?')} ground-truth boxes, "
        f"{_e(s.get('detections', '?'))} detections, {_e(matched if matched is not None else '?')} matched: "
        f"recall {_num(s.get('recall'))}, precision {_num(s.get('precision'))}.",
        f" Labels: <bdi>{_e(labels.get('path'))}</bdi> ({_e(labels.get('format'))}; "
        f"{_e(labels.get('class_rule'))})."
        if labels
        else "",
        "</p>\n<div class=scroll><table><thead><tr><th>map</th><th>n</th><th>PG</th><th>EBPG</th>"
        "<th>curves</th><th>deletion AUC</th><th>insertion AUC</th></tr></thead><tbody>\n",
    ]
    for row in s.get("layers") or []:
        row = schema.as_dict(row)
        cells = [_e(row.get("layer")), _e(row.get("n", "–")), _num(row.get("pg"))]
        cells += [_num(row.get("ebpg")), _e(row.get("n_curves", "–"))]
        cells += [
            _num(row.get("deletion_auc")),
            _num(row.get("insertion_auc")),
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n")
    out.append(
        "</tbody></table></div>\n<p class=hint>PG: the map's peak in the ground-truth box; EBPG: the "
        "share of its mass there; deletion (lower is better) and insertion (higher is better) AUC of "
        "the detector's score as the most salient pixels are removed or inserted first.</p>\n"
    )
    out.append(_curve_plots(report))
    if report.get("curve_error"):
        out.append(f"<p class=warn>deletion/insertion stopped: {_e(report['curve_error'])}</p>\n")
    out.append(_missed(run, gt, matched))
    out.append("</section>\n")
    return "".join(out)


def _curve_plots(report: dict[str, Any]) -> str:
    curves: dict[str, dict[str, list[list[float]]]] = {"deletion": {}, "insertion": {}}
    for row in report.get("detections") or []:
        for layer, measures in schema.EvalEntryView(row).measures.items():
            for mode, by_map in curves.items():
                ys = measures.get(f"{mode}_curve")
                if isinstance(ys, list) and len(ys) > 1 and all(schema.as_number(y) is not None for y in ys):
                    by_map.setdefault(str(layer), []).append([float(y) for y in ys])
    if not any(curves.values()):
        n = sum(
            schema.as_whole(schema.as_dict(r).get("n_curves")) or 0
            for r in schema.as_dict(report.get("summary")).get("layers") or []
        )
        if n:
            return (
                "<p class=muted>This eval.json holds the curves' areas only (written by an earlier "
                "version): run --eval again to see the curves.</p>\n"
            )
        return "<p class=muted>No deletion/insertion curves in this run (--eval-curves 0).</p>\n"
    return (
        "<div class=plots>"
        + "".join(_curve_svg(mode, by_map) for mode, by_map in curves.items() if by_map)
        + "</div>\n"
    )


def _curve_svg(mode: str, by_map: dict[str, list[list[float]]]) -> str:
    """Mean curve per map (thick) over up to MAX_CURVES_DRAWN single curves (thin), x from 0 to 1."""
    w, h, left, bottom, top, right = 360, 220, 38, 30, 12, 10
    top_y = max(1.0, max(max(ys) for curves in by_map.values() for ys in curves))

    def path(ys: Sequence[float]) -> str:
        n = len(ys) - 1
        return " ".join(
            f"{'M' if i == 0 else 'L'}{left + (w - left - right) * i / n:.1f},"
            f"{h - bottom - (h - bottom - top) * min(y, top_y) / top_y:.1f}"
            for i, y in enumerate(ys)
        )

    lines, legend = [], []
    for k, (layer, curves) in enumerate(by_map.items()):
        colour = PALETTE[k % len(PALETTE)]
        lines += [
            f'<path d="{path(ys)}" stroke="{colour}" stroke-opacity=".18" fill="none"/>'
            for ys in curves[:MAX_CURVES_DRAWN]
        ]
        length = min(len(ys) for ys in curves)
        mean = [sum(ys[i] for ys in curves) / len(curves) for i in range(length)]
        lines.append(f'<path d="{path(mean)}" stroke="{colour}" stroke-width="2.5" fill="none"/>')
        legend.append(f'<span><i style="background:{colour}"></i>{_e(layer)} ({len(curves)})</span>')
    y0, y1 = h - bottom, top
    axes = (
        f'<path d="M{left},{y1}V{y0}H{w - right}" stroke="#888" fill="none"/>'
        f'<text x="{left - 4}" y="{y0}" text-anchor=end>0</text>'
        f'<text x="{left - 4}" y="{y1 + 8}" text-anchor=end>{top_y:.2g}</text>'
        f'<text x="{left}" y="{h - 12}">0</text><text x="{w - right}" y="{h - 12}" text-anchor=end>1</text>'
        f'<text x="{(w + left) / 2}" y="{h - 4}" text-anchor=middle>share of pixels {mode[:-3]}ed</text>'
    )
    return (
        f'<figure class=plot><svg viewBox="0 0 {w} {h}" role=img aria-label="{mode} curves">'
        f"<title>{mode} curves: score relative to the intact image</title>{axes}{''.join(lines)}</svg>"
        f"<figcaption><b>{mode}</b> (mean: thick line) {' '.join(legend)}</figcaption></figure>"
    )


def _missed(run: RunView, gt: Optional[int], matched: Optional[int]) -> str:
    missed = (run.eval or {}).get("missed")
    names: dict[Optional[int], str] = {c.class_id: c.class_name for c in run.cards}
    names.update({m[0]: m[1] for image in run.images for m in image.missed if m[0] not in names})
    if isinstance(missed, list):
        index = {image.file: image.index for image in run.images}
        explained = {image.file: image.missed for image in run.images}
        rows = []
        for m in missed:
            entry = schema.EvalEntryView(m)
            file, cid, box = entry.file, entry.class_id, entry.box
            where = "?" if box is None else ", ".join(_num(v, 0) for v in box)
            name = _e(names.get(cid, "?" if cid is None else str(cid)))
            link = f'<a href="#i{index[file]}"><bdi>{_e(file)}</bdi></a>' if file in index else _e(file)
            why = ""
            numbers = [] if box is None else [schema.as_number(v) for v in box]
            for class_id, _, gt_box, reason, maps in explained.get(file, []):  # --explain-missed
                same = len(gt_box) == len(numbers) == 4 and all(
                    v is not None and abs(v - g) < 0.01 for v, g in zip(numbers, gt_box)
                )
                if class_id == cid and same:
                    pictures = " ".join(f'<a href="{_a(url)}">map {_e(layer)}</a>' for layer, url in maps)
                    why = f": {_e(reason)}" + (f" ({pictures})" if pictures else "")
                    break
            rows.append(f"<li>{link}: <bdi>{name}</bdi> at [{where}]{why}</li>")
        body = (
            "<ul class=missed>" + "".join(rows) + "</ul>" if rows else "<p>None: every object was found.</p>"
        )
        return f"<h3>Missed objects ({len(rows)})</h3>\n{body}\n"
    if gt is not None and matched is not None:
        return (
            f"<h3>Missed objects ({gt - matched})</h3>\n<p class=muted>{gt - matched} ground-truth boxes "
            "were matched by no detection; this eval.json does not list them (written by an earlier "
            "version): run --eval again to see which.</p>\n"
        )
    return ""


# ---- --audit ---------------------------------------------------------------------------------
def _audit_section(run: RunView) -> str:
    audit = run.audit or {}
    chosen = schema.as_dict(audit.get("map"))
    total = schema.as_dict(audit.get("all"))
    classes = [schema.as_dict(c) for c in audit.get("classes") or []]
    out = [
        '<section id="audit" class=block><h2>Audit: where the maps lie against their boxes</h2>\n',
        f"<p>map: {_e(chosen.get('rule', chosen.get('layer', '?')))}. A map with energy in box below "
        f"{_e(audit.get('outside_below', 0.5))} puts more than half its mass outside the box "
        "(docs/audit.md says how to read it).</p>\n",
        # the columns a reader needs first come first: a phone shows them, and scrolls to the rest
        "<div class=scroll><table><thead><tr><th>class</th><th>outside</th><th>median</th><th>p10</th>"
        "<th>n</th><th>measured</th><th>no gradient</th></tr></thead><tbody>\n",
    ]
    for c in [*classes, total]:
        share = schema.as_number(c.get("share_outside"))
        outside = f"{_e(c.get('outside', '–'))}" + (f" ({100 * share:.1f}%)" if share is not None else "")
        cells = [f"<bdi>{_e(c.get('class_name', '?'))}</bdi>", outside]
        cells += [
            _num(c.get("median")),
            _num(c.get("p10")),
            _e(c.get("n", "–")),
        ]
        cells += [_e(c.get("measured", "–")), _e(c.get("no_gradient", 0))]
        out.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>\n")
    out.append("</tbody></table></div>\n")
    out.append(_class_bars([*classes, total]))
    out.append(_top_list(run, audit))
    notes = [n for n in audit.get("notes") or [] if isinstance(n, str)]
    if notes:
        out.append("<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>\n")
    out.append("</section>\n")
    return "".join(out)


def _class_bars(classes: Sequence[dict[str, Any]]) -> str:
    """Per class: a bar of the share of maps mostly outside the box, a tick at the median energy."""
    rows = [c for c in classes if schema.as_number(c.get("share_outside")) is not None]
    if not rows:
        return ""
    row_h, label_w, w = 24, 120, 420
    h = row_h * len(rows) + 28
    bar_w = w - label_w - 50
    parts = []
    for k, c in enumerate(rows):
        y = 6 + k * row_h
        share = schema.as_number(c.get("share_outside")) or 0.0
        median = schema.as_number(c.get("median"))
        name = shown(str(c.get("class_name", "?")))
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor=end>{_e(name[:18])}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="14" fill="#eee"/>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * share:.1f}" height="14" fill="#d62728"/>'
            f'<text x="{label_w + bar_w + 6}" y="{y + 14}">{100 * share:.0f}%</text>'
        )
        if median is not None:
            x = label_w + bar_w * median
            parts.append(f'<path d="M{x:.1f},{y}v20" stroke="#111" stroke-width="2"/>')
    axis = (
        f'<text x="{label_w}" y="{h - 6}">0</text>'
        f'<text x="{label_w + bar_w}" y="{h - 6}" text-anchor=end>1</text>'
    )
    return (
        f'<figure class=plot><svg viewBox="0 0 {w} {h}" role=img aria-label="share outside per class">'
        f"<title>per class: share of maps mostly outside their boxes</title>{''.join(parts)}{axis}</svg>"
        "<figcaption>red: the share of maps with more than half their mass outside the box; black tick: "
        "the median energy in box (0 to 1)</figcaption></figure>\n"
    )


def _top_list(run: RunView, audit: dict[str, Any]) -> str:
    top = [schema.as_dict(t) for t in audit.get("top") or []]
    if not top:
        return "<p class=muted>No measured detections to list.</p>\n"
    by_file = {image.file: image for image in run.images}
    pictures = _Pictures()  # far below the first screen: filled as they near it
    out = [
        f"<h3>The {len(top)} detections whose maps lie most outside their boxes</h3>\n"
        f"<p class=hint>{_e(audit.get('top_by', ''))}: open these first when looking for shortcut "
        "cues (context, background, borders).</p>\n<ol class=top>\n"
    ]
    for t in top:
        file, det_id = schema.as_text(t.get("file"), default="?"), schema.as_whole(t.get("id"))
        image = by_file.get(file)
        match = f" · {_e(t['match'])}" if t.get("match") else ""
        href = _href(run.folder, t.get("overlay"))
        picture = pictures(href, "overlay") if href else ""
        name = _file(file)
        link = f'<a href="#d{image.index}-{det_id}">{name} #{det_id}</a>' if image else f"{name} #{det_id}"
        out.append(
            f"<li>{picture}<p>{link}<br><bdi>{_e(t.get('class_name', '?'))}</bdi> "
            f"{_num(t.get('score'))} · in box <b>{_num(t.get('energy_in_box'))}</b> · "
            f"box {_num(t.get('box_share'))} of the image · density "
            f"{_num(t.get('density'), 2)}{match}</p></li>\n"
        )
    out.append("</ol>\n")
    return "".join(out)


# ---- writing ---------------------------------------------------------------------------------
def write_report(run_dir: PathLike) -> Path:
    """Write ``index.html`` into the run folder ``run_dir`` from its files; return its path.

    Call it when the run is final: after the manifest is complete and ``eval.json``/``audit.json``
    are written. Refused (:class:`kit.rundir.reader.RunFolderError`, a
    :class:`kit.core.errors.KitError`) for a folder that is not a run, a manifest that cannot be read,
    a folder a live run holds, or a page that cannot be written; the page is written through a
    temporary file and a rename.
    """
    folder = reader.run_folder(run_dir)
    later = "Write the report when that run has finished"
    note = reader.check_final(folder, output=REPORT_NAME, reader="the page", later=later)
    page = render_report(read_run(folder), notes=[note] if note else [])
    path = folder / REPORT_NAME
    if path.is_dir():
        raise ReportError(
            f"{path} is a folder (the pictures of an image named {REPORT_NAME}.*), so the report cannot "
            "be written there; rename that image and run again"
        )
    try:
        replace_file(path, page.encode("utf-8", "backslashreplace"))
    except OSError as e:
        raise ReportError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def parser() -> argparse.ArgumentParser:
    return run_parser(
        "kit.report.page",
        "Write index.html into a run folder: its images, detections and maps, with filters and sorting, "
        "and the --eval and --audit results when the run has them. Open it in a browser (file://, no "
        "server, no network).",
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m kit.report.page RUN``: 0 when written, 2 for a folder that is not a finished run or
    a manifest that cannot be read, 3 for a bug (as the entry points' exit codes)."""
    try:
        path = write_report(parser().parse_args(argv).run)
    except SystemExit as e:  # --help, or argparse has printed why it refused the arguments
        return e.code if isinstance(e.code, int) else EXIT_REFUSED
    except (Exception, KeyboardInterrupt) as error:
        return command_failed(error, output=REPORT_NAME)
    print(f"report written to {shown(str(path))} (open it in a browser)")
    return EXIT_OK


# ---- what the page carries ------------------------------------------------------------------
STYLE = """
:root{color-scheme:light;--fg:#1b1b1f;--muted:#666;--line:#ddd;--bg:#fafafa;--accent:#0b62c4}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header.top,main{max-width:1600px;margin:0 auto;padding:0 16px}
h1{font-size:1.5rem;margin:16px 0 4px;overflow-wrap:anywhere}
h2{font-size:1.2rem;margin:0}
h3{font-size:1rem;margin:12px 0 4px}
a{color:var(--accent)}
.lead{margin:0 0 8px;color:var(--muted)}
.warn{background:#fff4d6;border:1px solid #e7c55a;padding:6px 10px;border-radius:6px}
.muted,.hint{color:var(--muted)}
.hint{font-size:.9rem;margin:4px 0 8px}
.jump{display:flex;gap:14px;flex-wrap:wrap;margin:4px 0 10px}
#provenance{margin:4px 0 8px;font-size:.92rem}
#provenance>summary{cursor:pointer;color:var(--muted)}
dl.settings{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0 10px}
dl.settings dt{color:var(--muted)}
dl.settings dd{margin:0;overflow-wrap:anywhere}
.notes{font-size:.9rem;color:#7a4b00}
.error{color:#a01010;overflow-wrap:anywhere;white-space:pre-wrap}
.block{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:12px 0}
a.pic{display:block;background:#eceef1;min-height:40px}
a.pic img{display:block;width:100%;height:100%;object-fit:contain}
.controls{position:sticky;top:0;z-index:2;display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;
background:#fff;padding:8px 0;border-bottom:1px solid var(--line);margin-bottom:10px}
.controls label{display:flex;gap:6px;align-items:center;font-size:.92rem}
.controls select,.controls input{font:inherit;padding:3px 4px;max-width:14rem}
.controls input{width:5.5rem}
#shown-count{margin-left:auto;color:var(--muted);font-size:.9rem}
.cards{display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(min(100%,430px),1fr))}
.cards.sorted .image-head{display:none}
.image-head{grid-column-start:1;min-width:0;content-visibility:auto;contain-intrinsic-size:auto 360px}
.image-head[hidden]{display:none}
.image-head h3{margin:0 0 6px;font-size:1rem;overflow-wrap:anywhere}
.image-head h3 button{margin-left:6px;font-size:.8rem}
.image-head.failed{border:1px solid #e3a0a0;background:#fff6f6;border-radius:6px;padding:6px}
.boxes{position:relative;overflow:hidden;background:#eceef1;width:100%}
.boxes a.crop{position:absolute;left:0;top:0;min-height:0;background:none}
.boxes a.crop img{height:auto}
.sheet a.pic img{height:auto}
.badge{position:absolute;transform:translate(calc(-100% - 2px),calc(-100% - 2px));background:#111;
color:#fff;border:2px solid #fff;border-radius:999px;font:700 11px/1 system-ui,sans-serif;padding:2px 5px;
pointer-events:none}
.detection{border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff;
content-visibility:auto;contain-intrinsic-size:auto 320px;min-width:0}
.detection[hidden]{display:none}
.detection h3{margin:0;font-size:1.05rem;display:flex;justify-content:space-between;gap:8px}
.detection .num{display:inline-block;min-width:1.6em;text-align:center;background:#111;color:#fff;
border-radius:999px;font-size:.85rem;padding:1px 5px;margin-right:4px}
.detection .meta{margin:2px 0 6px;font-size:.85rem;color:var(--muted);overflow-wrap:anywhere}
.detection .meta b{color:var(--fg);font-weight:600}
.maps{display:grid;gap:6px;grid-template-columns:repeat(auto-fit,minmax(200px,1fr))}
.detection figure{margin:0}
.detection figure[hidden]{display:none}
.detection figcaption{font-size:.82rem;color:var(--muted)}
.nograd{font-size:.82rem;color:var(--muted);margin:4px 0 0;font-style:italic}
.gone p{font-size:.85rem;color:#a01010;margin:0}
ul.missed li{margin:4px 0}
a.pic.small{display:inline-block;width:120px;height:90px;vertical-align:top;margin:2px 0 0 8px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:16px}
.plot{margin:8px 0;max-width:440px;width:100%}
.plot svg{width:100%;height:auto;font-size:11px;background:#fff}
.plot figcaption{font-size:.85rem}
.plot figcaption i{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px}
ol.top{padding-left:1.4rem}
ol.top li{margin:6px 0;overflow-wrap:anywhere}
ol.top li a.pic{float:left;width:96px;height:72px;margin:0 10px 4px 0;min-height:0}
ol.top li p{margin:0;min-height:72px}
ol.top li::after{content:"";display:block;clear:both}
ul.missed,ul.failed{padding-left:1.2rem;overflow-wrap:anywhere}
@media print{.controls{position:static}.detection,.image-head{content-visibility:visible;break-inside:avoid}}
@media (max-width:600px){
body{font-size:14px}
header.top,main{padding:0 8px}
.cards{grid-template-columns:1fr}
.controls{gap:6px 10px}
#shown-count{margin-left:0;width:100%}
th,td{padding:3px 5px}
th{white-space:normal}
.block{padding:10px 8px}
.controls{position:static;font-size:.85rem}
.controls select,.controls input{max-width:9rem}
#detections>.hint{display:none}
h1{font-size:1.25rem;margin-top:10px}
}
"""

# The page's only script: filters and sorting over the cards already in the page (nothing
# fetched). The Content-Security-Policy allows this script by its hash and no other.
SCRIPT = """
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var fill = function (el) {
    var links = el.querySelectorAll("a.pic:not(.on)");
    for (var i = 0; i < links.length; i++) {
      var img = document.createElement("img");
      img.alt = links[i].dataset.alt || "";
      img.src = links[i].getAttribute("href");
      links[i].classList.add("on");
      links[i].appendChild(img);
    }
  };
  var boxes = document.querySelectorAll(".detection, .image-head, ol.top li");
  if ("IntersectionObserver" in window) {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { fill(e.target); seen.unobserve(e.target); }
      });
    }, { rootMargin: "800px 0px" });
    for (var b = 0; b < boxes.length; b++) { seen.observe(boxes[b]); }
  } else {
    fill(document);
  }
  window.addEventListener("beforeprint", function () { fill(document); });
  var list = $("cards");
  if (!list) { return; }
  var cards = Array.prototype.slice.call(list.querySelectorAll(".detection"));
  var heads = Array.prototype.slice.call(list.querySelectorAll(".image-head"));
  var order = Array.prototype.slice.call(list.children);
  var byClass = $("class-filter"), byScore = $("score-filter"), byLayer = $("layer-filter");
  var sort = $("sort"), count = $("shown-count"), only = $("image-only"), onlyName = $("image-only-name");
  var image = null, layered = false;
  var num = function (text) { var v = parseFloat(text); return isFinite(v) ? v : NaN; };
  var figures = function (card) {
    if (!card.kitFigures) { card.kitFigures = card.querySelectorAll("figure[data-layer]"); }
    return card.kitFigures;
  };
  var energyAt = function (card, layer) {
    if (!layer) { return num(card.dataset.energy); }
    var f = figures(card);
    for (var i = 0; i < f.length; i++) {
      if (f[i].dataset.layer === layer) { return num(f[i].dataset.energy); }
    }
    return NaN;
  };
  function apply() {
    var cls = byClass.value, layer = byLayer.value, min = num(byScore.value), shown = 0, per = {};
    for (var i = 0; i < cards.length; i++) {
      var card = cards[i], d = card.dataset;
      var show = (!cls || d.class === cls) && !(min > 0 && !(num(d.score) >= min)) &&
        (image === null || d.image === image);
      if (layer || layered) {
        var f = figures(card), has = !layer;
        for (var j = 0; j < f.length; j++) {
          var mine = !layer || f[j].dataset.layer === layer;
          f[j].hidden = !mine;
          has = has || mine;
        }
        show = show && has;
      }
      if (card.hidden === show) { card.hidden = !show; }
      if (show) { shown++; per[d.image] = true; }
    }
    var filtered = !!(cls || layer || min > 0 || image !== null);
    for (var h = 0; h < heads.length; h++) {
      var hide = filtered && !per[heads[h].dataset.image];
      if (heads[h].hidden !== hide) { heads[h].hidden = hide; }
    }
    layered = !!layer;
    count.textContent = shown + " of " + cards.length + " detections shown";
  }
  function resort() {
    var how = sort.value, layer = byLayer.value, sorted = order.slice();
    if (how !== "manifest") {
      var dir = /-desc$/.test(how) ? -1 : 1, keys = new Map();
      sorted = cards.slice();
      sorted.forEach(function (c) {
        keys.set(c, how.indexOf("score") === 0 ? num(c.dataset.score) : energyAt(c, layer));
      });
      sorted.sort(function (a, b) {
        var x = keys.get(a), y = keys.get(b);
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
        return (x - y) * dir;
      });
    }
    list.classList.toggle("sorted", how !== "manifest");
    var frag = document.createDocumentFragment();
    sorted.forEach(function (c) { frag.appendChild(c); });
    list.appendChild(frag);
  }
  byClass.addEventListener("change", apply);
  byScore.addEventListener("input", apply);
  byLayer.addEventListener("change", function () {
    apply();
    if (sort.value.indexOf("energy") === 0) { resort(); }
  });
  sort.addEventListener("change", resort);
  $("controls").addEventListener("submit", function (ev) { ev.preventDefault(); });
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest("button[data-only]");
    if (!button) { return; }
    var head = $("i" + button.dataset.only);
    image = head.dataset.image;
    onlyName.textContent = head.querySelector(".name").textContent;
    only.hidden = false;
    apply();
    $("detections").scrollIntoView();
  });
  $("image-all").addEventListener("click", function () {
    image = null;
    only.hidden = true;
    apply();
  });
})();
"""


if __name__ == "__main__":
    sys.exit(main())
