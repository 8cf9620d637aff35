"""SignCertificate -> CertificateSigned with the daemon's CA, and the typed certificate commands."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from csms.security.certificates import (
    certificate_hash_data,
    delete_certificate,
    get_installed_certificate_ids,
    install_certificate,
)
from csms.security.credentials import register_station
from tests.ocpp_client import RawStation
from tests.test_security_pki import Pki, make_csr, new_key, pem_cert, pki  # noqa: F401 - fixture
from tests.test_security_profiles import tls_daemon, wss


async def next_call(station: RawStation, action: str) -> list[Any]:
    while True:
        msg = await asyncio.wait_for(station.incoming_calls.get(), 5)
        if msg[2] == action:
            return msg


async def recorded(daemon: Any, station_id: str, action: str) -> list[dict[str, Any]]:
    """The command records of ``action`` once there is one (recorded just after the answer arrives)."""
    for _ in range(250):
        found = [c for c in await daemon.store.list_commands(station_id) if c["action"] == action]
        if found:
            return found
        await asyncio.sleep(0.02)
    return []


async def test_csr_is_signed_and_delivered_with_certificate_signed(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        await register_station(d.daemon.store, "CS-3", 3)
        st = await RawStation.connect(wss(d), "CS-3", ssl=pki.client_context("CS-3"))
        st.auto_answer["CertificateSigned"] = {"status": "Accepted"}
        assert (await st.boot())["status"] == "Accepted"
        key = new_key()
        answer = await st.result("SignCertificate", {"csr": make_csr("CS-3", key),
                                                     "certificateType": "ChargingStationCertificate"})
        assert answer == {"status": "Accepted"}
        call = await next_call(st, "CertificateSigned")
        assert call[3]["certificateType"] == "ChargingStationCertificate"
        chain = x509.load_pem_x509_certificates(call[3]["certificateChain"].encode())
        leaf, ca = chain
        assert ca == pki.ca[0]
        leaf.verify_directly_issued_by(pki.ca[0])
        assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["CS-3"]
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        outcomes = await recorded(d.daemon, "CS-3", "CertificateSigned")
        assert len(outcomes) == 1 and outcomes[0]["outcome"] == "result"
        await st.close()


async def test_csr_for_another_identity_or_a_broken_csr_is_rejected(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        st = await RawStation.connect(wss(d), "CS-4", ssl=pki.client_context("CS-4"))
        await st.boot()
        answer = await st.result("SignCertificate", {"csr": make_csr("CS-OTHER")})
        assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "InvalidCSR"
        assert "CS-4" in answer["statusInfo"]["additionalInfo"]
        answer = await st.result("SignCertificate", {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nxx\n"})
        assert answer["status"] == "Rejected"
        assert st.incoming_calls.empty()  # nothing was signed
        await st.close()


async def test_typed_certificate_commands_send_valid_payloads(tmp_path: Path, pki: Pki) -> None:
    async with tls_daemon(tmp_path, pki) as d:
        st = await RawStation.connect(wss(d), "CS-5", ssl=pki.client_context("CS-5"))
        await st.boot()
        root_pem = pem_cert(pki.ca[0]).decode()
        hash_data = certificate_hash_data(root_pem)
        st.auto_answer["InstallCertificate"] = {"status": "Accepted"}
        st.auto_answer["GetInstalledCertificateIds"] = {"status": "Accepted", "certificateHashDataChain": [
            {"certificateType": "CSMSRootCertificate", "certificateHashData": hash_data}]}
        st.auto_answer["DeleteCertificate"] = {"status": "Accepted"}
        installed = await install_certificate(d.daemon.commands, "CS-5", "CSMSRootCertificate", root_pem)
        assert installed["status"] == "Accepted"
        assert (await next_call(st, "InstallCertificate"))[3] == {"certificateType": "CSMSRootCertificate",
                                                                  "certificate": root_pem}
        ids = await get_installed_certificate_ids(d.daemon.commands, "CS-5", ["CSMSRootCertificate"])
        listed = ids["certificateHashDataChain"][0]["certificateHashData"]
        assert (await delete_certificate(d.daemon.commands, "CS-5", listed))["status"] == "Accepted"
        await next_call(st, "GetInstalledCertificateIds")
        sent = await next_call(st, "DeleteCertificate")
        assert sent[3] == {"certificateHashData": hash_data}
        await st.close()
