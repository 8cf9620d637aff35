"""What a station identity may look like (it is a URL path segment and an OCPP identifier)."""

from __future__ import annotations

import re

MAX_IDENTITY_LENGTH = 48  # OCPP 2.0.1: the charging station identity is at most 48 characters
_BAD_IDENTITY = re.compile(r"[\x00-\x20\x7f-\x9f/]")
DOT_SEGMENTS = frozenset({".", ".."})  # RFC 3986 dot segments: a proxy or client may resolve them away


def identity_problem(identity: str) -> str | None:
    """Why ``identity`` cannot be a station identity, or None when it can."""
    if not 0 < len(identity) <= MAX_IDENTITY_LENGTH:
        return f"is {len(identity)} characters long (1-{MAX_IDENTITY_LENGTH} allowed)"
    if _BAD_IDENTITY.search(identity):
        return "contains a space, a control character or '/'"
    if identity in DOT_SEGMENTS:
        return "is a dot segment ('.' or '..')"
    return None


def valid_identity(identity: str) -> bool:
    """1-48 characters, no whitespace, control characters or '/', not '.' or '..'."""
    return identity_problem(identity) is None
