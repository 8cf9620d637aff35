"""Part 5, the study (issue 19): the whitepaper's numbers under documented Dutch assumptions.

`python -m bench study [--smoke] [--out DIR] [--jobs N]` simulates one residential 400 kVA
transformer for eight weeks per point and writes docs/study.md (assumptions with sources, method,
every table), the study section of bench/RESULTS.md and PNG figures in bench/results/.

Modules: `inputs` (public data and sources), `fleet` (calibrated sessions), `scenario` (the
neighbourhood), `engine` (the discrete-time simulation around the planner), `capacity` (the search
that runs until it fails), `flex` (deliverable flexibility, the UFTP aggregator's question),
`parts` (the four questions), `writeup` (documents and figures).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import Section
from bench.study import parts, writeup
from bench.study.capacity import Capacity
from bench.study.fleet import FleetSpec
from bench.study.scenario import Neighbourhood


@dataclass(frozen=True)
class StudySettings:
    hood: Neighbourhood = field(default_factory=Neighbourhood)
    hosting_resolution: float = 0.05
    sensitivity_resolution: float = 0.06
    sensitivity_rows: int | None = None  # None: every row of parts.sensitivities
    contract_cps: int = 100
    tariff_cps: int = 200
    bid_weeks: int = 2
    lp_check_weeks: int = 2
    jobs: int = 2  # worker processes for the independent parts (1: everything in this process)


FULL = StudySettings()
# A 100 kW transformer with 40 households and one week: the same machinery, small numbers.
SMOKE = StudySettings(hood=Neighbourhood(transformer_kw=100.0, households=40, weeks=1, fleet=FleetSpec()),
                      hosting_resolution=0.2, sensitivity_resolution=0.3, sensitivity_rows=1, contract_cps=20,
                      tariff_cps=40, bid_weeks=1, lp_check_weeks=1, jobs=1)


def _evening_parts(s: StudySettings) -> tuple[parts.Contract, parts.Redispatch, parts.Tariffs, list[str]]:
    """Contract, redispatch and tariffs (independent of the hosting search), with their log lines.
    They run the planner as the daemon does (`plan`'s default, the LP refinement when it fits)."""
    lines: list[str] = []
    say = lines.append
    hood = s.hood.with_(planner_method="auto")
    c = parts.contract(hood, s.contract_cps, say)
    r = parts.redispatch(hood.with_(weeks=s.bid_weeks), say, scale=s.hood.transformer_kw / 400.0)
    t = parts.tariffs(hood, s.tariff_cps, say)
    return c, r, t, lines


def compute(s: StudySettings, say: Callable[[str], None], step: Callable[[str], None] | None = None) -> writeup.Results:
    """Run every part. With `jobs` > 1 the two smart capacity searches, the evening parts and the
    sensitivity rows run in worker processes (queued longest first); uncontrolled is closed form."""
    started = time.monotonic()
    step = step or (lambda _name: None)
    pool = ProcessPoolExecutor(max_workers=s.jobs) if s.jobs > 1 else None
    try:
        unc = parts.uncontrolled_capacity(s.hood)
        say(f"hosting: uncontrolled {unc.label()}; simulated {parts.describe_points(unc)}")
        smart = ("smart + pause", "smart (no pause)")
        caps: dict[str, Capacity] = {"uncontrolled": unc}
        if pool is None:
            for v in smart:
                caps[v] = parts.smart_capacity(s.hood, v, unc.capacity or 10, s.hosting_resolution)
                say(f"hosting: {v} {caps[v].label()}; simulated {parts.describe_points(caps[v])}")
        else:
            futures = {v: pool.submit(parts.smart_capacity, s.hood, v, unc.capacity or 10, s.hosting_resolution)
                       for v in smart}
            evening = pool.submit(_evening_parts, s)
            for v in smart:
                caps[v] = futures[v].result()
                say(f"hosting: {v} {caps[v].label()}; simulated {parts.describe_points(caps[v])}")
        host = parts.Hosting({v: caps[v] for v in parts.VARIANTS}, parts.design_rule(s.hood))
        step("hosting")
        checks_at = [(v, caps[v].first_fail) for v in smart if caps[v].first_fail]
        checks = ([pool.submit(parts.lp_check, s.hood, v, n, s.lp_check_weeks) for v, n in checks_at]
                  if pool is not None else [])
        rows = parts.sensitivities(s.hood)[:s.sensitivity_rows]
        sens = parts.sensitivity(rows, host, say, resolution=s.sensitivity_resolution, pool=pool)
        lp = ([f.result() for f in checks] if pool is not None
              else [parts.lp_check(s.hood, v, n, s.lp_check_weeks) for v, n in checks_at])
        for chk in lp:
            say(f"LP check {chk.variant} at {chk.n}: served {chk.heuristic_served:.2%} (heuristic) vs "
                f"{chk.auto_served:.2%} (LP when it fits) over {chk.weeks} weeks")
        step("sensitivity")
        c, r, t, lines = _evening_parts(s) if pool is None else evening.result()
        for line in lines:
            say(line)
        step("contract, redispatch, tariffs")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    cpu = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = sum(u.ru_utime + u.ru_stime for u in cpu)
    return writeup.Results(s.hood, host, rows, sens, c, r, t, s.bid_weeks, lp, time.monotonic() - started, cpu_s)


async def run(settings: StudySettings, out_dir: Path, say: Callable[[str], None], *, docs_md: Path,
              header: str = "", step: Callable[[str], None] | None = None) -> Section:
    """Compute the study, write its figures to `out_dir` and docs/study.md to `docs_md`."""
    results = compute(settings, say, step)
    sec = writeup.section(results, out_dir)
    docs_md.parent.mkdir(parents=True, exist_ok=True)
    docs_md.write_text(writeup.study_markdown(results, sec, docs_md, header), encoding="utf-8")
    return sec
