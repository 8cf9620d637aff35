"""What a station identity may look like (it is a URL path segment and an OCPP identifier)."""

from __future__ import annotations

import re

MAX_IDENTITY_LENGTH = 48  # OCPP 2.0.1: the charging station identity is at most 48 characters
_BAD_IDENTITY = re.compile(r"[\x00-\x20\x7f/]")


def valid_identity(identity: str) -> bool:
    """1-48 characters, no whitespace, control characters or '/'."""
    return 0 < len(identity) <= MAX_IDENTITY_LENGTH and not _BAD_IDENTITY.search(identity)
