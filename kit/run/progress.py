"""One progress display for a run split over processes: rank 0 counts every rank's finished images.

Each process appends a line to its part file per finished image (:mod:`kit.rundir.journal`); rank 0
reads how far each part of this launch has grown, in a thread, and shows the total: a bar on a
terminal, else a log line when the count changed (at most every ``interval`` seconds) and one
at the end. N processes' interleaved bars would say nothing readable. A plain process shows the
bar on a terminal and nothing otherwise (its summary line follows the run).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kit.run.distributed import Group
from kit.rundir import journal

LOG = logging.getLogger("kit")


class Progress:
    """``with Progress(...):`` around a rank's run; shows something on rank 0 of a torchrun group only."""

    def __init__(
        self, out_dir: Path, *, attempt: str, total: int, group: Group, interval: float = 10.0
    ) -> None:
        self.folder = journal.parts_dir(out_dir)
        self.prefix = f"{attempt}-r"
        self.total = total
        self.world = group.world
        self.interval = interval
        self.bar_only = not group.active  # a plain process: a bar on a terminal, never log lines
        self.enabled = group.main and total > 0 and (group.active or sys.stderr.isatty())
        self.done = 0
        self._sizes: dict[Path, tuple[int, int]] = {}  # part -> (bytes read, newlines seen)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._shown = (-1, 0.0)

    def __enter__(self) -> Progress:
        if self.enabled:
            if sys.stderr.isatty():
                processes = "" if self.bar_only else f" ({self.world} processes)"
                self._bar = _Line(f"explained{processes}", total=self.total)
                self._bar.show(0)
            self._thread = threading.Thread(target=self._watch, name="kit-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.count()
        self._show(final=error is None)
        if self._bar is not None:
            self._bar.clear()

    def count(self) -> int:
        """Images finished so far by every rank of this launch (lines after each part's header)."""
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                if not path.name.startswith(self.prefix):
                    continue
                read, lines = self._sizes.get(path, (0, 0))
                try:
                    with path.open("rb") as f:
                        f.seek(read)
                        data = f.read()
                except OSError:
                    continue
                self._sizes[path] = (read + len(data), lines + data.count(b"\n"))
        self.done = sum(max(0, lines - 1) for _, lines in self._sizes.values())
        return self.done

    def _watch(self) -> None:
        while not self._stop.wait(1.0 if self._bar is not None else min(self.interval, 2.0)):
            self.count()
            self._show(final=False)

    def _show(self, *, final: bool) -> None:
        if self._bar is not None:
            self._bar.show(self.done)
            return
        last, when = self._shown
        now = time.monotonic()
        if final or (self.done != last and now - when >= self.interval):
            ended = " (all ranks done)" if final and self.done >= self.total else ""
            LOG.info("explained %d of %d images (%d processes)%s", self.done, self.total, self.world, ended)
            self._shown = (self.done, now)


class _Line:
    """A progress line on a terminal, rewritten in place (``\\r``): ``explained 3/8 images [###-----]``."""

    WIDTH = 24

    def __init__(self, label: str, *, total: int) -> None:
        self.label = label
        self.total = total
        self._last = ""

    def text(self, done: int) -> str:
        filled = self.WIDTH * min(done, self.total) // max(self.total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"{self.label} {done}/{self.total} images [{bar}]"

    def show(self, done: int) -> None:
        text = self.text(done)
        if text != self._last:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
            self._last = text

    def clear(self) -> None:
        """Remove the line, so that the summary line that follows starts clean."""
        sys.stderr.write("\r" + " " * len(self._last) + "\r")
        sys.stderr.flush()
