"""The live dashboard in real headless Chromium (driven over the DevTools protocol, no Playwright).

A daemon with grid control and two simulated stations charging runs in the test; the page is opened
with the token in the URL; a limit is posted through the API and the chart and session table must
follow without a reload. A screenshot is saved under test-artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from tests.test_api_grid import charging_site

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-port=0", "--window-size=1280,1000"]


class Page:
    """One browser tab over CDP: send commands, evaluate JavaScript, wait for conditions."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self._pending:
                fut = self._pending.pop(msg["id"])
                if not fut.done():
                    if "error" in msg:
                        fut.set_exception(RuntimeError(f"CDP error: {msg['error']}"))
                    else:
                        fut.set_result(msg.get("result", {}))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"]["args"]
                self.console.append(f"{msg['params']['type']}: " + " ".join(str(a.get("value", "")) for a in args))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> Any:
        mid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[mid] = fut
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session_id
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, 15)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"JS failed: {expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while True:  # the page may still be loading: an error counts as "not yet"
            value = await self.eval(guarded)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or expression} not true within {timeout} s; console: {self.console}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        data = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Chromium is needed: apt-get install -y chromium (.ci/run installs it)"
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # its helpers may still write
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = await asyncio.wait_for(asyncio.to_thread(_devtools_url, proc), 30)
            async with websockets.connect(url, max_size=64 * 1024 * 1024) as ws:
                probe = Page(ws, "")
                target = await probe.send("Target.createTarget", {"url": "about:blank"}, session=False)
                attached = await probe.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                                      "flatten": True}, session=False)
                probe.session_id = attached["sessionId"]
                for domain in ("Page.enable", "Runtime.enable"):
                    await probe.send(domain)
                await probe.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1000,
                                                                        "deviceScaleFactor": 1, "mobile": False})
                try:
                    yield probe
                finally:
                    probe._reader.cancel()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _devtools_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:  # Chromium prints the endpoint on stderr at startup
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"Chromium exited ({proc.wait()}) without a DevTools endpoint")


CARD = "document.querySelector('article.transformer[data-transformer=\"T1\"]')"


async def test_dashboard_follows_a_posted_limit_live(tmp_path: Path) -> None:
    async with charging_site(tmp_path, n=2) as (api, _stations), chromium() as page:
        await page.send("Page.navigate", {"url": f"{api.url}/?token={api.admin_token}"})
        await page.wait_for(f"{CARD} !== null && {CARD}.dataset.limitKw === '100'", 15, "transformer card")
        # The token left the address bar and lives in sessionStorage.
        assert await page.eval("location.search") == ""
        assert await page.eval("sessionStorage.getItem('netbewust.apiToken')") == api.admin_token
        await page.wait_for("document.getElementById('stream-state').textContent === 'live'", 10, "live stream")
        await page.wait_for(f"{CARD}.querySelectorAll('tbody tr[data-session]').length === 2", 10, "session rows")
        await page.wait_for(f"[...{CARD}.querySelectorAll('tbody tr[data-session]')].every("
                            "r => r.dataset.state === 'charging')", 10, "sessions charging")
        # Let the chart gather a little history at full power.
        await page.wait_for(f"Number({CARD}.querySelector('canvas').dataset.points) >= 4", 15, "chart history")
        before_points = int(await page.eval(f"{CARD}.querySelector('canvas').dataset.points"))
        before_load = float(await page.eval("window.netbewust.lastSnapshot.transformers.T1.measured_kw"))
        assert before_load > 10

        status, _ = await api.post("/api/grid/transformers/T1/limit", {"signal_id": "dash-1", "limit_kw": 8,
                                                                         "source": "dso"})
        assert status == 202
        # Without a reload: the card, the chart and the table follow.
        await page.wait_for(f"{CARD}.dataset.limitKw === '8'", 10, "limit on the card")
        assert "dso" in await page.eval(f"{CARD}.querySelector('.source').textContent")
        await page.wait_for(f"{CARD}.querySelector('canvas').dataset.lastLimit === '8'", 10, "limit in the chart")
        await page.wait_for(
            f"[...{CARD}.querySelectorAll('tbody tr[data-session] td.setpoint')]"
            ".map(td => parseFloat(td.textContent)).reduce((a, b) => a + b, 0) <= 8.05", 10, "setpoints in the table")
        await page.wait_for("window.netbewust.lastSnapshot.transformers.T1.measured_kw <= 8.5", 15,
                            "metered load under the limit")
        await page.wait_for(f"{CARD}.querySelector('.measured').textContent !== '{before_load:.1f} kW'", 5)
        assert int(await page.eval(f"{CARD}.querySelector('canvas').dataset.points")) > before_points
        log = await page.eval("[...document.querySelectorAll('#event-log li')].map(li => li.textContent).join('\\n')")
        (ARTIFACTS / "dashboard-log.txt").parent.mkdir(exist_ok=True)
        (ARTIFACTS / "dashboard-log.txt").write_text(log)
        assert re.search(r"grid\.limitT1: 8\.0 kW \(\S*dso\S*\)", log) and "grid.push" in log
        assert await page.eval("document.location.pathname") == "/"  # never reloaded or navigated away
        # A few more samples so the screenshot shows the drop, then save it.
        target = int(await page.eval(f"{CARD}.querySelector('canvas').dataset.points")) + 3
        await page.wait_for(f"Number({CARD}.querySelector('canvas').dataset.points) >= {target}", 15)
        await page.screenshot(ARTIFACTS / "dashboard.png")
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        assert not [c for c in page.console if c.startswith("exception")], page.console


