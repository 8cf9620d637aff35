"""`python -m bench all | scale | reaction | planning | hosting | study [--smoke] [--out DIR]`, and
`python -m bench fuzz [--frames N] [--backend sqlite|redis]` (the edge fuzz run, bench/fuzz.py).
`python -m bench readback [--sessions N]` times a new grid leader's read-back of running sessions
alone (bench/readback.py, printed only).
`python -m bench storm` re-runs only the reconnect storm row of the scale part and replaces that
table in RESULTS.md (the rest stays as the last full run wrote it).

`python -m bench workers [--smoke] [--out DIR]` (issue 15, a few minutes, not part of `all`): `csms serve
--workers 2` against 1 (messages/s) and 50,000 idle stations over four workers; replaces only its own section.

`python -m bench mixed [--smoke] [--out DIR]` (issue 13, under 3 minutes, not part of `all`): a fleet
mixing OCPP 1.6J, 2.0.1 and 2.1 under one transformer limit; replaces only its own section of
RESULTS.md, and the other parts keep it.

`python -m bench cluster [--smoke] [--stations N] [--failover-stations N] [--only reaction|failover] [--out DIR]`
(issue 15, about 12 minutes, not part of `all`): a limit's reaction across three `csms serve` nodes on one Redis
against one node in the same run, and failover after the grid leader's node (10,000 of 30,000 stations, from
station processes) is SIGKILLed; replaces only its own section (`--only` runs one half and prints it instead).

`reaction` also takes `--sizes 100,1000` and `--servers ours` to run only part of it. `study`
(issue 19, about 30 minutes, not part of `all`) writes docs/study.md and replaces only its own
section of RESULTS.md; `--jobs N` sets its worker processes.

Runs the parts in order, shows progress with rich, and writes RESULTS.md plus PNG figures
(bench/RESULTS.md and bench/results/ by default). Each part is bounded in time; a part that fails
is reported in RESULTS.md with its error instead of stopping the others.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from bench.report import Section, write_results

PARTS = ("scale", "reaction", "planning", "hosting")
BENCH_DIR = Path(__file__).resolve().parent


def _runner(part: str, smoke: bool, sizes: tuple[int, ...] | None = None,
            servers: tuple[str, ...] | None = None) -> Callable[[Path, Callable[[str], None]], Awaitable[Section]]:
    if part == "scale":
        from bench import scale
        return lambda out, say: scale.run(scale.SMOKE if smoke else scale.FULL, out, say)
    if part == "reaction":
        from bench import reaction
        settings = (reaction.SMOKE if smoke else reaction.FULL).only(sizes, servers)
        return lambda out, say: reaction.run(settings, out, say)
    if part == "planning":
        from bench import planning
        return lambda out, say: planning.run(planning.SMOKE if smoke else planning.FULL, out, say)
    if part == "hosting":
        from bench import hosting
        return lambda out, say: hosting.run(hosting.SMOKE if smoke else hosting.FULL, out, say)
    raise ValueError(f"unknown part {part!r} (known: all, {', '.join(PARTS)})")


def _machine() -> str:
    load = os.getloadavg()
    return (f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
            f"{platform.machine()}, load average at start {load[0]:.1f}")


async def run_parts(parts: list[str], out_md: Path, fig_dir: Path, smoke: bool, console: Console,
                    sizes: tuple[int, ...] | None = None, servers: tuple[str, ...] | None = None) -> list[Section]:
    from bench.servers import pin_loadgen

    pinning = pin_loadgen()
    sections: list[Section] = []
    started = time.monotonic()
    for part in parts:
        console.rule(f"[bold]{part}")
        t0 = time.monotonic()

        def say(text: str, _part: str = part) -> None:
            console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] [cyan]{_part}[/] {text}", highlight=False)

        try:
            section = await _runner(part, smoke, sizes, servers)(fig_dir, say)
        except Exception as exc:  # noqa: BLE001 - report it, run the other parts
            console.print_exception()
            section = Section(part, f"{part}: FAILED")
            section.notes.append(f"the part failed: `{type(exc).__name__}: {exc}`")
            section.data["error"] = "".join(traceback.format_exception(exc))
        section.seconds = time.monotonic() - t0
        sections.append(section)
        say(f"done in {section.seconds:.0f} s")
    header = (f"# Benchmark results{' (smoke run)' if smoke else ''}\n\n"
              f"Written by `python -m bench {' '.join(parts) if len(parts) < len(PARTS) else 'all'}"
              f"{' --smoke' if smoke else ''}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
              f"{_machine()}; {pinning}. Total {time.monotonic() - started:.0f} s. "
              "Method and assumptions: docs/benchmarks.md. Every target below is stated as met or missed "
              "with the measured figure.")
    write_results(sections, out_md, header)
    console.print(f"wrote {out_md}")
    return sections


def _storm_row(out: Path, smoke: bool, console: Console) -> int:
    """Run the reconnect storm row alone and replace its table in RESULTS.md."""
    from bench import scale
    from bench.report import replace_table
    from bench.servers import pin_loadgen

    pinning = pin_loadgen()
    started = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] [cyan]storm[/] {text}", highlight=False)

    section = asyncio.run(scale.run_storm(scale.SMOKE if smoke else scale.FULL, out / "results", say))
    results_md = out / "RESULTS.md"
    note = (f"Row re-run alone by `python -m bench storm{' --smoke' if smoke else ''}` on "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC ({_machine()}; {pinning}; {section.seconds:.0f} s); "
            "the other tables are from the run named at the top.")
    replace_table(results_md, section.tables[0], note)
    console.print(f"replaced the reconnect storm table in {results_md}")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive fleet sizes, got {text!r}")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [n for n in names if n not in ("ours", "baseline")]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected ours and/or baseline, got {text!r}")
    return names


def _run_mixed(out: Path, smoke: bool, console: Console) -> int:
    from bench import mixed

    started = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] [cyan]mixed[/] {text}", highlight=False)

    from bench.servers import pin_loadgen

    pin_loadgen()
    section = asyncio.run(mixed.run(mixed.SMOKE if smoke else mixed.FULL, out / "results", say))
    section.intro = (f"_Written by `python -m bench mixed{' --smoke' if smoke else ''}` on "
                     f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {_machine()}; the daemon on core 0, the "
                     f"simulated stations in the bench process._\n\n{section.intro}")
    from bench.study.writeup import splice_section
    splice_section(out / "RESULTS.md", section)  # its own section only; the other parts' stay
    console.print(f"wrote {out / 'RESULTS.md'}")
    return 0


def _run_workers(out: Path, smoke: bool, console: Console) -> int:
    from bench import workers

    started = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] [cyan]workers[/] {text}", highlight=False)

    machine = _machine()  # the load average before the run
    section = asyncio.run(workers.run(workers.SMOKE if smoke else workers.FULL, out / "results", say))
    section.intro = (f"_Written by `python -m bench workers{' --smoke' if smoke else ''}` on "
                     f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine}._\n\n{section.intro}")
    from bench.study.writeup import splice_section
    splice_section(out / "RESULTS.md", section)  # its own section only; the other parts' stay
    console.print(f"wrote {out / 'RESULTS.md'}")
    return 0


def _run_cluster(out: Path, smoke: bool, stations: int | None, failover_stations: int | None, only: str | None,
                 console: Console) -> int:
    from bench import cluster
    from bench.servers import pin_loadgen
    from bench.study.writeup import splice_section

    started = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] [cyan]cluster[/] {text}", highlight=False)

    pinning = pin_loadgen()
    settings = (cluster.SMOKE if smoke else cluster.FULL).sized(stations, failover_stations,
                                                                (only,) if only else None)
    # one half: its figure goes to a scratch directory and its section to stdout, RESULTS.md keeps the full run's
    figures = Path(tempfile.mkdtemp(prefix="bench-cluster-only-")) if only else out / "results"
    section = asyncio.run(cluster.run(settings, figures, say))
    command = (f"python -m bench cluster{' --smoke' if smoke else ''}{f' --stations {stations}' if stations else ''}"
               f"{f' --failover-stations {failover_stations}' if failover_stations else ''}"
               f"{f' --only {only}' if only else ''}")
    section.intro = (f"_Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {_machine()}; "
                     f"{pinning.split(',')[0]}._\n\n{section.intro}")
    if only:
        sys.stdout.write(section.markdown(figures.parent) + "\n")
        return 0
    splice_section(out / "RESULTS.md", section)  # its own section only; the other parts' stay
    console.print(f"wrote {out / 'RESULTS.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fuzz"]:  # its own results (bench/results/fuzz.md), not a RESULTS.md section
        from bench import fuzz
        return fuzz.main(argv[1:])
    if argv[:1] == ["readback"]:  # a micro measurement printed, not a RESULTS.md section
        from bench import readback
        return readback.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description="Netbewust benchmarks (issue 6)")
    parser.add_argument("part", choices=("all", *PARTS, "study", "storm", "mixed", "workers", "cluster"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery in well under a minute")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for RESULTS.md and results/*.png (default: the bench package)")
    parser.add_argument("--sizes", type=_int_list, default=None,
                        help="reaction only: fleet sizes to run, comma separated (e.g. 100,1000)")
    parser.add_argument("--servers", type=_name_list, default=None,
                        help="reaction only: servers to run, comma separated (ours, baseline)")
    parser.add_argument("--stations", type=int, default=None,
                        help="cluster only: stations in the reaction's fleet (default 10,000; 60 with --smoke)")
    parser.add_argument("--failover-stations", type=int, default=None,
                        help="cluster only: stations in the failover's fleet, a third on the killed node "
                             "(default 30,000; 60 with --smoke)")
    parser.add_argument("--only", choices=("reaction", "failover"), default=None,
                        help="cluster only: run one half; its section is printed, RESULTS.md is left as it is")
    parser.add_argument("--jobs", type=int, default=None, help="study only: worker processes (default 2)")
    args = parser.parse_args(argv)
    if (args.sizes or args.servers) and args.part != "reaction":
        parser.error("--sizes and --servers apply to the reaction part only")
    if args.jobs is not None and (args.part != "study" or args.jobs < 1):
        parser.error("--jobs applies to the study part only and must be >= 1")
    if args.stations is not None and (args.part != "cluster" or args.stations < 3):
        parser.error("--stations applies to the cluster part only and must be >= 3")
    if args.failover_stations is not None and (args.part != "cluster" or args.failover_stations < 3):
        parser.error("--failover-stations applies to the cluster part only and must be >= 3")
    if args.only is not None and args.part != "cluster":
        parser.error("--only applies to the cluster part only")
    out = args.out or BENCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    if args.part == "study":
        from bench.study.cli import run_study
        return run_study(out, smoke=args.smoke, jobs=args.jobs, console=console)
    if args.part == "storm":
        return _storm_row(out, args.smoke, console)
    if args.part == "mixed":
        return _run_mixed(out, args.smoke, console)
    if args.part == "workers":
        return _run_workers(out, args.smoke, console)
    if args.part == "cluster":
        return _run_cluster(out, args.smoke, args.stations, args.failover_stations, args.only, console)
    parts = list(PARTS) if args.part == "all" else [args.part]
    results_md = out / "RESULTS.md"
    previous = results_md.read_text(encoding="utf-8") if results_md.exists() else ""
    sections = asyncio.run(run_parts(parts, results_md, out / "results", args.smoke, console,
                                     args.sizes, args.servers))
    if args.part != "all" and previous:  # one part re-run: only its section changes
        results_md.write_text(replace_sections(previous, results_md.read_text(encoding="utf-8")), encoding="utf-8")
    from bench.study.writeup import keep_section
    keep_section(previous, results_md)  # the study's section is written by `study` alone
    from bench.mixed import SECTION_TITLE as MIXED
    keep_section(previous, results_md, MIXED)  # and the mixed fleet's by `mixed` alone
    from bench.workers import SECTION_TITLE as WORKERS
    keep_section(previous, results_md, WORKERS)  # and the workers' by `workers` alone
    from bench.cluster import SECTION_TITLE as CLUSTER
    keep_section(previous, results_md, CLUSTER)  # and scale-out's by `cluster` alone
    return 1 if any("error" in s.data for s in sections) else 0


def replace_sections(previous: str, fresh: str) -> str:
    """``previous`` with each ``## `` section of ``fresh`` put in place of the one of the same
    title (or added at the end); the rest of ``previous``, its heading included, stays."""
    def split(text: str) -> tuple[str, list[str]]:
        head, *parts = text.split("\n## ")
        return head, ["## " + part.rstrip("\n") for part in parts]

    head, old = split(previous)
    _, new = split(fresh)
    title = lambda section: section.split("\n", 1)[0]  # noqa: E731
    by_title = {title(section): section for section in new}
    merged = [by_title.pop(title(section), section) for section in old] + list(by_title.values())
    return "\n\n".join([head.rstrip("\n"), *merged]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
