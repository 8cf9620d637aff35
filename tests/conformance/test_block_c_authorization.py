"""Block C, Authorization: id token statuses, group ids, the authorisation cache and ISO 15118
contract certificates (Plug & Charge) checked with OCSP.

Covers TC_C_02/06/07 (C01.FR.07 status with a reason, C04.FR.01 an invalid key code, Central
tokens looked up like any other: issue 17 item 1), TC_C_39 (C09.FR.02 groupIdToken), TC_C_37/38
(C11 ClearCache through the API), C12.FR.03 (the status is checked again in TransactionEvent) and
TC_C_50/51/52 (C07.FR.04/05/16, issue 17 item 3): with ``iso15118CertificateHashData`` the
central system asks the OCSP responder named in it; with a PEM ``certificate`` it checks the chain
against its configured V2G/MO roots and asks the responder from the certificate's AIA extension.
The responder is a real one (tests/conformance/pki.py) that counts what it was asked.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conformance.pki import contract_pki, issue
from tests.conformance.station import iso, rig

EMAID = "NLNBWC000000019"


async def test_c01_status_of_unknown_blocked_expired_and_made_up_tokens(tmp_path: Path) -> None:
    yesterday = iso(datetime.now(timezone.utc) - timedelta(days=1))
    async with rig(tmp_path) as r, r.station("C-1") as st:
        await r.id_token("C-BLOCKED", status="Blocked")
        await r.id_token("C-OLD", expiry=yesterday)
        await r.id_token("C-OK")

        async def status(token: str, type_: str = "ISO14443") -> str:
            return (await st.send("Authorize", {"idToken": {"idToken": token, "type": type_}}))["idTokenInfo"]["status"]

        assert await status("C-UNKNOWN") == "Unknown"  # TC_C_02
        assert await status("C-BLOCKED") == "Blocked"  # TC_C_06
        assert await status("C-OLD") == "Expired"  # TC_C_07
        assert await status("C-OK") == "Accepted"
        assert await status("MADE-UP", "Central") == "Unknown"  # issue 17 item 1
        assert await status("1234", "KeyCode") == "Invalid"  # C04.FR.01: a key code that is not valid


async def test_c09_group_id_token_in_authorize_and_transaction_event(tmp_path: Path) -> None:
    """C09.FR.02 / E01.FR.12: tokens of one group carry the group's groupIdToken."""
    async with rig(tmp_path) as r, r.station("C-9") as st:
        await r.id_token("C-A", group_id="FLEET-1")
        await r.id_token("C-B", group_id="FLEET-1")
        for token in ("C-A", "C-B"):
            info = (await st.send("Authorize", {"idToken": {"idToken": token, "type": "ISO14443"}}))["idTokenInfo"]
            assert info["status"] == "Accepted" and info["groupIdToken"]["idToken"] == "FLEET-1"
        answer = await st.transaction("Started", "C-TX", id_token={"idToken": "C-A", "type": "ISO14443"})
        assert answer["idTokenInfo"]["groupIdToken"]["idToken"] == "FLEET-1"
        # Stopped by the other member of the group (C09.FR.03 is the station's; the CSMS must accept it).
        answer = await st.transaction("Ended", "C-TX", trigger="StopAuthorized",
                                      id_token={"idToken": "C-B", "type": "ISO14443"},
                                      info={"stoppedReason": "Local"})
        assert answer["idTokenInfo"]["status"] == "Accepted"


async def test_c12_transaction_event_checks_the_token_status_again(tmp_path: Path) -> None:
    """C12.FR.03: a token started from the station's cache is checked by the CSMS (it may be blocked now)."""
    async with rig(tmp_path) as r, r.station("C-12") as st:
        await r.id_token("C-CACHED", status="Blocked")
        answer = await st.transaction("Started", "C-TX12", id_token={"idToken": "C-CACHED", "type": "ISO14443"})
        assert answer["idTokenInfo"]["status"] == "Blocked"


@pytest.mark.parametrize("answer", ["Accepted", "Rejected"])
async def test_c11_clear_authorization_cache(tmp_path: Path, answer: str) -> None:
    """TC_C_37/38: ClearCache through the API; the station's answer is returned either way."""
    async with rig(tmp_path) as r, r.station("C-11", answers={"ClearCache": {"status": answer}}) as st:
        assert await r.command("C-11", "clear-cache") == {"status": answer}
        assert await st.expect("ClearCache") == {}


