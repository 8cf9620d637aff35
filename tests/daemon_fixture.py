"""Run a real daemon on 127.0.0.1 (ephemeral port, SQLite file in a temp dir) inside a test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csms.app import Daemon
from csms.config import Config, parse_config


def test_config(tmp_path: Path, **overrides: Any) -> Config:
    """A config for tests: port 0, SQLite under tmp_path, short call timeout; ``overrides`` per section."""
    data: dict[str, Any] = {
        "websocket": {"host": "127.0.0.1", "port": 0, "call_timeout_s": 5},
        "store": {"sqlite_path": str(tmp_path / "csms.db")},
        "registration": {"accept_unknown_id_tokens": True},
        "logging": {"level": "DEBUG"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return parse_config(data, "<test>")


@dataclass
class RunningDaemon:
    daemon: Daemon

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.daemon.ws_port}{self.daemon.config.websocket.path_prefix}"

    def station_url(self, station_id: str) -> str:
        return f"{self.ws_url}/{station_id}"


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningDaemon]:
    daemon = Daemon(test_config(tmp_path, **overrides))
    await daemon.start()
    try:
        yield RunningDaemon(daemon)
    finally:
        await daemon.stop()
