"""What an entry point prints: quiet by default, everything under ``--verbose``.

By default the upstream's own output while the model loads (its banner, its ~80-line model table,
"Fusing layers...") is held back, and shown only if loading fails; a run shows a progress bar on a
terminal (:mod:`kit.run.progress`) and ends with one summary line (:func:`summary_line`), plus the
missed objects counted by reason under ``--explain-missed``. Errors and warnings always show.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kit.run.runner import IMAGE_LOG

KEPT_CHARS = 1 << 16  # the tail of the upstream's output kept while loading, shown if loading fails


def setup_logging(*, verbose: bool = False) -> None:
    """The kit's log lines on stderr: its INFO lines (the per-image ones under ``verbose`` only),
    every library's warnings and errors, and with ``verbose`` every library's INFO lines too."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    IMAGE_LOG.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("kit").setLevel(logging.DEBUG if verbose else logging.INFO)


class _Tail(io.StringIO):
    """A text stream that keeps the last :data:`KEPT_CHARS` characters written to it."""

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.tell() > 2 * KEPT_CHARS:
            tail = self.getvalue()[-KEPT_CHARS:]
            self.seek(0)
            self.truncate()
            super().write(tail)
        return written


@contextlib.contextmanager
def quiet_loading(*, verbose: bool) -> Iterator[None]:
    """Around :func:`kit.load`: without ``verbose``, the upstream's INFO log lines are dropped and
    what it prints on stdout is held; if loading fails, the held output goes to stderr before the error."""
    if verbose:
        yield
        return
    held = _Tail()
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        logging.disable(before)


def counted(n: int, word: str, plural: str | None = None) -> str:
    """'1 detection', '3 detections', '0 maps'."""
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def summary_line(manifest: Mapping[str, Any], *, failed: int, out_dir: str, seconds: float) -> str:
    """The run in one line: images, detections, maps written, failures, the run folder, seconds."""
    images = manifest.get("images") or []
    detections = [d for image in images for d in image.get("detections") or []]
    objects = [m for image in images for m in image.get("missed") or []]
    maps = sum(_maps_written(d.get("maps")) for d in detections)
    maps += sum(_maps_written((m.get("candidate") or {}).get("maps")) for m in objects)
    return (
        f"explained {counted(len(images), 'image')}: {counted(len(detections), 'detection')}, "
        f"{counted(maps, 'map')}, {failed} failed; run folder {out_dir} (open index.html), {seconds:.1f} s"
    )


def missed_line(manifest: Mapping[str, Any], *, reasons: Sequence[str]) -> str:
    """--explain-missed: how many ground-truth objects no detection matched, by reason (in the
    order of ``reasons``)."""
    whys = [
        str((m.get("candidate") or {}).get("why"))
        for image in manifest.get("images") or []
        for m in image.get("missed") or []
    ]
    if not whys:
        return "missed 0 objects: every labelled object has a detection"
    counts = [f"{whys.count(r)} {r.replace('_', ' ')}" for r in [*reasons, *sorted(set(whys) - set(reasons))]]
    shown = ", ".join(c for c in counts if not c.startswith("0 "))
    return f"missed {counted(len(whys), 'object')} ({shown}); why, per object: the manifest's 'missed'"


def _maps_written(maps: object) -> int:
    if not isinstance(maps, Mapping):
        return 0
    return sum(1 for m in maps.values() if isinstance(m, Mapping) and m.get("overlay"))