async def test_c07_hash_data_is_checked_with_the_responder_it_names(tmp_path: Path) -> None:
    """TC_C_50 (good: Accepted/Accepted) and TC_C_51 (revoked: Invalid/CertificateRevoked, C07.FR.16)."""
    async with contract_pki(tmp_path) as pki, rig(tmp_path) as r, r.station("C-7") as st:
        await r.id_token(EMAID, type_="eMAID")
        good, bad = pki.contract(EMAID), pki.contract(EMAID)
        pki.responder.revoke(bad)
        token = {"idToken": EMAID, "type": "eMAID"}

        answer = await st.send("Authorize", {"idToken": token, "iso15118CertificateHashData": [
            good.hash_data(pki.responder.url), pki.sub.hash_data(pki.responder.url)]})
        assert answer["certificateStatus"] == "Accepted" and answer["idTokenInfo"]["status"] == "Accepted"
        asked = {r.serial_number for r in pki.responder.requests}
        assert asked == {good.cert.serial_number, pki.sub.cert.serial_number}  # C07.FR.05: every certificate

        answer = await st.send("Authorize", {"idToken": token, "iso15118CertificateHashData": [
            bad.hash_data(pki.responder.url)]})
        assert answer == {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertificateRevoked"}


async def test_c07_central_validation_of_a_certificate_chain(tmp_path: Path) -> None:
    """TC_C_52 (C07.FR.05): chain to a configured root, validity dates, OCSP from the AIA extension."""
    async with contract_pki(tmp_path) as pki:
        config = {"iso15118": {"trust_anchors_file": str(pki.roots_file), "ocsp_timeout_s": 2}}
        async with rig(tmp_path, **config) as r, r.station("C-52") as st:
            await r.id_token(EMAID, type_="eMAID")
            token = {"idToken": EMAID, "type": "eMAID"}

            good = pki.contract(EMAID)
            answer = await st.send("Authorize", {"idToken": token, "certificate": good.chain_pem()})
            assert answer["certificateStatus"] == "Accepted" and answer["idTokenInfo"]["status"] == "Accepted"
            assert good.cert.serial_number in {q.serial_number for q in pki.responder.requests}

            revoked = pki.contract(EMAID)
            pki.responder.revoke(revoked)
            answer = await st.send("Authorize", {"idToken": token, "certificate": revoked.chain_pem()})
            assert answer == {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertificateRevoked"}

            expired = pki.contract(EMAID, not_before=datetime.now(timezone.utc) - timedelta(days=10), days=2)
            answer = await st.send("Authorize", {"idToken": token, "certificate": expired.chain_pem()})
            assert answer == {"idTokenInfo": {"status": "Expired"}, "certificateStatus": "CertificateExpired"}

            stranger_root = issue("Somebody else's root", ca=True)
            stranger = issue(EMAID, issue("Sub", stranger_root, ca=True), ocsp_url=pki.responder.url)
            answer = await st.send("Authorize", {"idToken": token, "certificate": stranger.chain_pem()})
            assert answer["certificateStatus"] == "CertChainError" and answer["idTokenInfo"]["status"] == "Invalid"

            answer = await st.send("Authorize", {"idToken": token, "certificate": "not a certificate"})
            assert answer["certificateStatus"] != "Accepted" and answer["idTokenInfo"]["status"] != "Accepted"


async def test_c07_an_unreachable_responder_never_accepts(tmp_path: Path) -> None:
    async with contract_pki(tmp_path) as pki, rig(tmp_path, iso15118={"ocsp_timeout_s": 1}) as r, \
            r.station("C-OFF") as st:
        await r.id_token(EMAID, type_="eMAID")
        leaf = pki.contract(EMAID)
        answer = await st.send("Authorize", {"idToken": {"idToken": EMAID, "type": "eMAID"},
                                             "iso15118CertificateHashData": [
                                                 leaf.hash_data("http://127.0.0.1:9/ocsp")]})
        assert answer["idTokenInfo"]["status"] != "Accepted"
        assert answer.get("certificateStatus") not in (None, "Accepted")
