from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.daemon_fixture import RunningDaemon, running_daemon


@pytest.fixture
async def csms(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """A running daemon with the default test config."""
    async with running_daemon(tmp_path) as d:
        yield d
