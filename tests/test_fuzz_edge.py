"""Issue 16: the bounded fuzz run, on each store backend (a larger run: ``python -m bench fuzz``).

A few thousand frames (schema-valid messages of every station action, mixed with the oddities
of issue 16) from several stations at once, checked answer by answer (bench/fuzz.py): no
InternalError for schema-valid input, every CALLERROR with the right id and code, binary frames
closed with 1003. Afterwards every stored row reads back (through the API, and the rows the API
does not show through the store's readers), resident memory stayed bounded and the live event
stream opened at the start still delivers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.fuzz import FuzzSettings, run, summary
from tests.api_fixture import Api, api_daemon
from tests.edge_kit import BACKENDS, backend_overrides, rss_bytes

SETTINGS = FuzzSettings(frames=2500, stations=8, seed=16, deadline_s=30.0)
RSS_GROWTH_MIB = 100


@pytest.fixture(params=BACKENDS)
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with backend_overrides(request.param, tmp_path) as store, api_daemon(tmp_path, store=store) as running:
        yield running


@pytest.mark.timeout(90)
async def test_fuzzed_frames_get_clean_answers_and_everything_stored_reads_back(api: Api) -> None:
    report = await run(api.running.ws_url, api.url, api.admin_token, SETTINGS, rss=rss_bytes)
    print(summary(report))
    assert report.violations == 0, "\n".join(report.examples)
    assert report.readback_errors == [], report.readback_errors
    assert report.stream_alive and report.stream_events > 0
    assert report.sent >= SETTINGS.frames // 2, f"only {report.sent} frames within {SETTINGS.deadline_s} s"
    assert sum(report.answers.get("valid", {}).values()) > report.sent // 3
    assert report.rss_mib["end"] - report.rss_mib["start"] < RSS_GROWTH_MIB, report.rss_mib
    # the rows the API does not show: the store's own readers must read them back too
    store = api.daemon.store
    for i in range(SETTINGS.stations):
        station_id = f"FUZZ-{i}"
        await store.list_station_messages(station_id)
        await store.list_security_events(station_id)
        await store.meter_samples(station_id)
        await store.list_variables(station_id)
        for tx in await store.list_transactions(station_id=station_id):
            await store.transaction_events(station_id, tx.transaction_id)
            await store.meter_samples(station_id, transaction_id=tx.transaction_id)
