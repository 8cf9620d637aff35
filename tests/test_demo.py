"""`csms demo` end to end: a short compressed evening, in-process, no broker."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from csms.cli import parse
from demo.evening import LIMIT_STEPS, main, run_demo


async def test_demo_keeps_the_limit_discharges_in_the_dip_and_writes_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    text = io.StringIO()
    result = await run_demo(Console(file=text, width=120), stations_n=12, seconds=40, out=out, seed=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    printed = text.getvalue()
    assert "drivers at departure" in printed and "given back (V2G)" in printed and str(out) in printed
    assert "limit kept (settlement)" in printed and "limit kept (per minute)" in printed
    drivers = result["figures"]["drivers"]
    assert 0 < drivers["battery_kwh"] <= drivers["need_kwh"] + 1e-6  # no car gets more than it wanted
    assert result["discharged_kwh"] > 0  # the dip below the non-EV load made the V2G cars give energy back
    assert result["paused_sessions"] > 0
    assert len(result["reactions"]) >= len(LIMIT_STEPS)  # each announced limit, and again when it starts
    samples = result["samples"]
    # Per 15-minute settlement interval the transformer stays under the limit (the grid operator
    # announces each limit half an hour ahead): less than 1 % of the evening's energy goes over.
    total_kwh = sum((s.base_kw + s.ev_kw) * (b.at - s.at).total_seconds() for s, b in zip(samples, samples[1:])) / 3600
    assert result["over_kwh"] < 0.01 * total_kwh
    dip = [s for s in samples if s.limit_kw < s.base_kw]
    assert dip and min(s.ev_kw for s in dip) < 0


def test_demo_is_a_cli_subcommand_with_checked_arguments() -> None:
    args = parse(["demo", "--stations", "5", "--seconds", "20"])
    assert (args.demo_args, args.command) == (["--stations", "5", "--seconds", "20"], "demo")  # for `python -m demo`
    assert main(["--seconds", "1"]) == 2
    assert main(["--stations", "1000"]) == 2
