"""The ``csms`` command line."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from csms import opcli
from csms.config import ConfigError, store_location
from csms.console import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, load_config_or_report, report_config_error
from csms.report import register as register_report
from csms.security.cli import register_commands as register_security_commands
from csms.workers import Ports, supervise, tell_ready, worker_config, workers_config

DEFAULT_CONFIG = "config.yaml"
GC_GEN0_THRESHOLD = 50_000  # default 700: a young collection every 700 allocations


def _setup_logging(level: str, prefix: str = "") -> None:
    """``prefix``: a worker's ``w<i> ``, so the supervisor's output tells the workers apart."""
    logging.basicConfig(level=level, format=f"{prefix}%(name)s: %(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)])
    logging.getLogger("websockets").setLevel(logging.WARNING)


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run the daemon on uvloop (about 15 % less CPU per message than the default loop) when present.

    The cyclic garbage collector is tuned for a long-lived process holding many connections: with
    the default thresholds, full collections over a heap of 10,000 stations ran every 1-2 s, took
    up to a second each and freed nothing (they dominated the grid controller's reaction time).
    Objects alive after start-up are moved out of the collector's sight (gc.freeze at start).
    SIGUSR1 prints every thread's stack to stderr: what a daemon that stopped answering is doing,
    without stopping it.
    """
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: where every thread is, on stderr
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    config = load_config_or_report(args.config, err)
    if config is None:
        return EXIT_CONFIG
    try:
        config = workers_config(config, max(args.workers, 2 if args.worker is not None else 1))
    except ConfigError as exc:
        report_config_error(exc, err)
        return EXIT_CONFIG
    _setup_logging(config.logging.level, f"w{args.worker} " if args.worker is not None else "")
    if args.workers > 1:
        try:
            return supervise(args.config, config, args.workers)
        except OSError as exc:
            err.print(f"[bold red]cannot start:[/] {exc}")
            return EXIT_ERROR
    from csms.app import Daemon  # the whole daemon: imported only to serve

    started: Callable[[], None] | None = None
    if args.worker is not None:  # one of the supervisor's workers (csms/workers.py)
        config = worker_config(config, args.worker, Ports.parse(args.ports))
        started = partial(tell_ready, args.ready_fd) if args.ready_fd is not None else None
    else:
        logging.getLogger("csms").info("config %s; store %s", config.source, store_location(config.store))
    try:
        run(Daemon(config, reuse_port=args.worker is not None).run_until_signalled(started))
    except OSError as exc:
        err.print(f"[bold red]cannot start:[/] {exc}")
        return EXIT_ERROR
    return EXIT_OK


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return count


def cmd_check_config(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    config = load_config_or_report(args.path, err)
    if config is None:
        return EXIT_CONFIG
    Console().print(f"{args.path}: OK")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``csms demo``: runs the demo (``python -m demo``) in its own process; csms never imports it."""
    return subprocess.call([sys.executable, "-m", "demo", *args.demo_args])


FORWARDED = {"demo"}  # subcommands whose options belong to the program they run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csms", description="Netbewust: grid-aware OCPP 2.0.1 central system")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the central system daemon")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file (default: %(default)s)")
    p.add_argument("--workers", type=_workers, default=1,
                   help="worker processes sharing the ports (SO_REUSEPORT); more than 1 needs store.backend: "
                        "redis (default: %(default)s)")
    # Set by the supervisor for each worker it starts (csms/workers.py), not by operators.
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check-config", help="validate a config file and list every problem")
    p.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("demo", help="run a simulated evening under a grid limit (no broker needed, < 1 minute); "
                                    "options: see `python -m demo --help`", add_help=False)
    p.set_defaults(func=cmd_demo, demo_args=[])
    register_security_commands(sub)
    opcli.register(sub)
    register_report(sub)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a forwarded subcommand keeps its own options (``csms demo --seconds 20``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in FORWARDED:
        args.demo_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
