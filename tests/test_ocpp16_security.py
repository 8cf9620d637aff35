"""OCPP 1.6J stations (the `ocpp` package's v16 ChargePoint) under the security extensions: security
profiles 1-3 in the handshake, SignCertificate answered and the signed chain delivered with a 1.6
CertificateSigned, security events stored."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from ocpp.v16 import call
from websockets.exceptions import InvalidStatus

from csms.security.credentials import register_station
from csms.security.rotation import rotate_password
from tests.ocpp16_station import Lib16Station, iso
from tests.test_security_pki import Pki, make_csr, new_key, pki  # noqa: F401 - fixture
from tests.test_security_profiles import PASSWORD, basic, plain_daemon, tls_daemon, wss
from tests.waiting import until

NEW_PASSWORD = "a-rotated-password-5678"


async def test_profile1_password_for_a_16_station(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path) as d:
        await register_station(d.daemon.store, "CP16-P1", 1, PASSWORD)
        st = Lib16Station("CP16-P1")
        try:
            assert await st.connect(d.ws_url, additional_headers=basic("CP16-P1", PASSWORD)) == "ocpp1.6"
            assert st.boot_status == "Accepted"
        finally:
            await st.stop()
        # Password rotation (the security extensions' AuthorizationKey), never stored in clear.
        st = Lib16Station("CP16-P1")
        try:
            await st.connect(d.ws_url, additional_headers=basic("CP16-P1", PASSWORD))
            result = await rotate_password(d.daemon, "CP16-P1", NEW_PASSWORD)
            assert result.value == "Accepted" and st.configuration["AuthorizationKey"] == NEW_PASSWORD
        finally:
            await st.stop()
        commands = await d.daemon.store.list_commands("CP16-P1")
        assert any(c["action"] == "ChangeConfiguration" for c in commands)
        assert NEW_PASSWORD not in str(commands)
        again = Lib16Station("CP16-P1")
        try:
            await again.connect(d.ws_url, additional_headers=basic("CP16-P1", NEW_PASSWORD))
            assert again.boot_status == "Accepted"
        finally:
            await again.stop()
        wrong = Lib16Station("CP16-P1")
        try:
            await wrong.connect(d.ws_url, additional_headers=basic("CP16-P1", PASSWORD + "x"))
            raise AssertionError("a wrong password got in")
        except InvalidStatus as exc:
            assert exc.response.status_code == 401


async def test_profile2_and_3_sign_certificate_and_security_events(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        await register_station(d.daemon.store, "CP16-P2", 2, PASSWORD)
        await register_station(d.daemon.store, "CP16-P3", 3)
        p2 = Lib16Station("CP16-P2")
        p3 = Lib16Station("CP16-P3")
        try:
            await p2.connect(wss(d), ssl=pki.client_context(), additional_headers=basic("CP16-P2", PASSWORD))
            await p3.connect(wss(d), ssl=pki.client_context("CP16-P3"))
            assert p2.boot_status == p3.boot_status == "Accepted"

            answer = await p3.cp.call(call.SignCertificate(csr=make_csr("CP16-P3", new_key())))
            assert answer.status == "Accepted"
            await until(lambda: bool(p3.certificate_chains), 10, "CertificateSigned delivered")
            leaf = x509.load_pem_x509_certificates(p3.certificate_chains[0].encode())[0]
            assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "CP16-P3"
            refused = await p2.cp.call(call.SignCertificate(csr=make_csr("SOMEONE-ELSE", new_key())))
            assert refused.status == "Rejected"

            await p2.cp.call(call.SecurityEventNotification(type="TamperDetectionActivated", timestamp=iso(),
                                                            tech_info="lid opened"))
            events = await d.daemon.store.list_security_events("CP16-P2")
            assert any(e["type"] == "TamperDetectionActivated" for e in events), events
            await p2.cp.call(call.SignedFirmwareStatusNotification(status="Downloading", request_id=3))
            await p2.cp.call(call.LogStatusNotification(status="Uploading", request_id=4))
            kept = {m["action"] for m in await d.daemon.store.list_station_messages("CP16-P2")}
            assert {"SignedFirmwareStatusNotification", "LogStatusNotification"} <= kept
        finally:
            await p2.stop()
            await p3.stop()