async def test_dashboard_asks_for_a_token_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    from tests.api_fixture import api_daemon

    async with api_daemon(tmp_path) as api, chromium() as page:
        await page.send("Page.navigate", {"url": f"{api.url}/"})
        await page.wait_for("!document.getElementById('login').hidden", 10, "login form")
        await page.eval("document.getElementById('token-input').value = 'wrong'; "
                        "document.getElementById('login-form').requestSubmit(); true")
        await page.wait_for("document.getElementById('login-error').textContent.includes('invalid API token')", 10)
        await page.eval(f"document.getElementById('token-input').value = '{api.admin_token}'; "
                        "document.getElementById('login-form').requestSubmit(); true")
        await page.wait_for("!document.getElementById('main').hidden", 10, "dashboard shown")
        await page.wait_for("document.querySelector('.no-grid')?.textContent === 'grid control is not configured'",
                            10, "no-grid notice")


# History, problems, filter and sort --------------------------------------------------------------
HISTORY_GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 100, "base_load": 6, "members": [{"station": "DB-*"}]}},
    "planning": {"replan_interval_s": 1, "min_push_interval_s": 0, "verify_after_s": 2},
    "history": {"resolution_s": 0.5, "hours": 1, "save_interval_s": 2},
}
ROWS = f"[...{CARD}.querySelectorAll('tbody tr[data-session]')]"


