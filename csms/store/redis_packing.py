"""Redis commands packed in C (hiredis) instead of redis-py's pure-Python packer.

redis-py parses replies with hiredis but, in its asyncio client, still builds every command's
wire bytes in Python: at a grid wave (thousands of store writes and shared events at once) that
was 5-7 % of a node's CPU. The bytes are the same: arguments are encoded by the connection's own
encoder first (numbers as ``repr``, str in the configured encoding, bool and None refused), only
the framing moves to C.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import ConnectionPool


class _HiredisPacking:
    """Mixin over a redis-py asyncio connection class: ``pack_command`` through ``hiredis``."""

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # a command name of several words ("CONFIG GET") goes as several
            args = tuple(first.encode().split()) + args[1:]
        elif b" " in first:
            args = tuple(first.split()) + args[1:]
        encode = self.encoder.encode
        wire = []
        for arg in args:
            if type(arg) is not bytes:
                arg = encode(arg)  # raises DataError as redis-py does (bool, None, other types)
                if isinstance(arg, memoryview):
                    arg = arg.tobytes()
            wire.append(arg)
        return [hiredis.pack_command(tuple(wire))]


_FAST: dict[type, type] = {}


def fast_packing(pool: ConnectionPool) -> ConnectionPool:
    """``pool`` with its connections packing commands through hiredis (whatever their class: TCP,
    TLS or a Unix socket, as the URL chose)."""
    cls = pool.connection_class
    if not issubclass(cls, _HiredisPacking):
        if cls not in _FAST:
            _FAST[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
        pool.connection_class = _FAST[cls]
    return pool
