"""Issue 16, item 6: a store outage must not flood the log.

Redis is cut off behind a TCP proxy (the shared server keeps running). Every CALL during the
outage is refused with InternalError (nothing is acknowledged), but the log gets one traceback
per incident and error class, then a count, never a traceback per message.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.api_fixture import api_daemon
from tests.edge_kit import TcpProxy, backend_overrides
from tests.waiting import until

OUTAGE_CALLS = 200


def _csms(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name.startswith("csms")]


@pytest.mark.redis
async def test_a_redis_outage_logs_one_traceback_per_class_then_counts(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    proxy = TcpProxy(6379)
    await proxy.start()
    try:
        async with backend_overrides("redis", tmp_path, f"redis://127.0.0.1:{proxy.port}/0") as store, \
                api_daemon(tmp_path, store=store, logging={"level": "INFO"}) as api:
            st = await api.station("OUTAGE", evses=1)
            status = {"timestamp": "2024-06-01T10:00:00Z", "connectorStatus": "Occupied", "evseId": 1,
                      "connectorId": 1}
            caplog.clear()
            with caplog.at_level(logging.INFO):
                await proxy.cut()
                for _ in range(OUTAGE_CALLS):
                    reply = await st.call("StatusNotification", status)
                    assert reply[0] == 4 and reply[2] == "InternalError", reply  # never acknowledged

                def flush_failed() -> bool:
                    return any("last-seen flush" in r.getMessage() for r in caplog.records)
                await until(flush_failed, timeout=15, what="the periodic last-seen flush to meet the outage")
                outage = _csms(caplog.records)
                await proxy.restore()
                assert (await st.call("StatusNotification", status))[0] == 3  # the store is back

                def summary() -> list[str]:
                    return [r.getMessage() for r in _csms(caplog.records)[len(outage):]
                            if str(OUTAGE_CALLS - 1) in r.getMessage()]
                await until(summary, what=f"a summary line counting the {OUTAGE_CALLS - 1} further failures")

                def flush_works() -> bool:  # the flush loop outlived the outage
                    return any("last-seen flush works again" in r.getMessage() for r in caplog.records)
                await until(flush_works, timeout=15, what="the last-seen flush back after the outage")
            tracebacks = [r for r in outage if r.exc_info]
            classes = {(r.exc_info[0], r.name) for r in tracebacks if r.exc_info}
            assert len(tracebacks) == len(classes) <= 3, [r.getMessage() for r in tracebacks]
            loud = [r for r in outage if r.levelno >= logging.WARNING]
            assert len(loud) <= 5, [r.getMessage() for r in loud]
            assert len(outage) <= OUTAGE_CALLS // 4, f"{len(outage)} log lines for {OUTAGE_CALLS} failed calls"
            text = "\n".join(r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
                             for r in outage)
            assert len(text) < 64 * 1024, f"{len(text)} bytes of log for one outage"
    finally:
        await proxy.stop()
