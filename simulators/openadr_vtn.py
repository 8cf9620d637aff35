"""Run the OpenADR 3 VTN stand-in (the DSO's server for grid-aware charging) for a lab.

It starts with the GAC program, its safe-mode event and, if asked, one capacity-limit event; a BL
client (`--bl-client`) may then create, change and delete events over the REST API as the DSO would.

    python -m simulators.openadr_vtn --port 8081 --ean 871234567890123456 --ven-name NL-XYZ \\
        --ven-client ven1:secret1 --bl-client dso:secret2 --limit-kw 120 --minutes 60
    python -m simulators.openadr_vtn --spec 3.1.0 --run-seconds 600 ...

It prints one JSON line (base URL, program and event ids) once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import timedelta

from simulators.openadr import capacity_limit_event, make_ean18
from simulators.openadr.vtn import ClientCredentials, Vtn, VtnConfig


def _credentials(text: str, role: str) -> ClientCredentials:
    client_id, sep, secret = text.partition(":")
    if not sep or not client_id or not secret:
        raise argparse.ArgumentTypeError(f"expected id:secret, got {text!r}")
    return ClientCredentials(client_id, secret, role)


async def _run(args: argparse.Namespace) -> int:
    clients = [_credentials(c, "ven") for c in args.ven_client] + [_credentials(c, "bl") for c in args.bl_client]
    config = VtnConfig(version=args.spec, host=args.host, port=args.port, clients=clients,
                       token_ttl_s=args.token_ttl)
    eans = args.ean or [make_ean18("87123456789012345")]
    async with Vtn(config) as vtn:
        program, safe = vtn.seed_gac(eans=eans, ven_name=args.ven_name, safe_limit_kw=args.safe_limit_kw)
        started = {"url": vtn.url, "spec": args.spec, "program_id": program["id"], "safe_mode_event_id": safe["id"]}
        if args.limit_kw is not None:
            steps = max(1, int(args.minutes // args.interval_min))
            event = vtn.create("event", capacity_limit_event(
                args.spec, program["id"], limits_kw=[args.limit_kw] * steps, start=vtn.clock(),
                interval=timedelta(minutes=args.interval_min), eans=eans, ven_name=args.ven_name, name="limit"))
            started["event_id"] = event["id"]
        print(json.dumps(started), flush=True)
        try:
            await asyncio.sleep(args.run_seconds)
        except asyncio.CancelledError:
            pass
        print(json.dumps({"requests": vtn.requests_seen, "reports": len(vtn.reports()),
                          "notifications": len(vtn.deliveries)}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.openadr_vtn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--spec", choices=("3.0.1", "3.1.0"), default="3.0.1", help="OpenADR 3 version to serve")
    parser.add_argument("--ven-client", action="append", default=[], metavar="ID:SECRET")
    parser.add_argument("--bl-client", action="append", default=[], metavar="ID:SECRET")
    parser.add_argument("--ean", action="append", help="EAN-18 of the grid connection (repeatable)")
    parser.add_argument("--ven-name", default="NL-XYZ", help="the CPO's eMI3 operator id")
    parser.add_argument("--safe-limit-kw", type=float, default=50.0)
    parser.add_argument("--limit-kw", type=float, help="also start a capacity limit now")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval-min", type=float, default=15.0)
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--run-seconds", type=float, default=3600.0, help="stop after this long")
    args = parser.parse_args(argv)
    if not args.ven_client and not args.bl_client:
        parser.error("give at least one --ven-client or --bl-client")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"openadr_vtn: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
