"""The VEN's HTTP client against the VTN stand-in in this process: tokens (form and HTTP Basic,
3.1.0 token-URL discovery, a revoked token fetched again), paging, and errors that name the cause."""

from __future__ import annotations

from typing import Any

import pytest

from csms.configcheck import Issues
from csms.grid.sources.openadr.client import VtnClient, VtnError
from csms.grid.sources.openadr.config import OpenAdrConfig, openadr_section
from simulators.openadr import gac_program, make_ean18
from simulators.openadr.vtn import ClientCredentials, Vtn, VtnConfig

pytestmark = pytest.mark.timeout(60)

EAN = make_ean18("87123456789012345")


def config(vtn: Vtn, **extra: Any) -> OpenAdrConfig:
    issues = Issues("t")
    section = openadr_section({"vtn_url": vtn.url, "spec_version": vtn.version, "client_id": "ven1",
                               "client_secret": "ven-secret", "ven_name": "NL-XYZ", "programs": ["p"],
                               "groups": {"T1": [EAN]}, "request_timeout_s": 2, **extra}, {"T1"}, issues)
    assert section is not None, issues.items
    return section


@pytest.mark.parametrize("version", ["3.0.1", "3.1.0"])
@pytest.mark.parametrize("token_auth", ["form", "basic"])
async def test_token_paging_and_a_revoked_token(version: str, token_auth: str) -> None:
    async with Vtn(VtnConfig(version=version, clients=[ClientCredentials("ven1", "ven-secret", "ven")])) as vtn:
        for n in range(120):  # three pages of 50
            vtn.create("program", gac_program(version, name=f"program-{n:03d}"))
        client = VtnClient(config(vtn, token_auth=token_auth))
        await client.open()
        try:
            programs = await client.list("/programs")
            assert [p["programName"] for p in programs] == [f"program-{n:03d}" for n in range(120)]
            assert client.tokens_fetched == 1 and await client.token_url() == f"{vtn.url}/auth/token"
            vtn.revoke_tokens()
            assert len(await client.list("/programs")) == 120
            assert client.tokens_fetched == 2
        finally:
            await client.close()


async def test_errors_name_the_cause() -> None:
    async with Vtn(VtnConfig(clients=[ClientCredentials("ven1", "ven-secret", "ven")])) as vtn:
        client = VtnClient(config(vtn, client_secret="wrong"))
        await client.open()
        try:
            with pytest.raises(VtnError, match="token endpoint answered 400: unknown client or wrong secret"):
                await client.list("/programs")
        finally:
            await client.close()
        client = VtnClient(config(vtn))
        await client.open()
        try:
            with pytest.raises(VtnError, match="answered 400") as caught:
                await client.list("/events", [("limit", "51")])
            assert caught.value.status == 400
            vtn.inject_malformed_event("nope", "json")
            with pytest.raises(VtnError, match="not JSON"):
                await client.list("/events")
            await vtn.go_silent(2, "refuse")
            with pytest.raises(VtnError, match="GET"):
                await client.list("/programs")
        finally:
            await client.close()
