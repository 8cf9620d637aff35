"""`csms-sim`: run a fleet of simulated OCPP 1.6J / 2.0.1 / 2.1 stations against any central system."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import sys
from datetime import UTC, datetime
from pathlib import Path

from simulators.errors import ScenarioError
from simulators.models import OCPP_VERSIONS

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SECURITY_OPTIONS = {"profile": "--security-profile", "password_template": "--password-template",
                    "ca_file": "--ca", "cert_template": "--cert-template", "key_template": "--key-template"}
RESULTS_DIR = Path("var") / "sim-results"
_DURATION = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*(s|m|min|h|d)?$")
_UNIT_S = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ScenarioError as exc:
        print(f"csms-sim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csms-sim", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log station events (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    fleet = sub.add_parser("fleet", help="run a scenario's stations and write power time series + plot")
    _common(fleet)
    fleet.add_argument("--scenario", required=True,
                       help="scenario YAML file, or the name of a shipped one (residential_evening, office_depot, "
                            "mixed_versions, loadtest)")
    fleet.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    fleet.add_argument("--duration-h", type=float, help="simulated hours to run (default: the scenario's)")
    fleet.add_argument("--out", type=Path, help=f"results directory (default: a new {RESULTS_DIR}/<scenario>-<UTC "
                                                f"time>; the path is printed)")
    fleet.add_argument("--loadtest", action="store_true", help="every EVSE charges from the start (protocol load)")
    fleet.set_defaults(func=_run_fleet)

    load = sub.add_parser("loadtest", help="protocol load: all stations charging, report rates/latency/errors")
    _common(load)
    load.add_argument("--scenario", default="loadtest", help="scenario (default: the shipped loadtest.yaml)")
    load.add_argument("--duration", type=float, default=60.0, help="real seconds to run (default 60)")
    load.add_argument("--meter-interval", type=float, help="override the scenario's meter interval (s)")
    load.add_argument("--out", type=Path, help="also write results here")
    load.set_defaults(func=_run_loadtest)

    check = sub.add_parser("check", help="validate a scenario file and print what it would run")
    check.add_argument("--scenario", required=True)
    check.add_argument("--stations", type=int)
    check.add_argument("--ocpp-version", choices=OCPP_VERSIONS, help="every station speaks this version")
    check.add_argument("--url", help="the URL the fleet would use (decides the security profile when not given)")
    _security(check)
    check.set_defaults(func=_check)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="central system websocket URL, e.g. ws://127.0.0.1:9000/ocpp "
                                                "(the station id is appended as the last path segment)")
    p.add_argument("--stations", type=int, help="total number of stations (group shares of the scenario kept)")
    p.add_argument("--validate", action="store_true",
                   help="schema-check every outgoing/incoming payload with the ocpp package (slower)")
    p.add_argument("--connect-rate", type=float, default=500.0, help="new connections per second (default 500)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.add_argument("--ocpp-version", choices=OCPP_VERSIONS,
                   help="every station speaks this version (default: the scenario's models and ocpp_versions mix)")
    clock = p.add_argument_group("clock (default: the wall clock, unless the scenario pins a date)")
    clock.add_argument("--clock-offset", type=_duration_s, default=0.0, metavar="DURATION",
                       help="skew the stations' clocks on purpose: --clock-offset=-2h (a negative value needs "
                            "the =), +90s, 1d; plain numbers are seconds")
    clock.add_argument("--start", type=_instant, metavar="DATETIME",
                       help="pin the stations' clocks to this ISO 8601 date-time with UTC offset "
                            "(e.g. 2025-01-15T14:00:00+01:00)")
    _security(p)


def _duration_s(text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. -90s, +2h, -1d, 3600)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a UTC offset (e.g. +01:00 or Z): {text!r}")
    return value


def _security(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("security (override the scenario's, for every station model)")
    group.add_argument("--security-profile", dest="profile", type=int, choices=(1, 2, 3),
                       help="1 = Basic auth over ws://, 2 = Basic auth over wss://, 3 = client certificate over "
                            "wss:// (default: the scenario's; else 3 with --cert-template, 2 for wss://, 1)")
    group.add_argument("--password-template", help="per-station password, {station_id} is filled in "
                                                   "(16-40 characters after filling in), e.g. "
                                                   "'{station_id}-secret-password-0001'")
    group.add_argument("--ca", dest="ca_file", help="CA certificate file the CSMS's server certificate chains to")
    group.add_argument("--cert-template", help="client certificate file per station, e.g. 'pki/{station_id}.pem'")
    group.add_argument("--key-template", help="client key file per station, e.g. 'pki/{station_id}.key'")


def resolve_scenario(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    shipped = SCENARIO_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.exists():
        return shipped
    raise ScenarioError("no such file, and no shipped scenario by that name "
                        f"(shipped: {', '.join(p.stem for p in sorted(SCENARIO_DIR.glob('*.yaml')))})", file=name)


def _load(name: str, args: argparse.Namespace | None = None):
    """The scenario, with the command line's security options applied (they name themselves in errors)."""
    from simulators.scenario import load_scenario
    scenario = load_scenario(resolve_scenario(name))
    if args is not None:
        options = {field: getattr(args, field, None) for field in SECURITY_OPTIONS}
        scenario.override_security(options, SECURITY_OPTIONS, getattr(args, "url", None))
        if getattr(args, "ocpp_version", None):
            scenario.override_version(args.ocpp_version)
    return scenario


