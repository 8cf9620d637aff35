"""The websocket edge: endpoint path and identity, subprotocols, frame size, reconnects, keepalive."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from csms.protocol.errors import StationOffline
from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.ocpp_client import RawStation
from tests.test_daemon_kit import wait_until


async def test_identity_is_the_percent_decoded_last_path_segment(csms: RunningDaemon) -> None:
    st = await RawStation.connect(csms.ws_url, "CS%3A01%C3%A9")
    await st.boot()
    assert (await csms.daemon.store.get_station("CS:01é")).vendor == "TestVendor"
    assert "CS:01é" in csms.daemon.connections
    await st.close()


@pytest.mark.parametrize("path", ["/elsewhere/CS1", "/ocpp/", "/ocpp/a/b"])
async def test_wrong_endpoint_path_is_refused_with_a_logged_reason(
        csms: RunningDaemon, caplog: pytest.LogCaptureFixture, path: str) -> None:
    url = f"ws://127.0.0.1:{csms.daemon.ws_port}{path}"
    with caplog.at_level(logging.WARNING, logger="csms.gateway"):
        with pytest.raises(InvalidStatus) as err:
            await websockets.connect(url, subprotocols=["ocpp2.0.1"])  # type: ignore[list-item]
    assert err.value.response.status_code == 404
    assert b"/ocpp/<stationId>" in err.value.response.body
    assert any("refused" in r.getMessage() and "expected path" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("path", ["/ocpp/" + "x" * 49, "/ocpp/has%20space", "/ocpp/CP%FF", "/ocpp/.."])
async def test_endpoint_with_an_impossible_identity_is_refused_with_400_and_the_reason(
        csms: RunningDaemon, caplog: pytest.LogCaptureFixture, path: str) -> None:
    url = f"ws://127.0.0.1:{csms.daemon.ws_port}{path}"
    with caplog.at_level(logging.WARNING, logger="csms.gateway"):
        with pytest.raises(InvalidStatus) as err:
            await websockets.connect(url, subprotocols=["ocpp2.0.1"])  # type: ignore[list-item]
    assert err.value.response.status_code == 400
    assert b"station identity in the path" in err.value.response.body
    assert any("refused" in r.getMessage() and "station identity" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("offered", [(), ("ocpp1.5",), ("ocpp3.0", "ocpp1.2")])
async def test_station_offering_no_supported_subprotocol_is_refused_at_the_handshake(
        csms: RunningDaemon, caplog: pytest.LogCaptureFixture, offered: tuple[str, ...]) -> None:
    with caplog.at_level(logging.WARNING, logger="csms.gateway"):
        with pytest.raises(InvalidStatus) as err:
            await websockets.connect(csms.station_url("OLD"), subprotocols=list(offered) or None)  # type: ignore[arg-type]
    assert err.value.response.status_code == 400
    assert b"ocpp2.0.1" in err.value.response.body
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert "'OLD'" in record.getMessage() and "subprotocol" in record.getMessage()
    assert "OLD" not in csms.daemon.connections


async def test_supported_subprotocol_is_chosen_among_several_offered(csms: RunningDaemon) -> None:
    st = await RawStation.connect(csms.ws_url, "MULTI", subprotocols=("ocpp1.6", "ocpp2.0.1"))
    assert st.ws.subprotocol == "ocpp2.0.1"
    assert (await st.boot())["status"] == "Accepted"
    await st.close()


async def test_frame_over_the_limit_is_closed_with_1009_and_the_daemon_stays_up(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, websocket={"max_frame_bytes": 4096}) as d:
        bystander = await RawStation.connect(d.ws_url, "SMALL")
        await bystander.boot()
        big = await RawStation.connect(d.ws_url, "BIG")
        await big.boot()
        await big.ws.send(json.dumps([2, "huge", "DataTransfer", {"vendorId": "x", "data": "y" * 5000}]))
        await asyncio.wait_for(big.ws.wait_closed(), 5)
        assert big.ws.close_code == 1009
        assert (await bystander.result("Heartbeat", {}))["currentTime"]
        again = await RawStation.connect(d.ws_url, "BIG")  # the station itself may come back
        assert (await again.result("Heartbeat", {}))["currentTime"]
        await again.close()
        await bystander.close()


async def test_reconnect_replaces_the_stale_connection(csms: RunningDaemon) -> None:
    old = await RawStation.connect(csms.ws_url, "RC")
    await old.boot()
    in_flight = asyncio.create_task(csms.daemon.commands.reset("RC"))
    await asyncio.wait_for(old.incoming_calls.get(), 2)
    new = await RawStation.connect(csms.ws_url, "RC")
    await asyncio.wait_for(old.ws.wait_closed(), 5)
    assert old.ws.close_code == 1000
    with pytest.raises(StationOffline):
        await asyncio.wait_for(in_flight, 2)
    assert (await new.result("Heartbeat", {}))["currentTime"]  # accepted before: no new boot needed
    new.auto_answer["ClearCache"] = {"status": "Accepted"}
    assert await csms.daemon.commands.call("RC", "ClearCache", {}) == {"status": "Accepted"}
    assert (await asyncio.wait_for(new.incoming_calls.get(), 2))[2] == "ClearCache"
    assert csms.daemon.connections["RC"].ws.remote_address == new.ws.local_address
    assert (await csms.daemon.store.get_station("RC")).connected
    await new.close()


class RawSocket:
    """A websocket client written by hand, so a test controls pings, pongs and closing handshakes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str, subprotocol: str = "ocpp2.0.1") -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self, timeout: float) -> tuple[int, bytes]:
        """The next frame from the server (opcode, payload); servers never mask."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(length)

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.writer.close()


PING, PONG, CLOSE = 0x9, 0xA, 0x8


async def _gone(d: RunningDaemon, station_id: str) -> bool:
    return station_id not in d.daemon.connections


async def test_keepalive_pings_at_the_configured_interval_and_drops_a_silent_station(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, websocket={"ping_interval_s": 0.2, "ping_timeout_s": 0.3}) as d:
        sock = await RawSocket.open(d.daemon.ws_port, "/ocpp/KEEPALIVE")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(3):  # a station that answers keeps being pinged and stays connected
            opcode, data = await sock.frame(timeout=2)
            assert opcode == PING
            sock.send(PONG, data)
        assert 0.4 <= loop.time() - start < 2.0  # three pings, about 0.2 s apart
        assert "KEEPALIVE" in d.daemon.connections
        opcode, _ = await sock.frame(timeout=2)  # the next ping goes unanswered ...
        assert opcode == PING
        opcode, data = await sock.frame(timeout=2)  # ... and the daemon gives up on the station
        assert opcode == CLOSE and struct.unpack("!H", data[:2])[0] == 1011
        sock.close()
        await wait_until(lambda: _gone(d, "KEEPALIVE"))


async def test_reconnect_is_served_at_once_even_if_the_old_socket_is_dead(csms: RunningDaemon) -> None:
    """A station reconnects because its old connection died: that socket never completes a closing
    handshake, and the new connection must not wait for it."""
    dead = await RawSocket.open(csms.daemon.ws_port, "/ocpp/HALFDEAD")  # never reads again
    new = await RawStation.connect(csms.ws_url, "HALFDEAD")
    boot = await asyncio.wait_for(new.boot(), 2)
    assert boot["status"] == "Accepted"
    dead.close()
    await new.close()
