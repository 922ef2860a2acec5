"""Names shown escaped (kit.core.display): control, bidi and zero-width characters never reach a
terminal line, a log line or the run report raw; the manifest keeps the real name."""

from __future__ import annotations

import json
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np

from kit.core.display import shown
from tests.children import run_child
from tests.unit.kit.core.test_display import HIDDEN, HOSTILE

REPO_ROOT = Path(__file__).resolve().parents[4]


TOY = str(REPO_ROOT / "tests" / "toy_main.py")


class _Visible(HTMLParser):
    """The text a browser shows: text nodes, and the title and data-alt attributes (tooltips, alt)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style")
        self.parts += [v or "" for k, v in attrs if k in ("title", "data-alt", "alt")]

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def test_a_run_over_hostile_names_shows_them_escaped_and_keeps_them(tmp_path: Path) -> None:
    """A file named with U+202E, a zero-width joiner and a newline is explained; stderr and
    index.html show the escapes, the manifest has the real name; a non-image named with an escape
    sequence fails with its name escaped on its one line."""
    src = tmp_path / "src"
    src.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    (src / HOSTILE).write_bytes(cv2.imencode(".png", image)[1].tobytes())
    command = [sys.executable, TOY, "--source", str(src), "--project", str(tmp_path), "--name", "run"]
    ok = run_child([*command, "--verbose"])  # the line per image
    assert ok.exit == 0, ok.stderr
    escaped = shown(str(src / HOSTILE))
    assert f"{escaped}: 1 detection" in ok.stderr.splitlines()
    assert not any(c in ok.stderr + ok.stdout for c in HIDDEN)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert [i["file"] for i in manifest["images"]] == [str(src / HOSTILE)]  # the real name
    page = _Visible()
    page.feed((tmp_path / "run" / "index.html").read_text(encoding="utf-8"))
    visible = "".join(page.parts)
    assert "ev\\u202elig\\u200dn\\nx.png" in visible and escaped in visible
    assert not any(c in visible for c in [*HIDDEN, "\x1b"]) and HOSTILE not in visible

    bad = src / "bad\u202e\x1b[31m\nx.txt"
    bad.write_text("not an image")
    shutil.rmtree(tmp_path / "run")
    failed = run_child(
        [sys.executable, TOY, "--source", str(src), "--project", str(tmp_path), "--name", "run"]
    )
    assert failed.exit == 1, failed.stderr
    line = next(x for x in failed.stderr.splitlines() if x.startswith("cannot read image"))
    assert "bad\\u202e\\x1b[31m" in line  # (the message's whitespace, the name's newline too, is one space)
    assert not any(c in failed.stderr for c in [*HIDDEN, "\x1b"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert str(bad) in [i["file"] for i in manifest["images"]]
    page = _Visible()
    page.feed((tmp_path / "run" / "index.html").read_text(encoding="utf-8"))
    visible = "".join(page.parts)
    assert visible.count(shown(str(bad))) >= 1 and visible.count("cannot read image") == 2
    assert not any(c in visible for c in [*HIDDEN, "\x1b"])
