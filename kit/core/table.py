"""Plain-text tables for a terminal (standard library only: the torch-free audit prints them too)."""

from __future__ import annotations

from collections.abc import Sequence


def format_columns(table: Sequence[Sequence[str]]) -> str:
    """Rows of cells as fixed-width, left-aligned columns two spaces apart (no trailing spaces)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
