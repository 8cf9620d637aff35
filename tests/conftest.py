from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.grid_outside import RUNNING

TASK_DUMP_LEAD_S = 15.0
DAEMON_DUMP_WAIT_S = 2.0
DAEMON_LOG_LINES = 150


@pytest.fixture
async def csms(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """A running daemon with the default test config."""
    async with running_daemon(tmp_path) as d:
        yield d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Shortly before pytest-timeout fails a hung test, print where every pending asyncio task
    waits: the timeout's own dump shows only threads, and a hung test's loop idles in select()."""
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    timer = threading.Timer(max(timeout - TASK_DUMP_LEAD_S, 1.0), _print_pending_tasks, args=(item.nodeid,))
    timer.daemon = True
    if timeout > 0:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _print_pending_tasks(nodeid: str) -> None:
    # type() rather than isinstance(): a dead weakref proxy among the objects raises on isinstance()
    tasks = [o for o in gc.get_objects() if issubclass(type(o), asyncio.Task) and not o.done()]
    print(f"--- {nodeid}: {len(tasks)} pending asyncio task(s), {TASK_DUMP_LEAD_S:.0f} s before the timeout ---",
          file=sys.stderr)
    for task in tasks:
        with contextlib.suppress(Exception):  # the loop runs on meanwhile: a diagnostic, not a contract
            task.print_stack(limit=12, file=sys.stderr)
    _print_daemons()


def _print_daemons() -> None:
    """Each running daemon's thread stacks (SIGUSR1: faulthandler) and the end of its log."""
    daemons = list(RUNNING)
    for daemon in daemons:
        with contextlib.suppress(ProcessLookupError):
            daemon.proc.send_signal(signal.SIGUSR1)
    time.sleep(DAEMON_DUMP_WAIT_S)  # the test's loop reads their stderr meanwhile
    for daemon in daemons:
        print(f"--- daemon pid {daemon.proc.pid}: the last {DAEMON_LOG_LINES} lines of its stderr ---",
              file=sys.stderr)
        print("".join(daemon.log[-DAEMON_LOG_LINES:]), file=sys.stderr)
