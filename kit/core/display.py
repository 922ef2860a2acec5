"""Names from outside (file names, class names from a checkpoint, layer names) as they are shown.

A name is stored as it is (``manifest.json`` keeps the real file name, as valid UTF-8: see
:func:`kit.core.images.printable`), but wherever it is *shown* (a terminal line, a log line, the run
report, an audit table) characters that would change what the reader sees are escaped: control
characters (C0, DEL, C1: a newline would forge a log line, ESC a terminal sequence), line and
paragraph separators, and the invisible format characters of Unicode category Cf: the bidi
controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) that reorder the text around
them, so that ``exe.jpg`` can read as ``gpj.exe``, and the zero-width ones (U+200B-U+200D,
U+2060, U+FEFF) that make two different names look the same. Each becomes its Python escape
(``\\u202e``, ``\\n``, ``\\x1b``); undecodable bytes of a file name are ``\\xNN`` as in the manifest.

Every kit log line passes through :func:`shown` (:class:`ShownFilter`, installed on the ``kit``
logger when this module is imported: :mod:`kit` does so), so a message that quotes a name needs no
call of its own; text printed without the logger (exit messages, tables, the report) calls it.
Standard library only: ``python -m kit.evaluation.audit`` and ``kit.report.page`` start without torch.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from typing import Union

# Cc: C0, DEL, C1; Cf: bidi controls, zero-width and other format characters; Zl, Zp: U+2028, U+2029.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
LOGGER = "kit"


def _escape(char: str) -> str:
    if unicodedata.category(char) not in HIDDEN_CATEGORIES:
        return char
    return char.encode("unicode_escape").decode("ascii")


def shown(name: Union[str, os.PathLike[str]]) -> str:
    """``name`` safe to show on one line: control, separator and invisible format characters as
    escapes (``\\u202e``, ``\\n``), undecodable bytes (surrogates) as ``\\xNN``; other text as it is."""
    text = os.fspath(name)
    if text.isprintable():  # the usual name: nothing to escape (printable excludes Cc, Cf, Zl, Zp)
        return text
    raw = text.encode("utf-8", "surrogateescape" if _only_escaped_bytes(text) else "backslashreplace")
    decoded = raw.decode("utf-8", "backslashreplace")
    return "".join(_escape(char) for char in decoded)


def _only_escaped_bytes(text: str) -> bool:
    """Whether every surrogate in ``text`` stands for an undecodable byte (os.fsdecode's
    surrogateescape, U+DC80-U+DCFF), which then shows as that byte."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


class ShownFilter(logging.Filter):
    """Makes every record of the ``kit`` logger one line of shown text (names escaped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: logging itself reports it when it formats
            return True
        escaped = shown(message)
        if escaped != message or record.args:
            record.msg, record.args = escaped, ()
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add :class:`ShownFilter` to ``logger`` (default the kit's), once."""
    target = logging.getLogger(LOGGER) if logger is None else logger
    if not any(isinstance(f, ShownFilter) for f in target.filters):
        target.addFilter(ShownFilter())


install()
