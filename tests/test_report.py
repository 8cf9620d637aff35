"""``csms report`` end to end: a daemon process runs a short evening with third-party stations (one
ignores its profile, one refuses it), is stopped, and the report made from its store is opened in
headless Chromium. A screenshot is saved under test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.grid_outside import ENV, REPO, Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.test_dashboard import ARTIFACTS, chromium

GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 100, "base_load": 4, "members": [{"station": "RP-*"}]}},
    "planning": {"replan_interval_s": 1, "min_push_interval_s": 0, "verify_after_s": 2},
    "history": {"resolution_s": 0.5, "hours": 1, "save_interval_s": 1},
}


class Refusing(LibStation):
    def install(self, evse_id: int, profile: dict[str, Any]) -> str:
        status = super().install(evse_id, profile)
        return "Rejected" if profile["charging_profile_purpose"] == "TxProfile" else status


async def csms(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", *args, cwd=REPO, env=ENV,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_report_of_a_short_evening(tmp_path: Path) -> None:
    site = Site(tmp_path, GRID)
    over, refusing = LibStation("RP-OVER", obey=False), Refusing("RP-REJ")
    honest = [LibStation(f"RP-{i}") for i in range(3)]
    since = datetime.now(UTC) - timedelta(seconds=5)
    async with daemon(site) as running, Api(site) as api:
        try:
            for st in (over, refusing, *honest):
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            status, _ = await api.post("/api/grid/sessions/RP-0/1/need",
                                       {"energy_kwh": 30, "guaranteed_kwh": 2, "departure": "2099-01-01T07:00:00Z"})
            assert status == 200
            await asyncio.sleep(3)
            status, _ = await api.post("/api/grid/transformers/T1/limit",
                                       {"signal_id": "rep-1", "limit_kw": 18, "source": "dso"})
            assert status == 202
            deadline = time.monotonic() + 30
            while not [e for e in await api.events("finding") if e.get("station_id") == "RP-OVER"]:
                assert time.monotonic() < deadline, "no over-draw finding"
                await asyncio.sleep(0.5)
            await asyncio.sleep(4)  # some load above the limit after the reaction window
            for st in (over, *honest):
                await st.end_transaction(1)
            await asyncio.sleep(1.5)
        finally:
            for st in (over, refusing, *honest):
                await st.stop()
        assert await running.stop() == 0  # a clean stop saves the history
    until = datetime.now(UTC) + timedelta(seconds=1)
    config = str(tmp_path / "csms.yaml")
    out = tmp_path / "report"

    code, stdout, stderr = await csms("report", "--config", config, "--since", since.isoformat(),
                                      "--until", until.isoformat(), "--out", str(out))
    assert code == 0, stderr
    assert f"report written: {out / 'index.html'}" in stdout
    assert (out / "T1-load.png").stat().st_size > 20_000 and (out / "T1-sessions.png").stat().st_size > 10_000
    # A period with nothing in it says so (and draws nothing), it does not fail.
    empty = tmp_path / "empty"
    code, _, stderr = await csms("report", "--config", config, "--since", (since - timedelta(hours=3)).isoformat(),
                                 "--until", (since - timedelta(hours=2)).isoformat(), "--out", str(empty))
    assert code == 0, stderr
    page = (empty / "index.html").read_text()
    assert "No load history stored for this period" in page and "No session ended in this period" in page
    assert not list(empty.glob("*.png"))
    # Bad input is a usage error naming the option, not a traceback.
    code, _, stderr = await csms("report", "--config", config, "--since", "yesterday")
    assert code == 2 and "--since/--until" in stderr
    code, _, stderr = await csms("report", "--config", config, "--since", until.isoformat(),
                                 "--until", since.isoformat())
    assert code == 2 and "before --until" in stderr

    async with chromium() as page:
        await page.send("Page.navigate", {"url": (out / "index.html").as_uri()})
        await page.wait_for("document.readyState === 'complete' && [...document.images].length === 2 && "
                            "[...document.images].every(i => i.complete && i.naturalWidth > 600)", 15, "plots loaded")
        text = await page.eval("document.body.innerText")
        cards = await page.eval("Object.fromEntries([...document.querySelectorAll('.card')].map(c => "
                                "[c.querySelector('span').textContent, [c.querySelector('b').textContent, "
                                "c.classList.contains('bad')]]))")
        assert cards["sessions served"] == ["4", False], cards
        # Seconds of charging deliver no guarantee, but every car left long before its departure: none judged.
        assert cards["guaranteed minimum delivered"] == ["0/0", False], cards
        assert cards["left before their departure"] == ["4", False], cards
        above_late, flagged = cards["above the limit after the reaction window"]
        assert float(above_late.split()[0]) > 0 and flagged, cards  # the car that ignored its profile
        assert float(cards["energy taken"][0].split()[0]) > 0
        assert int(cards["profiles sent"][0]) >= 5
        assert cards["verification findings"][1] and "overdraw" in text
        assert re.search(r"Rejected: \d+", text), "the refused profiles are counted"
        rows = await page.eval("[...document.querySelectorAll('table.sessions tbody tr')].map(r => r.innerText)")
        assert len(rows) == 4 and any("RP-0/1" in r and "30.00" in r and "2.00" in r and "api" in r for r in rows)
        assert all("left early" in r for r in rows), rows
        assert await page.eval("document.querySelectorAll('table.intervals tbody tr').length") >= 1
        await page.screenshot(ARTIFACTS / "report.png")
        assert (ARTIFACTS / "report.png").stat().st_size > 50_000
        assert not [c for c in page.console if c.startswith("exception")], page.console
