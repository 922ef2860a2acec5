"""Names shown escaped (kit.core.display): control, bidi and zero-width characters never reach a
terminal line, a log line or the run report raw; the manifest keeps the real name."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from kit.core.display import ShownFilter, install, shown
from tests.children import run_child

REPO_ROOT = Path(__file__).resolve().parents[4]
TOY = str(REPO_ROOT / "tests" / "toy_main.py")
# Right-to-left override, zero-width joiner, newline: "ev<RLO>lig<ZWJ>n<LF>x.png" reads "evx.png.gilne".
HOSTILE = "ev\u202elig\u200dn\nx.png"
HIDDEN = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u200d", "\ufeff"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plain name.jpg", "plain name.jpg"),
        ("Über café 猫.png", "Über café 猫.png"),  # letters of any script stay as they are
        (HOSTILE, "ev\\u202elig\\u200dn\\nx.png"),
        ("a\x1b[31mred\x07.jpg", "a\\x1b[31mred\\x07.jpg"),  # a terminal escape sequence, a bell
        ("del\x7f c1\x85 sep\u2028\u2029", "del\\x7f c1\\x85 sep\\u2028\\u2029"),
        ("tab\tcr\r", "tab\\tcr\\r"),
        ("bytes\udcff\udcfe.jpg", "bytes\\xff\\xfe.jpg"),  # undecodable bytes, as the manifest has them
        ("lone\ud800.jpg", "lone\\ud800.jpg"),  # a surrogate no byte made
    ],
)
def test_shown_escapes_what_would_change_what_the_reader_sees(name: str, expected: str) -> None:
    assert shown(name) == expected
    assert shown(Path(name)) == expected


@pytest.mark.parametrize("char", HIDDEN)
def test_every_bidi_and_zero_width_character_is_escaped(char: str) -> None:
    escaped = shown(f"a{char}b")
    assert char not in escaped and escaped == f"a\\u{ord(char):04x}b"
    assert escaped.isascii() and escaped.isprintable()


def test_kit_log_lines_show_names_escaped(caplog: pytest.LogCaptureFixture) -> None:
    import kit  # noqa: F401  (importing the package installs the filter)

    logger = logging.getLogger("kit")
    assert sum(isinstance(f, ShownFilter) for f in logger.filters) == 1
    install()  # idempotent
    assert sum(isinstance(f, ShownFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="kit"):
        logger.info("%s: %d detections", HOSTILE, 2)
        logger.error("cannot read image 'x\x1b]0;pwned\x07.jpg'")
        logger.info("%d images", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "ev\\u202elig\\u200dn\\nx.png: 2 detections",
        "cannot read image 'x\\x1b]0;pwned\\x07.jpg'",
        "3 images",
    ]


def test_a_malformed_log_call_is_left_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("kit", logging.INFO, __file__, 1, "%d", ("not a number",), None)
    assert ShownFilter().filter(record) and record.msg == "%d"  # logging reports it when it formats


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
    ok = run_child(command)
    assert ok.exit == 0, ok.stderr
    escaped = shown(str(src / HOSTILE))
    assert f"{escaped}: 1 detections" in ok.stderr.splitlines()
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
