"""A lean OCPP-J client for load generation: raw websocket frames over an asyncio Protocol.

The full simulator costs ~70 KB and about a millisecond of CPU per message; holding tens of
thousands of connections and pushing ten thousand messages a second from the one core the load
generator gets needs far less. This client does only what a station's socket must do (RFC 6455
handshake, text frames, ping/pong, close) and is callback driven, so one reply can trigger the
next send without a coroutine switch. Client frames carry an all-zero masking key: valid on the
wire (the server still unmasks every frame), and it saves the XOR pass in Python.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

ReplyCallback = Callable[["LeanStation", list[Any], float], None]
# (station, unique id, payload) -> response payload (dict), or None to answer CALLERROR NotImplemented.
CallHandler = Callable[["LeanStation", str, dict[str, Any]], "dict[str, Any] | None"]

_ZERO_MASK = b"\x00\x00\x00\x00"


def encode_frame(data: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame (masked with the zero key)."""
    n = len(data)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + _ZERO_MASK + data


class HandshakeError(ConnectionError):
    """The server refused the websocket upgrade (its status line is in the message)."""


class LeanStation(asyncio.Protocol):
    """One station's socket. Create with :func:`open_station`."""

    __slots__ = ("station_id", "path", "host", "transport", "ready", "closed", "handlers", "state",
                 "_buf", "_open", "_pending", "_next_id", "calls_in", "errors")

    def __init__(self, station_id: str, host: str, path: str, handlers: dict[str, CallHandler] | None = None) -> None:
        self.station_id = station_id
        self.host = host
        self.path = path
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.handlers = handlers or {}
        self.state: dict[str, Any] = {}  # free slot for the benchmark driving this station
        self._buf = bytearray()
        self._open = False
        self._pending: dict[str, tuple[float, ReplyCallback]] = {}
        self._next_id = 0
        self.calls_in = 0
        self.errors = 0

    # asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:buf.find(b"\r\n")]).decode("latin-1")
            del buf[:end + 4]
            if " 101 " not in status + " ":
                if not self.ready.done():
                    self.ready.set_exception(HandshakeError(f"{self.station_id}: {status}"))
                self.abort()
                return
            self._open = True
            if not self.ready.done():
                self.ready.set_result(None)
        while len(buf) >= 2:
            b1 = buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if b1 & 0x80:
                pos += 4  # a server must not mask; tolerate it by skipping the key (payload unread)
            if len(buf) < pos + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[pos:pos + n])
            del buf[:pos + n]
            if opcode == 0x1:
                self._message(payload)
            elif opcode == 0x9:
                self._write(encode_frame(payload, 0xA))
            elif opcode == 0x8:
                self._write(encode_frame(payload[:2], 0x8))
                self.abort()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.station_id}: connection lost during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # OCPP-J ------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def call(self, action: str, payload_json: str, on_reply: ReplyCallback) -> None:
        """Send a CALL; `on_reply(station, frame, seconds)` runs when its CALLRESULT/CALLERROR arrives."""
        self._next_id += 1
        uid = str(self._next_id)
        self._pending[uid] = (time.perf_counter(), on_reply)
        self._write(encode_frame(f'[2,"{uid}","{action}",{payload_json}]'.encode()))

    async def request(self, action: str, payload_json: str, timeout: float = 30.0) -> list[Any]:
        """Send a CALL and wait for its reply frame (for set-up phases, not the hot path)."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def done(_: LeanStation, frame: list[Any], __: float) -> None:
            if not fut.done():
                fut.set_result(frame)

        self.call(action, payload_json, done)
        return await asyncio.wait_for(fut, timeout)

    def _message(self, raw: bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.errors += 1
            return
        kind = msg[0]
        if kind == 2:
            self.calls_in += 1
            handler = self.handlers.get(msg[2])
            response = handler(self, msg[1], msg[3]) if handler is not None else None
            if response is None:
                out = [4, msg[1], "NotImplemented", f"{msg[2]} not simulated", {}]
            else:
                out = [3, msg[1], response]
            self._write(encode_frame(orjson.dumps(out)))
            return
        entry = self._pending.pop(msg[1], None)
        if entry is None:
            self.errors += 1
            return
        sent, on_reply = entry
        if kind == 4:
            self.errors += 1
        on_reply(self, msg, time.perf_counter() - sent)

    def close(self) -> None:
        if self.transport is not None and self._open:
            self._write(encode_frame(b"\x03\xe8", 0x8))
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket without a closing handshake (a network fault)."""
        self._open = False
        if self.transport is not None:
            self.transport.abort()


async def open_station(station_id: str, host: str, port: int, prefix: str,
                       handlers: dict[str, CallHandler] | None = None, timeout: float = 30.0,
                       local_host: str | None = None) -> LeanStation:
    """Connect and complete the websocket handshake (raises HandshakeError / OSError / TimeoutError).

    ``local_host``: the source address (127.0.0.x): one source address has only the machine's ephemeral
    port range (about 28,000) of sockets, so more connections than that need several."""
    loop = asyncio.get_running_loop()
    path = f"{prefix.rstrip('/')}/{station_id}"
    proto = LeanStation(station_id, f"{host}:{port}", path, handlers)
    proto.ready.add_done_callback(_retrieve)  # a handshake failing after we gave up is not an unhandled error
    local_addr = (local_host, 0) if local_host else None
    await asyncio.wait_for(loop.create_connection(lambda: proto, host, port, local_addr=local_addr), timeout)
    try:
        await asyncio.wait_for(asyncio.shield(proto.ready), timeout)
    except BaseException:
        proto.abort()
        raise
    return proto


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
