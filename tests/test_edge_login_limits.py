"""Issue 16, item 5: failed logins cannot be spent by others on a known-good station's behalf.

Loopback gives every test address it needs: 127.0.0.1 is "the site's NAT address" (a bad actor
and the good station behind it), 127.0.0.2 and 127.0.0.3 are elsewhere. Stations are registered
through the operator API, as an operator would.

Policy (docs/security.md, "Failed-login limit"): failures for ids without credentials spend the
address's budget, and only such ids are refused when it is empty; a registered id is limited by
its own budget (a known-good address is exempt from it) and by its budget per address.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from tests.api_fixture import Api, api_daemon
from tests.edge_kit import BACKENDS, backend_overrides
from tests.ocpp_client import RawStation

PASSWORD = "correct-horse-battery-42"
WRONG = "wrong-horse-battery-4242"
LIMITS = {"per_address": 3, "per_identity": 2, "window_s": 600}
NAT, ELSEWHERE, NEW_PLACE = "127.0.0.1", "127.0.0.2", "127.0.0.3"
OTHERS = [f"CS-OTHER-{i}" for i in range(4)]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(params=BACKENDS)
async def site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """A daemon on each store backend (whether an id has credentials is read from the store)."""
    async with backend_overrides(request.param, tmp_path) as store, \
            api_daemon(tmp_path, store=store, security={"allow_plain_ws": True, "auth_failures": LIMITS}) as api:
        for station_id in ("CS-GOOD", *OTHERS):
            status, body = await api.post("/api/stations", {"station_id": station_id, "security_profile": 1,
                                                            "password": PASSWORD})
            assert status == 201, body
        yield api


async def login(api: Api, station_id: str, password: str, source: str) -> int:
    """101 when the station got in (it then boots and leaves), else the handshake's HTTP status."""
    try:
        st = await RawStation.connect(api.running.ws_url, station_id, additional_headers=basic(station_id, password),
                                      local_addr=(source, 0))
    except InvalidStatus as exc:
        return exc.response.status_code
    try:
        assert (await st.boot())["status"] == "Accepted"
    finally:
        await st.close()
    return 101


async def attempts(api: Api, ids: list[str], password: str, source: str) -> list[int]:
    return [await login(api, station_id, password, source) for station_id in ids]


async def test_failures_for_unknown_ids_never_lock_out_a_registered_station_behind_the_same_address(
        site: Api) -> None:
    scan = await attempts(site, [f"X-{i}" for i in range(10)], PASSWORD, NAT)
    assert scan == [401] * LIMITS["per_address"] + [429] * (10 - LIMITS["per_address"])
    # the right password from the same address, although this station never logged in before
    assert await login(site, "CS-GOOD", PASSWORD, NAT) == 101
    assert await login(site, "X-99", PASSWORD, NAT) == 429  # the scanner stays limited


async def test_failures_for_other_registered_ids_never_lock_out_a_registered_station(site: Api) -> None:
    for other in OTHERS:  # 8 failures from the address: more than its budget of 3
        assert await attempts(site, [other] * 3, WRONG, NAT) == [401] * LIMITS["per_identity"] + [429]
    assert await login(site, "CS-GOOD", PASSWORD, NAT) == 101


async def test_guessing_one_registered_id_stays_limited_and_its_known_address_keeps_access(site: Api) -> None:
    assert await login(site, "CS-GOOD", PASSWORD, NAT) == 101  # NAT is now a known-good address of CS-GOOD
    guesses = await attempts(site, ["CS-GOOD"] * 4, WRONG, ELSEWHERE)
    assert guesses == [401] * LIMITS["per_identity"] + [429] * (4 - LIMITS["per_identity"])
    assert await login(site, "CS-GOOD", PASSWORD, NAT) == 101  # the station's own address is not locked out
    assert await login(site, "CS-GOOD", PASSWORD, NEW_PLACE) == 429  # a new address waits for the window
    # guessing from the station's own address is limited per address, known-good or not
    assert await attempts(site, ["CS-GOOD"] * 3, WRONG, NAT) == [401] * LIMITS["per_identity"] + [429]
