"""``csms station register``: give a station credentials directly in the configured store.

Meant for when the daemon is not running (first setup of a lab); with the daemon up, use the
operator API so the running process sees the change at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from rich.console import Console

from csms.config import Config
from csms.console import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, load_config_or_report
from csms.security.credentials import RegistrationError, register_station
from csms.store.factory import open_store


def register_commands(subparsers: Any) -> None:
    """Add ``csms station register`` to the ``csms`` command line."""
    station = subparsers.add_parser("station", help="station credentials in the configured store")
    sub = station.add_subparsers(dest="station_command", required=True)
    p = sub.add_parser("register", help="register a station at a security profile (1-3) with its password",
                       description="Profiles 1 and 2 need a password: one is generated and printed once, unless "
                                   "--password-stdin reads yours (16-40 printable ASCII characters). Profile 3 "
                                   "uses the station's client certificate and takes no password.")
    p.add_argument("station_id")
    p.add_argument("--profile", type=int, choices=(1, 2, 3), required=True)
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin (never from the command line, "
                        "where other users could see it)")
    p.add_argument("--config", default="config.yaml", help="YAML config file (default: %(default)s)")
    p.set_defaults(func=cmd_station_register)


async def _register(config: Config, station_id: str, profile: int, password: str | None) -> str | None:
    store = open_store(config.store)
    await store.open()
    try:
        return await register_station(store, station_id, profile, password)
    finally:
        await store.close()


def cmd_station_register(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    config = load_config_or_report(args.config, err)
    if config is None:
        return EXIT_CONFIG
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        generated = asyncio.run(_register(config, args.station_id, args.profile, password))
    except RegistrationError as exc:
        err.print(f"[bold red]cannot register {args.station_id!r}:[/] {exc}", highlight=False)
        return EXIT_ERROR
    except OSError as exc:
        err.print(f"[bold red]cannot open the store:[/] {exc}", highlight=False)
        return EXIT_ERROR
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"registered {args.station_id} at security profile {args.profile}")
    if config.security is None:
        err.print(f"[bold yellow]warning:[/] {args.config} has no 'security' section (lab mode): the daemon lets "
                  f"every station in over plain ws:// without authentication, so security profile {args.profile} "
                  "is stored but not enforced until a 'security' section is added (see docs/security.md)",
                  highlight=False)
    if generated is not None:
        out.print("password (shown only now; set it as SecurityCtrlr.BasicAuthPassword on the station):")
        print(generated)
    return EXIT_OK