async def test_dashboard_draws_history_on_load_and_flags_problems(tmp_path: Path) -> None:
    """The daemon has been running under a limit a car ignores and a station refuses: the page shows
    that past at once (EV and non-EV load, red where the load was over the limit), flags the two
    sessions, and its table filters and sorts."""
    from tests.grid_outside import ADMIN_TOKEN, Api, Site, daemon
    from tests.ocpp_station import LibStation

    class Refusing(LibStation):
        """Answers every TxProfile with Rejected (as stations do whose firmware dislikes it)."""

        def install(self, evse_id: int, profile: dict[str, Any]) -> str:
            status = super().install(evse_id, profile)
            return "Rejected" if profile["charging_profile_purpose"] == "TxProfile" else status

    site = Site(tmp_path, HISTORY_GRID)
    stations = [LibStation("DB-OVER", obey=False), Refusing("DB-REJ"),
                *(LibStation(f"DB-{i:02d}") for i in range(8))]
    async with daemon(site), Api(site) as api:
        try:
            for st in stations:
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            for sid in ("DB-00", "DB-01"):
                status, _ = await api.post(f"/api/grid/sessions/{sid}/1/need",
                                           {"energy_kwh": 12, "departure": "2099-01-02T07:30:00Z"})
                assert status == 200
            status, _ = await api.post("/api/grid/transformers/T1/limit",
                                       {"signal_id": "hist-1", "limit_kw": 20, "source": "operator"})
            assert status == 202
            deadline = time.monotonic() + 30
            while True:  # the daemon's own history: enough of it, with the load over the limit in it
                history = await api.get("/api/grid/transformers/T1/history")
                over = [load for load, limit in zip(history["load_kw"], history["limit_kw"], strict=True)
                        if load is not None and limit is not None and load > limit]
                if len(history["t"]) >= 16 and len(over) >= 3:
                    break
                assert time.monotonic() < deadline, history
                await asyncio.sleep(0.5)
            async with chromium() as page:
                opened = time.time()
                await page.send("Page.navigate", {"url": f"{site.api_url}/?token={ADMIN_TOKEN}"})
                canvas = f"{CARD}.querySelector('canvas')"
                await page.wait_for(f"Number({canvas}.dataset.historyPoints) >= 16", 10, "history drawn")
                first_t = float(await page.eval(f"{canvas}.dataset.firstT"))
                assert first_t <= (opened - 4) * 1000, "the chart starts before the page was opened"
                assert time.time() - opened < 8, "history shown right after load, not accumulated live"
                assert int(await page.eval(f"{canvas}.dataset.overPoints")) >= 1
                assert await page.eval(f"{canvas}.dataset.lastNonEv") == "6"
                note = await page.eval(f"{CARD}.querySelector('.history-note').textContent")
                assert re.match(r"history since \d{4}-\d{2}-\d{2} \d{2}:\d{2} \(0\.5 s steps\)", note), note
                legend = await page.eval(f"{CARD}.querySelector('.legend').textContent")
                assert "EV load" in legend and "non-EV load" in legend and "over the limit" in legend

                row = f"{CARD}.querySelector('tr[data-session=\"DB-%s/1\"]')"
                await page.wait_for(f"{ROWS}.length === 10", 10, "all sessions")
                await page.wait_for(f"{row % 'REJ'}.classList.contains('problem') && [...{row % 'REJ'}"
                                    ".querySelectorAll('.badge-alarm')].some(b => b.textContent === 'push Rejected')",
                                    10, "the refused push flagged")
                await page.wait_for(f"{row % 'OVER'}.classList.contains('problem') && "
                                    f"{row % 'OVER'}.querySelector('td.actual').classList.contains('over') && "
                                    f"{row % 'OVER'}.querySelector('.badge-alarm').textContent.startsWith('over setpoint')",
                                    15, "actual over the setpoint flagged")
                assert float(await page.eval(f"parseFloat({row % 'OVER'}.querySelector('td.actual').textContent)")) > \
                    float(await page.eval(f"parseFloat({row % 'OVER'}.querySelector('td.setpoint').textContent)")) + 0.5
                # The bar shows it too (red, full: the actual is the larger of the two).
                assert await page.eval(f"{row % 'OVER'}.querySelector('.fill.over').getBoundingClientRect().width "
                                       f"> 0.9 * {row % 'OVER'}.querySelector('.bar').getBoundingClientRect().width")
                departures = await page.eval(f"Object.fromEntries({ROWS}.map(r => "
                                             "[r.dataset.session, r.querySelector('td.departure').textContent]))")
                assert all(re.fullmatch(r"2099-01-0[12]\d{2}:\d{2}", departures[f"DB-0{i}/1"]) for i in (0, 1)), \
                    departures  # a date with the time (local: the day may differ from UTC's)
                assert departures["DB-02/1"] == "–"  # no need known: no departure either

                # Problems first by default; then filter, the problem view, and sorting by actual power.
                first_two = await page.eval(f"{ROWS}.slice(0, 2).map(r => r.dataset.session).sort().join()")
                assert first_two == "DB-OVER/1,DB-REJ/1"
                await page.eval(f"{CARD}.querySelector('.filter').value = 'db-0'; "
                                f"{CARD}.querySelector('.filter').dispatchEvent(new Event('input')); true")
                assert await page.eval(f"{ROWS}.length") == 8
                assert "8 of 10 sessions" in await page.eval(f"{CARD}.querySelector('.count').textContent")
                await page.eval(f"{CARD}.querySelector('.filter').value = ''; "
                                f"{CARD}.querySelector('.filter').dispatchEvent(new Event('input')); "
                                f"{CARD}.querySelector('.only').value = 'problems'; "
                                f"{CARD}.querySelector('.only').dispatchEvent(new Event('change')); true")
                await page.wait_for(f"{ROWS}.map(r => r.dataset.session).sort().join() === 'DB-OVER/1,DB-REJ/1'",
                                    10, "problems only")
                await page.eval(f"{CARD}.querySelector('.only').value = 'all'; "
                                f"{CARD}.querySelector('.only').dispatchEvent(new Event('change')); "
                                f"{CARD}.querySelector('th[data-sort=actual]').click(); true")
                actual = await page.eval(f"{ROWS}.map(r => parseFloat(r.querySelector('td.actual').textContent) || 0)")
                assert actual == sorted(actual, reverse=True) and len(actual) == 10, actual
                assert "sorted-desc" in await page.eval(f"{CARD}.querySelector('th[data-sort=actual]').className")
                await page.eval(f"{CARD}.querySelector('th[data-sort=problem]').click(); true")  # problems first again
                await page.screenshot(ARTIFACTS / "dashboard-history.png")
                assert (ARTIFACTS / "dashboard-history.png").stat().st_size > 20_000

                # Hundreds of sessions: the page's own render() given a snapshot of 600 (the live one comes
                # back with the next refresh): capped rows, the count, filter and sort still answer at once.
                big = await page.eval(f"""(() => {{
                    const snap = structuredClone(window.netbewust.lastSnapshot);
                    const t1 = snap.transformers.T1, model = t1.sessions[0];
                    t1.sessions = Array.from({{length: 600}}, (_, i) => ({{...model, station_id: `BIG-${{i}}`,
                        actual_kw: i % 97 === 0 ? 9 : 3, setpoint_kw: 3, push_status: 'Accepted',
                        fixed_reason: null, departure: '2099-01-01T06:00:00Z'}}));
                    const started = performance.now();
                    window.netbewust.render(snap);
                    const ms = performance.now() - started;
                    const filter = {CARD}.querySelector('.filter');
                    filter.value = 'BIG-42'; filter.dispatchEvent(new Event('input'));
                    const filtered = {ROWS}.map(r => r.dataset.session);
                    filter.value = ''; filter.dispatchEvent(new Event('input'));
                    return {{ms, rows: {ROWS}.length, count: {CARD}.querySelector('.count').textContent,
                             first: {ROWS}[0].dataset.session, filtered}};
                }})()""")
                assert big["rows"] == 300 and big["count"].startswith("600 of 600 sessions (first 300 shown"), big
                assert "7 with problems" in big["count"] and big["first"] == "BIG-0/1", big  # 0, 97, ... 582
                assert big["filtered"] == ["BIG-42/1", *(f"BIG-{i}/1" for i in range(420, 430))], big
                assert big["ms"] < 2000, big
                assert not [c for c in page.console if c.startswith("exception")], page.console
        finally:
            for st in stations:
                await st.stop()
