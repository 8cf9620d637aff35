"""`csms demo` end to end: a short compressed evening, in-process, no broker."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from csms.cli import parse
from demo.evening import LIMIT_STEPS, Outcome, Sample, _figure, main, run_demo


async def test_demo_keeps_the_limit_discharges_in_the_dip_and_writes_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    text = io.StringIO()
    result = await run_demo(Console(file=text, width=120), stations_n=12, seconds=40, out=out, seed=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    printed = text.getvalue()
    assert "drivers at departure" in printed and "given back (V2G)" in printed and str(out) in printed
    assert "limit kept (settlement)" in printed and "limit kept (per minute)" in printed
    # piped: the last live frame, then a blank line and a rule, then the summary
    assert "\n\n" + "─" in printed and " Summary " in printed.split("\n\n")[-1].splitlines()[0]
    assert "DEMO-03 is a deliberate test: its car does not resume charging after a pause" in " ".join(printed.split())
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


def test_demo_plot_keeps_the_legend_off_the_curves_and_dates_readable() -> None:
    start = datetime(2026, 11, 30, 16, tzinfo=UTC)
    outcome = Outcome(samples=[Sample(start + timedelta(minutes=10 * i), 250.0 if i < 6 else 170.0,
                                      70.0 + min(i, 12) * 4, 60.0 if i < 30 else 5.0, 5, 0, 0) for i in range(93)])
    fig = _figure(outcome)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend, plot_area = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert not legend.overlaps(plot_area)  # under the axes: the 16:00-17:00 rise stays visible
        assert 0 <= legend.y0 and legend.x1 <= fig.bbox.x1  # and inside the picture
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(re.fullmatch(r"\d\d [A-Z][a-z]{2} \d\d:\d\d", label) for label in labels), labels
        assert labels[0] == "30 Nov 16:00" and "01 Dec 00:00" in labels
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
