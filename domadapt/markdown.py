"""Markdown tables, written one way for every report: cells escaped, columns aligned."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown table (no trailing newline); ``align`` has one letter per column, ``l`` or
    ``r`` (right, for numbers); columns without a letter are left-aligned."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header), "l"))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
