"""A DSO stand-in: publishes transformer limit signals and non-EV load readings on MQTT.

It speaks the documented wire format (docs/grid-control.md) and nothing else, so it works against
any central system that follows it; like every simulator it never imports `csms`.

    python -m simulators.grid_signals limit T1 150 --minutes 180
    python -m simulators.grid_signals limit T1 150 --every 60 --count 10     # keeps the link alive
    python -m simulators.grid_signals schedule T1 17:00-20:00=120 20:00-23:00=250
    python -m simulators.grid_signals base-load T1 85.5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def limit_payload(limit_kw: float, *, signal_id: str | None = None, source: str = "dso",
                  valid_from: datetime | None = None, valid_until: datetime | None = None,
                  timestamp: datetime | None = None) -> dict[str, Any]:
    """One limit for the validity window (open-ended when `valid_until` is None)."""
    payload: dict[str, Any] = {"signal_id": signal_id or f"{source}-{uuid.uuid4().hex[:12]}", "source": source,
                               "timestamp": iso(timestamp or datetime.now(timezone.utc)), "limit_kw": limit_kw}
    if valid_from is not None:
        payload["valid_from"] = iso(valid_from)
    if valid_until is not None:
        payload["valid_until"] = iso(valid_until)
    return payload


def schedule_payload(intervals: Sequence[tuple[datetime, datetime | None, float]], *, signal_id: str | None = None,
                     source: str = "dso", timestamp: datetime | None = None) -> dict[str, Any]:
    """A schedule: sorted, non-overlapping [start, end) intervals; only the last may be open-ended."""
    return {"signal_id": signal_id or f"{source}-{uuid.uuid4().hex[:12]}", "source": source,
            "timestamp": iso(timestamp or datetime.now(timezone.utc)),
            "intervals": [{"start": iso(s), **({"end": iso(e)} if e is not None else {}), "limit_kw": kw}
                          for s, e, kw in intervals]}


class DsoSignalPublisher:
    """`async with DsoSignalPublisher(prefix=...) as dso: await dso.send_limit("T1", 150)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, prefix: str = "netbewust",
                 source: str = "dso", qos: int = 1) -> None:
        self.prefix = prefix
        self.source = source
        self.qos = qos
        self._client = aiomqtt.Client(host, port, identifier=f"dso-sim-{uuid.uuid4().hex[:12]}")

    async def __aenter__(self) -> DsoSignalPublisher:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.__aexit__(*exc)

    def topic(self, transformer: str, kind: str = "limit") -> str:
        return f"{self.prefix}/grid/{transformer}/{kind}"

    async def send_raw(self, transformer: str, payload: bytes | str, *, kind: str = "limit",
                       retain: bool = False) -> None:
        """Publish any bytes, e.g. to see how the central system treats a broken signal."""
        await self._client.publish(self.topic(transformer, kind), payload, qos=self.qos, retain=retain)

    async def send(self, transformer: str, payload: dict[str, Any], *, retain: bool = False) -> dict[str, Any]:
        await self.send_raw(transformer, json.dumps(payload), retain=retain)
        return payload

    async def send_limit(self, transformer: str, limit_kw: float, **kwargs: Any) -> dict[str, Any]:
        return await self.send(transformer, limit_payload(limit_kw, source=self.source, **kwargs))

    async def send_schedule(self, transformer: str, intervals: Sequence[tuple[datetime, datetime | None, float]],
                            **kwargs: Any) -> dict[str, Any]:
        return await self.send(transformer, schedule_payload(intervals, source=self.source, **kwargs))

    async def send_base_load(self, transformer: str, kw: float, at: datetime | None = None) -> None:
        body = {"kw": kw, "timestamp": iso(at or datetime.now(timezone.utc))}
        await self.send_raw(transformer, json.dumps(body), kind="base-load")

    async def repeat(self, transformer: str, payload: dict[str, Any], every_s: float, count: int) -> None:
        """Re-send one signal (same id: idempotent) `count` times, as a live link does."""
        for i in range(count):
            await self.send(transformer, payload)
            if i + 1 < count:
                await asyncio.sleep(every_s)


def _parse_window(text: str, tz: ZoneInfo, today: datetime) -> tuple[datetime, datetime, float]:
    """'17:00-20:00=120' -> today's local window in UTC and its limit (an end <= start means tomorrow)."""
    span, _, kw = text.partition("=")
    start_s, _, end_s = span.partition("-")
    start = datetime.combine(today.date(), datetime.strptime(start_s, "%H:%M").time(), tzinfo=tz)
    end = datetime.combine(today.date(), datetime.strptime(end_s, "%H:%M").time(), tzinfo=tz)
    if end <= start:
        end += timedelta(days=1)
    return start, end, float(kw)


async def _main(args: argparse.Namespace) -> int:
    async with DsoSignalPublisher(args.host, args.port, prefix=args.prefix, source=args.source) as dso:
        if args.command == "base-load":
            await dso.send_base_load(args.transformer, args.kw)
            return 0
        if args.command == "limit":
            now = datetime.now(timezone.utc)
            until = now + timedelta(minutes=args.minutes) if args.minutes else None
            payload = limit_payload(args.kw, source=args.source, valid_until=until)
        else:
            tz = ZoneInfo(args.timezone)
            today = datetime.now(tz)
            windows = sorted(_parse_window(w, tz, today) for w in args.windows)
            payload = schedule_payload(windows, source=args.source)
        await dso.repeat(args.transformer, payload, args.every, args.count)
        print(json.dumps(payload))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.grid_signals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="netbewust")
    parser.add_argument("--source", default="dso")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("limit", "schedule"):
        p = sub.add_parser(name)
        p.add_argument("transformer")
        if name == "limit":
            p.add_argument("kw", type=float)
            p.add_argument("--minutes", type=float, default=0, help="validity from now (0 = until replaced)")
        else:
            p.add_argument("windows", nargs="+", help="HH:MM-HH:MM=kW, local time")
            p.add_argument("--timezone", default="Europe/Amsterdam")
        p.add_argument("--every", type=float, default=60.0, help="seconds between re-sends")
        p.add_argument("--count", type=int, default=1, help="how many times to send")
    p = sub.add_parser("base-load")
    p.add_argument("transformer")
    p.add_argument("kw", type=float)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except aiomqtt.MqttError as exc:
        print(f"MQTT: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"bad argument: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