def _check(args: argparse.Namespace) -> int:
    scenario = _load(args.scenario, args)
    plans = scenario.plan(args.stations)
    sessions = sum(len(p.sessions) for p in plans)
    versions: dict[str, int] = {}
    for plan in plans:
        versions[plan.model.ocpp_version] = versions.get(plan.model.ocpp_version, 0) + 1
    print(f"{scenario.name}: {len(plans)} stations, {sessions} sessions, {scenario.duration_s / 3600:g} h "
          f"{scenario.clock_text()}, max speed {scenario.max_speed:g}x")
    print("  OCPP " + ", ".join(f"{version}: {count}" for version, count in sorted(versions.items())))
    for transformer in scenario.transformers:
        n = sum(1 for p in plans if p.transformer == transformer.id)
        print(f"  {transformer.id}: {n} stations, capacity {transformer.capacity_kw:g} kW")
    for name, model in scenario.station_models.items():
        if model.security is not None:
            print(f"  station model {name}: {_describe(model.security)}")
    return 0


def _describe(security) -> str:
    parts = [f"security profile {security.profile}"]
    if security.uses_password:
        parts.append("password from template" if security.password_template else "shared password")
    if security.uses_tls:
        parts.append(f"CA {security.ca_file}" if security.ca_file else "system CA store")
    if security.profile == 3:
        parts.append(f"client certificates {security.cert_template}")
    return ", ".join(parts)


def _raise_fd_limit() -> None:
    """Thousands of sockets need more than the usual 1024 file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_fleet(args: argparse.Namespace) -> int:
    from simulators.fleet import Fleet
    from simulators.results import report, write_results

    scenario = _load(args.scenario, args)
    _raise_fd_limit()
    fleet = Fleet(args.url, scenario, stations=args.stations, speed=args.speed, validate=args.validate,
                  connect_rate_per_s=args.connect_rate, loadtest=args.loadtest, clock_offset_s=args.clock_offset,
                  start=args.start)
    _announce(fleet)
    duration = args.duration_h * 3600 if args.duration_h else None
    result = asyncio.run(_with_progress(fleet, duration, not args.no_progress))
    out = args.out or default_results_dir(scenario.name)
    paths = write_results(result, out)
    summary = report(result)
    print(json.dumps({"transformers": summary["transformers"], "load": summary["load"]}, indent=2))
    print(f"results in {out.resolve()}: {', '.join(p.name for p in paths.values())}", file=sys.stderr)
    return 0


def default_results_dir(scenario_name: str, now: datetime | None = None) -> Path:
    """A fresh `var/sim-results/<scenario>-<UTC time>` (var/ is where the daemon keeps its files too)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario_name) or "scenario"
    path = RESULTS_DIR / f"{safe}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = RESULTS_DIR / f"{safe}-{stamp}-{suffix}"
    return path


def _announce(fleet) -> None:
    """Say which clock and OCPP versions the stations use before anything connects."""
    versions = ", ".join(f"OCPP {version}: {count}" for version, count in fleet.versions().items())
    print(f"{len(fleet.stations)} stations ({versions}); {fleet.clock.describe()}; message timestamps are "
          f"simulated time, heartbeats/timeouts/retries are real seconds", file=sys.stderr)


def _run_loadtest(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from simulators.fleet import Fleet
    from simulators.results import write_results

    scenario = _load(args.scenario, args)
    if args.meter_interval:
        scenario.station_models = {k: replace(m, meter_interval_s=args.meter_interval)
                                   for k, m in scenario.station_models.items()}
    scenario.duration_s = args.duration
    scenario.sample_interval_s = min(scenario.sample_interval_s, args.duration)
    _raise_fd_limit()
    fleet = Fleet(args.url, scenario, stations=args.stations, speed=1.0, validate=args.validate,
                  connect_rate_per_s=args.connect_rate, loadtest=True, clock_offset_s=args.clock_offset,
                  start=args.start)
    _announce(fleet)
    result = asyncio.run(_with_progress(fleet, args.duration, not args.no_progress))
    if args.out:
        write_results(result, args.out)
    print(json.dumps(result.load, indent=2))
    return 0 if result.load["error_count"] == 0 else 1


async def _with_progress(fleet, duration: float | None, show: bool):
    if not show:
        return await fleet.run(duration_s=duration)
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        snap = fleet.stats.snapshot()
        table = Table(title=f"csms-sim: {fleet.scenario.name}", show_header=False)
        table.add_row("simulated time", fleet.clock.now().isoformat(timespec="seconds"))
        table.add_row("connections up", f"{snap['connections_up']} / {len(fleet.stations)}")
        table.add_row("EVs plugged in", str(fleet.active_sessions()))
        table.add_row("charging power", f"{fleet.total_power_kw():,.1f} kW")
        table.add_row("messages/s", f"{snap['messages_per_s']}")
        table.add_row("latency p50/p95/p99", f"{snap['latency_ms_p50']} / {snap['latency_ms_p95']} / "
                                             f"{snap['latency_ms_p99']} ms")
        table.add_row("errors", str(snap["error_count"]))
        if snap["auth_failures"]:
            table.add_row("auth failures (HTTP 401/403/429)", str(snap["auth_failures"]))
        return table

    with Live(render(), console=Console(stderr=True), refresh_per_second=2, transient=False) as live:
        last = [0.0]

        def update(_fleet) -> None:
            now = asyncio.get_running_loop().time()
            if now - last[0] >= 0.5:
                last[0] = now
                live.update(render())

        result = await fleet.run(duration_s=duration, on_sample=update)
        live.update(render())
    return result


if __name__ == "__main__":
    sys.exit(main())
