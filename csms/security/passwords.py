"""Station passwords: generated, validated and stored only as salted scrypt hashes.

Format of a stored hash: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``; the cost parameters travel
with the hash so they can be raised later without invalidating existing passwords.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import string

MIN_LENGTH, MAX_LENGTH = 16, 40  # OCPP 2.0.1 SecurityCtrlr.BasicAuthPassword
GENERATED_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
_ALLOWED = frozenset(chr(c) for c in range(0x21, 0x7F))  # printable ASCII without space

# ~16 MiB and ~40 ms per hash: slow for a guesser, affordable for a station's (re)connect.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
_MAXMEM = 64 * 1024 * 1024
DKLEN = 64


class PasswordError(ValueError):
    """A password that OCPP's BasicAuthPassword cannot carry."""


def validate(password: str) -> None:
    if not isinstance(password, str):
        raise PasswordError("the password must be a string")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordError(f"the password must be {MIN_LENGTH}-{MAX_LENGTH} characters (OCPP BasicAuthPassword), "
                            f"got {len(password)}")
    if not set(password) <= _ALLOWED:
        raise PasswordError("the password may only contain printable ASCII characters without spaces")


def generate() -> str:
    """A random password of 32 letters and digits (~190 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(GENERATED_LENGTH))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    validate(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM,
                            dklen=DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored``; False for anything malformed (never raises)."""
    if not stored or not isinstance(password, str) or len(password) > MAX_LENGTH * 4:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        if len(expected) != DKLEN:  # a truncated hash would otherwise match on its prefix
            return False
        actual = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=base64.b64decode(salt, validate=True),
                                n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM, dklen=DKLEN)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


async def verify_async(password: str, stored: str | None) -> bool:
    """:func:`verify` in a worker thread (scrypt releases the GIL), so the event loop keeps serving."""
    return await asyncio.to_thread(verify, password, stored)


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)
