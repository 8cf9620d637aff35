"""`python -m bench study`: run the study with a progress bar, write docs/study.md and the study
section of RESULTS.md (the other parts' sections stay as they are)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import study
from bench.study import writeup

REPO = Path(__file__).resolve().parent.parent.parent
STEPS = ("hosting", "sensitivity", "contract, redispatch, tariffs")


def run_study(out: Path, *, smoke: bool, jobs: int | None, console: Console, docs_md: Path | None = None) -> int:
    settings = study.SMOKE if smoke else study.FULL
    if jobs is not None:
        settings = dataclasses.replace(settings, jobs=jobs)
    if docs_md is None:
        docs_md = REPO / "docs" / "study.md" if out.resolve() == REPO / "bench" and not smoke else out / "study.md"
    load = os.getloadavg()[0]
    header = (f"_Written by `python -m bench study{' --smoke' if smoke else ''}` on "
              f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} "
              f"{platform.python_version()}, {os.cpu_count()} cores, load average at start {load:.1f}; "
              f"{settings.jobs} worker process(es)._")
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} parts"), TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("study", total=len(STEPS))

        def say(text: str) -> None:
            progress.console.print(f"[cyan]study[/] {text}", highlight=False)

        def step(name: str) -> None:
            progress.update(task, advance=1, description=f"study: {name} done")

        sec = asyncio.run(study.run(settings, out / "results", say, docs_md=docs_md, header=header, step=step))
    writeup.splice_section(out / "RESULTS.md", sec)
    console.print(f"wrote {docs_md} and the study section of {out / 'RESULTS.md'} in {sec.seconds / 60:.1f} min")
    return 0
