"""How the operator commands print tables: never cut an id, and stay greppable when piped.

On a terminal a rich table keeps every id column whole (``no_wrap`` and a minimum width of its
longest value) and folds the other columns to fit the width. When stdout is not a terminal the
same rows come out as tab-separated lines with a header, one row per line, so
``csms stations | grep NL-RES-00012`` and ``cut -f1`` work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Col:
    name: str
    whole: bool = False  # never wrapped or shortened: ids, short numbers


def is_terminal() -> bool:
    return sys.stdout.isatty()


def out_console() -> Console:
    """On a terminal rich wraps long lines at word boundaries; a pipe gets every line whole."""
    return Console(soft_wrap=not is_terminal(), highlight=False)


def print_table(out: Console, title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> None:
    """``rows`` are plain text (no rich markup)."""
    if not is_terminal():  # written as is: rich would expand the tabs
        lines = ([f"# {title}"] if title else []) + ["\t".join(c.name for c in cols)]
        lines += ["\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row) for row in rows]
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()
        return
    widths = [max([len(c.name)] + [len(r[i]) for r in rows]) if c.whole else 4 for i, c in enumerate(cols)]
    if sum(widths) + 2 * (len(cols) - 1) > out.width:
        _records(out, title, cols, rows)  # too narrow for a table that keeps every id and number whole
        return
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, collapse_padding=True,
                  show_edge=False)
    for c, width in zip(cols, widths, strict=True):
        if c.whole:
            table.add_column(c.name, no_wrap=True, min_width=width)
        else:
            table.add_column(c.name, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


def _records(out: Console, title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> None:
    """One block per row: its first cell, then 'column: value' pairs the terminal may wrap."""
    if title:
        out.print(f"[italic]{escape(title)}[/]")
    for row in rows:
        out.print(f"[bold]{escape(row[0])}[/]")
        out.print("  " + escape("  ".join(f"{c.name}: {cell}" for c, cell in zip(cols[1:], row[1:], strict=True))))
