"""Security profiles 1-3 end to end: real daemon, real TLS on 127.0.0.1, certificates from test_security_pki."""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from csms.security import auth
from csms.security.credentials import register_station
from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.ocpp_client import RawStation
from tests.test_security_pki import Pki, pki  # noqa: F401 - fixture

PASSWORD = "correct-horse-battery-42"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@contextlib.asynccontextmanager
async def tls_daemon(tmp_path: Path, pki: Pki, policy: str = "allow_unknown", **security: Any
                     ) -> AsyncIterator[RunningDaemon]:
    section = {"tls": pki.tls_section(), "ca": pki.ca_section(), **security}
    async with running_daemon(tmp_path, security=section, registration={"policy": policy}) as d:
        yield d


@contextlib.asynccontextmanager
async def plain_daemon(tmp_path: Path, **security: Any) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(tmp_path, security={"allow_plain_ws": True, **security}) as d:
        yield d


def wss(d: RunningDaemon) -> str:
    return f"wss://127.0.0.1:{d.daemon.ws_port}{d.daemon.config.websocket.path_prefix}"


async def refused_status(url: str, station_id: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        st = await RawStation.connect(url, station_id, **kwargs)
        await st.close()
    return info.value.response.status_code


async def events(d: RunningDaemon, station_id: str) -> list[str]:
    return [e["type"] for e in await d.daemon.store.list_security_events(station_id)]


async def boots(url: str, station_id: str, **kwargs: Any) -> None:
    st = await RawStation.connect(url, station_id, **kwargs)
    try:
        assert (await st.boot())["status"] == "Accepted"
    finally:
        await st.close()


# Profile 1 (plain ws, lab) ------------------------------------------------------------------------------

async def test_profile1_password_admits_and_failures_are_bare_401s(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path) as d:
        await register_station(d.daemon.store, "CS-1", 1, PASSWORD)
        await boots(d.ws_url, "CS-1", additional_headers=basic("CS-1", PASSWORD))
        cases = [
            ("CS-1", basic("CS-1", PASSWORD + "x"), auth.INVALID_CREDENTIALS),
            ("CS-1", {}, auth.NO_CREDENTIALS),
            ("CS-1", basic("CS-2", PASSWORD), auth.INVALID_CREDENTIALS),
            ("CS-1", {"Authorization": "Bearer an-operator-api-token"}, auth.NO_CREDENTIALS),
            ("CS-1", {"Authorization": "Basic !!not-base64!!"}, auth.NO_CREDENTIALS),
            ("CS-NEW", basic("CS-NEW", PASSWORD), auth.UNKNOWN_STATION),
        ]
        for station_id, headers, event in cases:
            with pytest.raises(InvalidStatus) as info:
                await RawStation.connect(d.ws_url, station_id, additional_headers=headers)
            response = info.value.response
            assert response.status_code == 401
            assert response.body == b"authentication failed\n"  # never says which part was wrong
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert (await events(d, station_id))[0] == event
        logged = await d.daemon.store.list_security_events("CS-1")
        assert all(PASSWORD not in (e.get("tech_info") or "") for e in logged)
        record = await d.daemon.store.get_station("CS-1")
        assert record.password_hash.startswith("scrypt$") and PASSWORD not in record.password_hash


async def test_no_downgrade_from_profile2_or_3_to_plain_ws(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path) as d:
        await register_station(d.daemon.store, "CS-2", 2, PASSWORD)
        await register_station(d.daemon.store, "CS-3", 3)
        assert await refused_status(d.ws_url, "CS-2", additional_headers=basic("CS-2", PASSWORD)) == 401
        assert await refused_status(d.ws_url, "CS-3", additional_headers=basic("CS-3", PASSWORD)) == 401
        assert await events(d, "CS-2") == [auth.DOWNGRADE]
        assert await events(d, "CS-3") == [auth.DOWNGRADE]


async def test_failed_logins_are_rate_limited_per_identity_and_per_address(tmp_path: Path) -> None:
    limits = {"per_identity": 3, "per_address": 5, "window_s": 600}
    async with plain_daemon(tmp_path, auth_failures=limits) as d:
        await register_station(d.daemon.store, "CS-1", 1, PASSWORD)
        wrong = basic("CS-1", "wrong-password-0000")
        for _ in range(3):
            assert await refused_status(d.ws_url, "CS-1", additional_headers=wrong) == 401
        # The identity's budget is spent: even the right password waits now (no oracle for guessing).
        with pytest.raises(InvalidStatus) as info:
            await RawStation.connect(d.ws_url, "CS-1", additional_headers=basic("CS-1", PASSWORD))
        assert info.value.response.status_code == 429
        assert 1 <= int(info.value.response.headers["Retry-After"]) <= 200
        assert await events(d, "CS-1") == [auth.RATE_LIMITED] + [auth.INVALID_CREDENTIALS] * 3
        # Five failures on identities without credentials spend the address's budget of 5: more
        # unknown ids are refused, a registered station from the same address is not (issue 16).
        for station_id in ("CS-V", "CS-W", "CS-X", "CS-Y", "CS-Z"):
            assert await refused_status(d.ws_url, station_id, additional_headers=basic(station_id, PASSWORD)) == 401
        assert await refused_status(d.ws_url, "CS-U", additional_headers=basic("CS-U", PASSWORD)) == 429
        await register_station(d.daemon.store, "CS-OK", 1, PASSWORD)
        await boots(d.ws_url, "CS-OK", additional_headers=basic("CS-OK", PASSWORD))


async def test_station_that_logged_in_from_an_address_is_not_locked_out_by_guessers(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path, auth_failures={"per_identity": 2, "per_address": 100}) as d:
        await register_station(d.daemon.store, "CS-1", 1, PASSWORD)
        await boots(d.ws_url, "CS-1", additional_headers=basic("CS-1", PASSWORD))
        security = d.daemon.security
        for _ in range(3):  # a guesser from another address spends the identity's budget
            security.failures.failure("203.0.113.9", "CS-1", registered=True)
        assert security.failures.retry_after("203.0.113.9", "CS-1", registered=True) > 0
        await boots(d.ws_url, "CS-1", additional_headers=basic("CS-1", PASSWORD))


# Profile 2 and 3 (TLS) ----------------------------------------------------------------------------------

async def test_profile2_over_tls_with_password(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        await register_station(d.daemon.store, "CS-2", 2, PASSWORD)
        await boots(wss(d), "CS-2", ssl=pki.client_context(), additional_headers=basic("CS-2", PASSWORD))
        assert await refused_status(wss(d), "CS-2", ssl=pki.client_context(),
                                    additional_headers=basic("CS-2", "wrong-password-0000")) == 401
        assert await refused_status(wss(d), "CS-2", ssl=pki.client_context()) == 401
        with pytest.raises((OSError, websockets.InvalidMessage)):  # plain ws:// to a TLS listener gets nowhere
            await RawStation.connect(f"ws://127.0.0.1:{d.daemon.ws_port}/ocpp", "CS-2", open_timeout=3,
                                     additional_headers=basic("CS-2", PASSWORD))


async def test_profile1_station_over_tls_is_ratcheted_to_profile2(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        await register_station(d.daemon.store, "CS-1", 1, PASSWORD)
        await boots(wss(d), "CS-1", ssl=pki.client_context(), additional_headers=basic("CS-1", PASSWORD))
        assert (await d.daemon.store.get_station("CS-1")).security_profile == 2


async def test_profile3_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        await register_station(d.daemon.store, "CS-3", 3)
        await boots(wss(d), "CS-3", ssl=pki.client_context("CS-3"))
        # A certificate of our CA but for another station: the CN must equal the identity in the URL.
        assert await refused_status(wss(d), "CS-3", ssl=pki.client_context("CS-OTHER")) == 401
        assert await events(d, "CS-3") == [auth.INVALID_CERTIFICATE]
        # Downgrade: a profile-3 station may not fall back to a password over TLS.
        assert await refused_status(wss(d), "CS-3", ssl=pki.client_context(),
                                    additional_headers=basic("CS-3", PASSWORD)) == 401
        assert (await events(d, "CS-3"))[0] == auth.DOWNGRADE


async def test_client_certificate_of_another_ca_fails_the_tls_handshake(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        await register_station(d.daemon.store, "CS-3", 3)
        with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage, EOFError)):
            st = await RawStation.connect(wss(d), "CS-3", ssl=pki.client_context("CS-3", rogue=True),
                                          open_timeout=5)
            await st.boot()  # TLS 1.3 may report the rejected certificate only on first use
        assert "CS-3" not in d.daemon.connections


async def test_unknown_stations_follow_the_registration_policy(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki, policy="allow_unknown") as d:
        await boots(wss(d), "CS-NEW", ssl=pki.client_context("CS-NEW"))  # our CA vouches for it
        assert await refused_status(wss(d), "CS-PW", ssl=pki.client_context(),
                                    additional_headers=basic("CS-PW", PASSWORD)) == 401
        assert await events(d, "CS-PW") == [auth.UNKNOWN_STATION]
    async with tls_daemon(tmp_path / "r", pki, policy="registered_only") as d:
        assert await refused_status(wss(d), "CS-NEW", ssl=pki.client_context("CS-NEW")) == 401
        assert await events(d, "CS-NEW") == [auth.UNKNOWN_STATION]


async def test_minimum_tls_version_is_enforced(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki, tls=pki.tls_section(min_version="1.3")) as d:
        await register_station(d.daemon.store, "CS-2", 2, PASSWORD)
        old = pki.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await RawStation.connect(wss(d), "CS-2", ssl=old, additional_headers=basic("CS-2", PASSWORD))
        await boots(wss(d), "CS-2", ssl=pki.client_context(), additional_headers=basic("CS-2", PASSWORD))
