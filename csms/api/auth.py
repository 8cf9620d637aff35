"""API tokens and scopes.

Two scopes: ``read`` (every GET) and ``admin`` (everything, including commands to stations).
Tokens are compared as SHA-256 digests in constant time; the plain token exists only in the
token file (mode 0600) and in the operator's hands. API tokens are a separate world from station
credentials: nothing here is consulted by the station websocket handshake.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from csms.api.config import TokenEntry

log = logging.getLogger("csms.api")

READ, ADMIN = "read", "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    scope: str

    def allows(self, needed: str) -> bool:
        return self.scope == ADMIN or needed == READ


class TokenFileError(Exception):
    """The token file exists but cannot be used (unreadable, empty, too open)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise TokenFileError(f"cannot read API token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise TokenFileError(f"API token file {path} is empty")
    return token


def ensure_token_file(path: str, generate: bool) -> str | None:
    """The admin token from ``path``; on a fresh install a new one is written there (mode 0600)."""
    if os.path.exists(path):
        mode = os.stat(path).st_mode & 0o077
        if mode:
            log.warning("API token file %s is readable by others (mode %o); chmod 600 it", path,
                        os.stat(path).st_mode & 0o777)
        return read_token_file(path)
    if not generate:
        return None
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    log.warning("generated a new admin API token in %s (mode 0600); give it to the operator CLI with "
                "--token, CSMS_API_TOKEN or let it read the config", path)
    return token


class Tokens:
    """The tokens the API accepts."""

    def __init__(self, entries: Iterable[TokenEntry], file_token: str | None) -> None:
        self._entries = list(entries)
        if file_token is not None:
            self._entries.append(TokenEntry("token-file", ADMIN, digest(file_token)))

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> Principal | None:
        d = digest(token)
        found: Principal | None = None
        for entry in self._entries:  # no early exit: the time taken does not depend on which matched
            if hmac.compare_digest(d, entry.sha256):
                found = Principal(entry.name, entry.scope)
        return found


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
