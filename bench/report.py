"""What every benchmark part hands back: markdown sections with tables and figures.

Parts never write RESULTS.md themselves; `bench.__main__` collects their sections so a smoke run
(tests) and a full run produce exactly the same document shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows]
        return "\n".join([f"**{self.title}**", "", head, rule, *body])

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


@dataclass
class Section:
    """One part's results: prose, tables, figures (paths relative to RESULTS.md), target verdicts."""

    name: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw figures for the smoke test
    seconds: float = 0.0

    def table(self, title: str) -> Table:
        for t in self.tables:
            if t.title == title:
                return t
        raise KeyError(f"section {self.name!r} has no table {title!r} (has: {[t.title for t in self.tables]})")

    def markdown(self, base: Path) -> str:
        out = [f"## {self.title}", ""]
        if self.intro:
            out += [self.intro, ""]
        if self.verdicts:
            out += ["Targets:", ""] + [f"- {v}" for v in self.verdicts] + [""]
        for t in self.tables:
            out += [t.markdown(), ""]
        for caption, path in self.figures:
            rel = path.relative_to(base) if path.is_relative_to(base) else path
            out += [f"![{caption}]({rel.as_posix()})", ""]
        if self.notes:
            out += ["Notes:", ""] + [f"- {n}" for n in self.notes] + [""]
        out.append(f"_Part ran in {self.seconds:.0f} s._")
        return "\n".join(out)


def fmt(value: Any) -> str:
    """Compact, table-friendly numbers: 3 significant digits below 100, thousands separators above."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        if value == 0:
            return "0"
        return f"{value:.3g}"
    return str(value)


def verdict(label: str, ok: bool, detail: str) -> str:
    return f"{'**met**' if ok else '**missed**'}: {label} ({detail})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return float(ordered[k])


def ratio(ours: float, base: float) -> float:
    if base == 0 or math.isnan(base) or math.isnan(ours):
        return float("nan")
    return ours / base


def write_results(sections: list[Section], path: Path, header: str) -> None:
    body = [header, ""]
    for s in sections:
        body += [s.markdown(path.parent), ""]
    path.write_text("\n".join(body), encoding="utf-8")


def replace_table(path: Path, table: Table, note: str) -> None:
    """Put ``table`` in place of the table in ``path`` whose title starts like it (up to its first
    parenthesis), with ``note`` in italics below it; the rest of the file stays as it was."""
    key = "**" + table.title.split(" (")[0]
    lines = path.read_text(encoding="utf-8").split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(key)), None)
    if start is None:
        raise KeyError(f"{path} has no table titled {key[2:]!r}")
    end = start + 2  # title, blank line, then the table's rows up to the next blank line
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    if end + 1 < len(lines) and lines[end] == "" and lines[end + 1].startswith("_Row re-run"):
        end += 2  # the note of an earlier re-run
    lines[start:end] = [*table.markdown().split("\n"), "", f"_{note}_"]
    path.write_text("\n".join(lines), encoding="utf-8")
