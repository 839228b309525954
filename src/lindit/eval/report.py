"""Tables for benchmark results: markdown for people, JSON for tools."""

from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:,.0f}"


def pivot(cells, row_key: str, col_key: str, value) -> tuple[list, list, dict]:
    """Rows and columns in first-seen order, and {(row, col): value(cell)}."""
    rows, cols, table = [], [], {}
    for c in cells:
        r, k = getattr(c, row_key), getattr(c, col_key)
        rows += [r] if r not in rows else []
        cols += [k] if k not in cols else []
        table[(r, k)] = value(c)
    return rows, cols, table
