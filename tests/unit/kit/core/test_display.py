"""Names shown escaped (kit.core.display): control, bidi and zero-width characters never reach a
terminal line, a log line or the run report raw; the manifest keeps the real name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kit.core.display import ShownFilter, install, shown

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
