"""Block M, ISO 15118 certificate management (issue 17 items 3 and 9).

Covers TC_M_01..05 (M05 InstallCertificate per type, a Failed answer kept), TC_M_12..19 (M03
GetInstalledCertificateIds kept as the station reported them, NotFound included), TC_M_20/21 (M04
DeleteCertificate by serial number with the hash data exactly as the station reported it:
M04.FR.07), TC_M_24 (M06 GetCertificateStatus: the CSMS asks the OCSP responder and returns the
DER response base64 encoded: M06.FR.01/02/08/09) and TC_M_26/28 (M01/M02 Get15118EVCertificate
answered by the file-based contract-certificate provider).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.x509 import ocsp

from tests.conformance.pki import contract_pki, issue
from tests.conformance.station import rig


@pytest.mark.parametrize("certificate_type", ["CSMSRootCertificate", "ManufacturerRootCertificate",
                                              "V2GRootCertificate", "MORootCertificate"])
async def test_m05_install_a_ca_certificate(tmp_path: Path, certificate_type: str) -> None:
    root = issue(f"Conformance {certificate_type}", ca=True)
    async with rig(tmp_path) as r, r.station("M-5") as st:
        assert await r.command("M-5", "install-certificate", {"certificate_type": certificate_type,
                                                              "certificate": root.pem}) == {"status": "Accepted"}
        assert await st.expect("InstallCertificate") == {"certificateType": certificate_type,
                                                         "certificate": root.pem}
        installs = (await r.get("/api/stations/M-5/certificates"))["installs"]
        assert installs[-1]["certificate_type"] == certificate_type and installs[-1]["status"] == "Accepted"
        assert installs[-1]["serial_number"] == format(root.cert.serial_number, "x")


async def test_m05_a_failed_install_and_bad_input(tmp_path: Path) -> None:
    root = issue("Conformance root", ca=True)
    async with rig(tmp_path) as r, r.station("M-6", answers={"InstallCertificate": {"status": "Failed"}}) as st:
        assert await r.command("M-6", "install-certificate", {"certificate_type": "CSMSRootCertificate",
                                                              "certificate": root.pem}) == {"status": "Failed"}
        assert (await r.get("/api/stations/M-6/certificates"))["installs"][-1]["status"] == "Failed"  # TC_M_05
        await r.refused("M-6", "install-certificate", {"certificate_type": "CSMSRootCertificate",
                                                       "certificate": "-----BEGIN nonsense"}, field="certificate")
        await r.refused("M-6", "install-certificate", {"certificate_type": "ChargingStationCertificate",
                                                       "certificate": root.pem}, field="certificate_type")
        assert len(st.calls("InstallCertificate")) == 1


async def test_m03_m04_installed_certificates_and_deleting_one_as_reported(tmp_path: Path) -> None:
    root, other = issue("V2G root", ca=True), issue("CSMS root", ca=True)
    reported_root = {"hashAlgorithm": "SHA384",
                     "issuerNameHash": "a" * 96, "issuerKeyHash": "b" * 96,
                     "serialNumber": format(root.cert.serial_number, "x")}
    reported_other = {"hashAlgorithm": "SHA256", "issuerNameHash": "c" * 64, "issuerKeyHash": "d" * 64,
                      "serialNumber": format(other.cert.serial_number, "x")}
    answer = {"status": "Accepted", "certificateHashDataChain": [
        {"certificateType": "V2GRootCertificate", "certificateHashData": reported_root},
        {"certificateType": "CSMSRootCertificate", "certificateHashData": reported_other}]}
    async with rig(tmp_path) as r, r.station("M-3", answers={"GetInstalledCertificateIds": answer}) as st:
        got = await r.command("M-3", "get-installed-certificate-ids",
                              {"certificate_types": ["V2GRootCertificate", "CSMSRootCertificate"]})
        assert got == answer
        assert await st.expect("GetInstalledCertificateIds") == {
            "certificateType": ["V2GRootCertificate", "CSMSRootCertificate"]}
        installed = (await r.get("/api/stations/M-3/certificates"))["installed"]
        assert {(c["certificate_type"], c["serial_number"]) for c in installed} == {
            ("V2GRootCertificate", reported_root["serialNumber"]),
            ("CSMSRootCertificate", reported_other["serialNumber"])}

        assert await r.command("M-3", "delete-certificate", {"serial_number": reported_root["serialNumber"]}) == {
            "status": "Accepted"}
        # M04.FR.07: the same hashAlgorithm (and hashes) as the station reported.
        assert await st.expect("DeleteCertificate") == {"certificateHashData": reported_root}
        installed = (await r.get("/api/stations/M-3/certificates"))["installed"]
        assert [c["certificate_type"] for c in installed] == ["CSMSRootCertificate"]
        await r.refused("M-3", "delete-certificate", {"serial_number": "abc123"}, field="serial_number")

        st.answers["GetInstalledCertificateIds"] = {"status": "NotFound"}  # TC_M_19
        assert await r.command("M-3", "get-installed-certificate-ids",
                               {"certificate_types": ["MORootCertificate"]}) == {"status": "NotFound"}
        st.answers["DeleteCertificate"] = {"status": "Failed"}  # TC_M_21
        assert await r.command("M-3", "delete-certificate", {"certificate_hash_data": reported_other}) == {
            "status": "Failed"}


async def test_m06_certificate_status_from_the_ocsp_responder(tmp_path: Path) -> None:
    async with contract_pki(tmp_path) as pki, rig(tmp_path) as r, r.station("M-24") as st:
        leaf = pki.contract("M-STATION-V2G")
        answer = await st.send("GetCertificateStatus", {"ocspRequestData": leaf.hash_data(pki.responder.url)})
        assert answer["status"] == "Accepted"  # M06.FR.01
        response = ocsp.load_der_ocsp_response(base64.b64decode(answer["ocspResult"]))  # M06.FR.02/08/09
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.serial_number == leaf.cert.serial_number
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert len(pki.responder.requests) == 1

        unknown = leaf.hash_data("http://127.0.0.1:9/ocsp")
        answer = await st.send("GetCertificateStatus", {"ocspRequestData": unknown})
        assert answer["status"] == "Failed" and answer["statusInfo"]["reasonCode"]


@pytest.mark.parametrize("action", ["Install", "Update"])
async def test_m01_m02_contract_certificates_from_the_file_provider(tmp_path: Path, action: str) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    exi_request = os.urandom(64)
    exi_response = os.urandom(300)
    (folder / f"{hashlib.sha256(exi_request).hexdigest()}.exi").write_bytes(exi_response)
    config = {"iso15118": {"contract_certificates": {"provider": "file", "directory": str(folder)}}}
    async with rig(tmp_path, **config) as r, r.station("M-1") as st:
        answer = await st.send("Get15118EVCertificate", {"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                                                         "action": action,
                                                         "exiRequest": base64.b64encode(exi_request).decode()})
        assert answer["status"] == "Accepted" and base64.b64decode(answer["exiResponse"]) == exi_response
        unknown = await st.send("Get15118EVCertificate", {"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                                                          "action": action,
                                                          "exiRequest": base64.b64encode(b"other").decode()})
        assert unknown["status"] == "Failed" and unknown["statusInfo"]["reasonCode"]
