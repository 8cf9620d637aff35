"""Block L, Firmware management (issue 17 item 9): typed UpdateFirmware / PublishFirmware /
UnpublishFirmware with the central system keeping every request and its status history.

Covers TC_L_01..03 (L01 secure update; L01.FR.11: the firmware signing certificate is included,
from the config unless the request gives one), TC_L_04..09 (failure statuses kept as reported),
TC_L_10/11 (AcceptedCanceled / Rejected answers kept), L02 (no certificate configured: a plain
update), TC_L_17..24 (L03/L04 publish and unpublish on a local controller).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conformance.pki import issue
from tests.conformance.station import Rig, Station, rig

FIRMWARE_URL = "https://firmware.example/cs-2.0.bin"
CHECKSUM = "0123456789abcdef0123456789abcdef"


async def _statuses(st: Station, request_id: int, statuses: list[str]) -> None:
    for status in statuses:
        assert await st.send("FirmwareStatusNotification", {"status": status, "requestId": request_id}) == {}


async def _update(r: Rig, station_id: str, request_id: int) -> dict:
    updates = (await r.get(f"/api/stations/{station_id}/firmware"))["updates"]
    return next(u for u in updates if u["request_id"] == request_id)


async def test_l01_secure_update_with_the_configured_signing_certificate(tmp_path: Path) -> None:
    signer = issue("Conformance Firmware Signer", ca=False)
    cert_file = tmp_path / "firmware-signer.pem"
    cert_file.write_text(signer.pem)
    async with rig(tmp_path, firmware={"signing_certificate_file": str(cert_file)}) as r, r.station("L-1") as st:
        install_at = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
        answer = await r.command("L-1", "update-firmware", {
            "location": FIRMWARE_URL, "signature": "c2lnbmF0dXJl", "retries": 3, "retry_interval_s": 60,
            "install_date_time": install_at.isoformat().replace("+00:00", "Z")})
        assert answer == {"status": "Accepted"}
        sent = await st.expect("UpdateFirmware")
        firmware = sent["firmware"]
        assert firmware["location"] == FIRMWARE_URL and firmware["signature"] == "c2lnbmF0dXJl"
        assert firmware["signingCertificate"] == signer.pem  # L01.FR.11
        assert firmware["retrieveDateTime"] and firmware["installDateTime"]
        assert (sent["retries"], sent["retryInterval"]) == (3, 60) and isinstance(sent["requestId"], int)
        request_id = sent["requestId"]
        await _statuses(st, request_id, ["Downloading", "Downloaded", "SignatureVerified", "InstallScheduled",
                                         "Installing", "InstallRebooting"])
        kept = await _update(r, "L-1", request_id)
        assert kept["location"] == FIRMWARE_URL and kept["answer"] == "Accepted"
        assert [h["status"] for h in kept["history"]] == ["Downloading", "Downloaded", "SignatureVerified",
                                                          "InstallScheduled", "Installing", "InstallRebooting"]
        assert kept["status"] == "InstallRebooting"
    async with rig(tmp_path, firmware={"signing_certificate_file": str(cert_file)}) as r, \
            r.station("L-1", boot=False) as st:
        await st.send("BootNotification", {"reason": "FirmwareUpdate", "chargingStation": {
            "vendorName": "Conformance", "model": "OCTT-like", "firmwareVersion": "2.0"}})
        await _statuses(st, request_id, ["Installed"])
        assert (await _update(r, "L-1", request_id))["status"] == "Installed"  # kept across a restart
        assert (await r.get("/api/stations/L-1"))["firmware_version"] == "2.0"


@pytest.mark.parametrize("failure", ["InvalidSignature",
                                     "DownloadFailed", "InstallVerificationFailed", "InstallationFailed"])
async def test_l01_failures_are_kept_as_reported(tmp_path: Path, failure: str) -> None:
    async with rig(tmp_path) as r, r.station("L-2") as st:
        await r.command("L-2", "update-firmware", {"location": FIRMWARE_URL})
        sent = await st.expect("UpdateFirmware")
        assert "signingCertificate" not in sent["firmware"]  # L02: nothing configured, nothing given
        if failure.startswith("Install"):
            await _statuses(st, sent["requestId"], ["Downloading", "Downloaded", "Installing"])
        await _statuses(st, sent["requestId"], [failure])
        assert (await _update(r, "L-2", sent["requestId"]))["status"] == failure


@pytest.mark.parametrize("answer", ["AcceptedCanceled", "Rejected", "InvalidCertificate", "RevokedCertificate"])
async def test_l01_answers_other_than_accepted_are_kept(tmp_path: Path, answer: str) -> None:
    async with rig(tmp_path) as r, r.station("L-3", answers={"UpdateFirmware": {"status": answer}}) as st:
        assert await r.command("L-3", "update-firmware", {"location": FIRMWARE_URL}) == {"status": answer}
        kept = await _update(r, "L-3", (await st.expect("UpdateFirmware"))["requestId"])
        assert kept["answer"] == answer


async def test_l01_invalid_requests_are_refused(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("L-4") as st:
        await r.refused("L-4", "update-firmware", {}, field="location")
        await r.refused("L-4", "update-firmware", {"location": FIRMWARE_URL, "signing_certificate": "not a PEM"},
                        field="signing_certificate")
        await r.refused("L-4", "update-firmware", {"location": FIRMWARE_URL, "retrieve_date_time": "tomorrow"},
                        field="retrieve_date_time")
        assert st.calls("UpdateFirmware") == []


async def test_l03_l04_publish_and_unpublish_on_a_local_controller(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("L-5") as st:
        answer = await r.command("L-5", "publish-firmware", {"location": FIRMWARE_URL, "checksum": CHECKSUM,
                                                             "retries": 2, "retry_interval_s": 30})
        assert answer == {"status": "Accepted"}
        sent = await st.expect("PublishFirmware")
        assert (sent["location"], sent["checksum"], sent["retries"], sent["retryInterval"]) == (
            FIRMWARE_URL, CHECKSUM, 2, 30)
        for status in ("Downloading", "Downloaded", "ChecksumVerified"):
            await st.send("PublishFirmwareStatusNotification", {"status": status, "requestId": sent["requestId"]})
        await st.send("PublishFirmwareStatusNotification", {"status": "Published", "requestId": sent["requestId"],
                                                            "location": ["http://lc.local/fw.bin"]})
        published = (await r.get("/api/stations/L-5/firmware"))["publications"]
        assert published[-1]["status"] == "Published" and published[-1]["locations"] == ["http://lc.local/fw.bin"]
        assert published[-1]["checksum"] == CHECKSUM
        assert await r.command("L-5", "unpublish-firmware", {"checksum": CHECKSUM}) == {"status": "Unpublished"}
        assert await st.expect("UnpublishFirmware") == {"checksum": CHECKSUM}
        assert (await r.get("/api/stations/L-5/firmware"))["publications"][-1]["status"] == "Unpublished"
        await r.refused("L-5", "publish-firmware", {"location": FIRMWARE_URL, "checksum": "xyz"}, field="checksum")
        st.answers["UnpublishFirmware"] = {"status": "NoFirmware"}  # TC_L_22
        assert await r.command("L-5", "unpublish-firmware", {"checksum": CHECKSUM}) == {"status": "NoFirmware"}
