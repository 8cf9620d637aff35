"""``csms report --since ... --until ...``: what happened per transformer, from the store, as an HTML
page with PNG plots. Reads the store the config names (the daemon may be running or not);
the computations are in :mod:`csms.report.compute`, the reading in :mod:`csms.report.collect`."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from csms.console import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, EXIT_USAGE, load_config_or_report

DEFAULT_OUT = "var/report"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is this machine's local time."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.astimezone()


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="an HTML report (with PNG plots) of what happened per transformer, "
                                      "from the store: load vs limit per 15 min, energy above limits, sessions "
                                      "and their guarantees, profiles sent, verification findings")
    p.add_argument("--config", default="config.yaml", help="YAML config file (its store is read; default: %(default)s)")
    p.add_argument("--since", help="start, ISO 8601 (default: 24 h before --until); no zone: local time")
    p.add_argument("--until", help="end, ISO 8601 (default: now)")
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for index.html and the plots (default: %(default)s)")
    p.add_argument("--reaction-s", type=float, default=None,
                   help="seconds after a limit becomes stricter in which load above it is not counted as a "
                        "breach (default: grid.planning.verify_after_s)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    try:
        until = parse_time(args.until) if args.until else datetime.now().astimezone()
        since = parse_time(args.since) if args.since else until - timedelta(hours=24)
    except ValueError as exc:
        err.print(f"[bold red]--since/--until:[/] not an ISO 8601 time ({exc})")
        return EXIT_USAGE
    if since >= until:
        err.print("[bold red]--since must be before --until[/]")
        return EXIT_USAGE
    if args.reaction_s is not None and args.reaction_s < 0:
        err.print("[bold red]--reaction-s must be >= 0[/]")
        return EXIT_USAGE
    config = load_config_or_report(args.config, err)
    if config is None:
        return EXIT_CONFIG
    if config.grid is None:
        err.print(f"[bold red]{args.config} has no grid section:[/] there is nothing to report on")
        return EXIT_CONFIG
    grid = config.grid
    reaction_s = args.reaction_s if args.reaction_s is not None else grid.planning.verify_after_s
    from csms.report.collect import collect  # matplotlib and the store only when a report is made
    from csms.report.render import write
    from csms.store.factory import open_store

    async def make() -> Path:
        store = open_store(config.store)
        await store.open()
        try:
            report = await collect(store, grid, since, until, reaction_s)
        finally:
            await store.close()
        return write(report, Path(args.out))

    try:
        path = asyncio.run(make())
    except OSError as exc:
        err.print(f"[bold red]cannot make the report:[/] {exc}")
        return EXIT_ERROR
    Console(soft_wrap=True).print(f"report written: {path.resolve()}")
    return EXIT_OK
