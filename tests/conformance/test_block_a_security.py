"""Block A, Security: profiles 1-3, one daemon serving plain ws and wss side by side, password
rotation, certificate signing for every certificate type, and security events.

Covers TC_A_01..03 (A00.FR.2xx Basic authentication: the username is the identity, a wrong password
refused), TC_A_04/06 (A00.FR.3xx TLS 1.2+ only), TC_A_07/08 (A00.FR.4xx client certificates:
A00.FR.405 CN = identity, A00.FR.407 an invalid chain refused), issue 17 item 5 (profile 1 on a
plain listener and profiles 2/3 on a TLS listener of the same daemon, each station held to its
registered profile, no downgrade; A05 upgrade ratchets), TC_A_09/10 (A01 password rotation from
the API and the CLI, issue 17 item 6: the new password works once the station took it, the old one
until the station logs in with the new one; a refusal changes nothing), TC_A_11..14 (A02/A03
SignCertificate for the charging-station, V2G and combined certificates; A02.FR.14 the
certificateType echoed in CertificateSigned; the issued certificates kept) and A04
(SecurityEventNotification answered and shown).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import InvalidStatus

from tests.conformance.station import Rig, connected, rig, ts
from tests.test_security_pki import Pki
from tests.waiting import until

PASSWORD = "conformance-password-0001"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def refused(url: str, station_id: str, **connect: Any) -> int:
    """The HTTP status of a refused handshake."""
    with pytest.raises(InvalidStatus) as info:
        async with connected(url, station_id, boot=False, **connect):
            pass
    return info.value.response.status_code


@contextlib.asynccontextmanager
async def secure_rig(tmp_path: Path, **security: Any) -> AsyncIterator[tuple[Rig, Pki, str, str]]:
    """A daemon with a plain ws listener (profile 1) and a wss listener (profiles 2 and 3)."""
    (tmp_path / "pki").mkdir(exist_ok=True)
    pki = Pki.create(tmp_path / "pki")
    section = {"allow_plain_ws": True, "tls": pki.tls_section(port=0), "ca": pki.ca_section(), **security}
    async with rig(tmp_path, security=section) as r:
        listeners = {x["scheme"]: x["port"] for x in (await r.get("/health/ready"))["listeners"]}
        yield r, pki, f"ws://127.0.0.1:{listeners['ws']}/ocpp", f"wss://127.0.0.1:{listeners['wss']}/ocpp"


async def _register(r: Rig, station_id: str, profile: int, password: str | None = PASSWORD) -> None:
    body: dict[str, Any] = {"station_id": station_id, "security_profile": profile}
    if password is not None and profile < 3:
        body["password"] = password
    await r.post("/api/stations", body, status=(200, 201))


async def _events(r: Rig, station_id: str) -> list[str]:
    return [e["type"] for e in (await r.get(f"/api/stations/{station_id}/security-events"))["events"]]


async def test_a00_profiles_1_2_3_side_by_side_without_downgrade(tmp_path: Path) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-P1", 1)
        await _register(r, "A-P2", 2)
        await _register(r, "A-P3", 3)
        tls = pki.client_context()
        async with connected(ws_url, "A-P1", additional_headers=basic("A-P1", PASSWORD)):  # TC_A_01
            pass
        async with connected(wss_url, "A-P2", ssl=tls, additional_headers=basic("A-P2", PASSWORD)):  # TC_A_04
            pass
        async with connected(wss_url, "A-P3", ssl=pki.client_context("A-P3")):  # TC_A_07
            pass
        # No downgrade: a profile-2 station on the plain listener is refused, even with its password.
        assert await refused(ws_url, "A-P2", additional_headers=basic("A-P2", PASSWORD)) == 401
        assert await refused(ws_url, "A-P3", additional_headers=basic("A-P3", PASSWORD)) == 401
        assert "SecurityProfileDowngrade" in await _events(r, "A-P2")
        # TC_A_02 / TC_A_03
        assert await refused(ws_url, "A-P1", additional_headers=basic("A-OTHER", PASSWORD)) == 401
        assert await refused(ws_url, "A-P1", additional_headers=basic("A-P1", PASSWORD + "x")) == 401
        # A05: a profile-1 station that logs in over TLS is held to profile 2 from then on.
        async with connected(wss_url, "A-P1", ssl=tls, additional_headers=basic("A-P1", PASSWORD)):
            pass
        assert (await r.get("/api/stations/A-P1"))["security_profile"] == 2
        assert await refused(ws_url, "A-P1", additional_headers=basic("A-P1", PASSWORD)) == 401


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_a00_tls_below_1_2_and_foreign_client_certificates_are_refused(tmp_path: Path) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-P3", 3)
        old = pki.client_context()
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidMessage, EOFError)):  # TC_A_06
            async with connected(wss_url, "A-P3", boot=False, ssl=old):
                pass
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidMessage, EOFError)):  # TC_A_08
            async with connected(wss_url, "A-P3", boot=False, ssl=pki.client_context("A-P3", rogue=True)):
                pass
        assert await refused(wss_url, "A-P3", ssl=pki.client_context("A-NOT-ME")) == 401  # A00.FR.405


class PasswordStation:
    """A profile-1 station that applies SecurityCtrlr.BasicAuthPassword (or refuses it)."""

    def __init__(self, url: str, station_id: str, accept: bool = True) -> None:
        self.url, self.station_id, self.password, self.accept = url, station_id, PASSWORD, accept
        self.offered: list[str] = []

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        results = []
        for item in payload["setVariableData"]:
            if (item["component"]["name"], item["variable"]["name"]) == ("SecurityCtrlr", "BasicAuthPassword"):
                self.offered.append(item["attributeValue"])
            results.append({"component": item["component"], "variable": item["variable"],
                            "attributeStatus": "Accepted" if self.accept else "Rejected"})
        return {"setVariableResult": results}

    def session(self, password: str | None = None) -> contextlib.AbstractAsyncContextManager[Any]:
        return connected(self.url, self.station_id, answers={"SetVariables": self.answer},
                         additional_headers=basic(self.station_id, password or self.password))


async def test_a01_password_rotation_from_the_api(tmp_path: Path) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-ROT", 1)
        station = PasswordStation(ws_url, "A-ROT")
        async with station.session():
            answer = await r.post("/api/stations/A-ROT/password", {})
            assert answer["result"] == "Accepted" and "password" not in answer  # never shown
            [new] = station.offered  # A01.FR.02: SetVariables SecurityCtrlr.BasicAuthPassword
            assert 16 <= len(new) <= 40 and new != PASSWORD
        # Until the station logs in with the new one, both work; after that only the new one.
        async with station.session(PASSWORD):
            pass
        async with station.session(new):
            pass
        assert await refused(ws_url, "A-ROT", additional_headers=basic("A-ROT", PASSWORD)) == 401
        # An operator may choose the password (and it is never echoed).
        async with station.session(new):
            chosen = "operator-chosen-password-1"
            assert (await r.post("/api/stations/A-ROT/password", {"password": chosen}))["result"] == "Accepted"
            assert station.offered[-1] == chosen
        code, body = await r.api.post("/api/stations/A-ROT/password", {"password": "short"})
        assert code == 422 and body["field"] == "password"


async def test_a01_a_refused_rotation_changes_nothing(tmp_path: Path) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-NO", 1)
        await _register(r, "A-P3", 3)
        station = PasswordStation(ws_url, "A-NO", accept=False)
        async with station.session():
            answer = await r.post("/api/stations/A-NO/password", {})  # TC_A_10
            assert answer["result"] == "Rejected"
        rejected = station.offered[-1]
        assert await refused(ws_url, "A-NO", additional_headers=basic("A-NO", rejected)) == 401
        async with station.session(PASSWORD):
            pass
        assert (await r.api.post("/api/stations/A-NO/password", {}))[0] == 409  # not connected
        assert (await r.api.post("/api/stations/A-P3/password", {}))[0] == 409  # no password to rotate


async def test_a01_password_rotation_from_the_cli(tmp_path: Path) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-CLI", 1)
        station = PasswordStation(ws_url, "A-CLI")
        async with station.session():
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("CSMS_")},
                   "CSMS_API_URL": r.api.url, "CSMS_API_TOKEN": r.api.admin_token}
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "rotate-password", "A-CLI",
                                                        env=env, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            assert "Accepted" in out.decode() and station.offered and station.offered[-1] not in out.decode()


def _csr(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Conformance"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("trigger, certificate_type", [
    ("SignChargingStationCertificate", "ChargingStationCertificate"),  # TC_A_11
    ("SignV2GCertificate", "V2GCertificate"),  # TC_A_12
    ("SignCombinedCertificate", None),  # TC_A_13: no type = one certificate for both uses
])
async def test_a02_csr_flow_for_every_certificate_type(tmp_path: Path, trigger: str,
                                                       certificate_type: str | None) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-CSR", 2)
        async with connected(wss_url, "A-CSR", ssl=pki.client_context(),
                             additional_headers=basic("A-CSR", PASSWORD)) as st:
            assert await r.command("A-CSR", "trigger-message", {"requested_message": trigger}) == {
                "status": "Accepted"}
            request: dict[str, Any] = {"csr": _csr("A-CSR")}
            if certificate_type is not None:
                request["certificateType"] = certificate_type
            assert (await st.send("SignCertificate", request))["status"] == "Accepted"  # A02.FR.11
            signed = await st.expect("CertificateSigned")
            assert signed.get("certificateType") == certificate_type  # A02.FR.14
            leaf, *chain = x509.load_pem_x509_certificates(signed["certificateChain"].encode())
            leaf.verify_directly_issued_by(pki.ca[0])
            assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "A-CSR"

            async def issued() -> list[dict[str, Any]]:
                return (await r.get("/api/stations/A-CSR/certificates"))["issued"]
            kept = await until(issued, what="issued certificate kept")
            assert kept[-1]["serial_number"] == format(leaf.serial_number, "x")
            assert kept[-1]["certificate_type"] == (certificate_type or "ChargingStationCertificate")
            assert kept[-1]["status"] == "Accepted"


async def test_a02_a_certificate_the_station_refuses_is_kept_as_refused(tmp_path: Path) -> None:
    async with secure_rig(tmp_path) as (r, pki, ws_url, wss_url):
        await _register(r, "A-BAD", 2)
        async with connected(wss_url, "A-BAD", ssl=pki.client_context(), additional_headers=basic("A-BAD", PASSWORD),
                             answers={"CertificateSigned": {"status": "Rejected"}}) as st:  # TC_A_14
            assert (await st.send("SignCertificate", {"csr": _csr("A-BAD"),
                                                      "certificateType": "ChargingStationCertificate"}))[
                "status"] == "Accepted"
            await st.expect("CertificateSigned")

            async def refused_kept() -> bool:
                issued = (await r.get("/api/stations/A-BAD/certificates"))["issued"]
                return bool(issued) and issued[-1]["status"] == "Rejected"
            await until(refused_kept, what="refused certificate kept as Rejected")
            answer = await st.send("SignCertificate", {"csr": _csr("SOMEONE-ELSE"),
                                                       "certificateType": "ChargingStationCertificate"})
            assert answer["status"] == "Rejected"  # the CN must be the station's identity


async def test_a04_security_events_are_answered_and_shown(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("A-EV") as st:
        assert await st.send("SecurityEventNotification", {"type": "SettingSystemTime", "timestamp": ts(),
                                                           "techInfo": "NTP sync"}) == {}
        events = (await r.get("/api/stations/A-EV/security-events"))["events"]
        assert [(e["type"], e["tech_info"]) for e in events] == [("SettingSystemTime", "NTP sync")]
