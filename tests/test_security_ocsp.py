"""OCSP client and contract-certificate checks (csms.security.ocsp / .contracts) against a real
responder built with `cryptography` (tests/conformance/pki.py)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from csms.security.contracts import (
    ContractValidator,
    FileContractProvider,
    combine,
    load_certificates,
    load_provider,
)
from csms.security.ocsp import OcspClient, key_bits, request_der
from tests.conformance.pki import contract_pki, issue

EMAID = "NLNBWC000000019"


def test_key_bits_is_what_the_issuer_key_hash_hashes() -> None:
    root = issue("root", ca=True)
    leaf = issue("leaf", root)
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, root.cert, hashes.SHA256()).build()
    assert hashlib.sha256(key_bits(root.cert)).digest() == request.issuer_key_hash
    parsed = ocsp.load_der_ocsp_request(request_der(leaf.hash_data()))
    assert (parsed.serial_number, parsed.issuer_key_hash) == (leaf.cert.serial_number, request.issuer_key_hash)


async def test_good_revoked_unknown_and_unreachable(tmp_path: Path) -> None:
    async with contract_pki(tmp_path) as pki:
        client = OcspClient(timeout_s=2)
        good, bad = pki.contract(EMAID), pki.contract(EMAID)
        pki.responder.revoke(bad)
        stranger = issue("x", pki.sub)  # not known to the responder: refused (unauthorized)
        assert (await client.status(good.hash_data(pki.responder.url))).status == "good"
        assert (await client.status(bad.hash_data(pki.responder.url))).status == "revoked"
        assert (await client.status(stranger.hash_data(pki.responder.url))).status == "error"
        assert (await client.status(good.hash_data("http://127.0.0.1:9/ocsp"))).status == "error"
        assert (await client.status(good.hash_data("file:///etc/passwd"))).status == "error"
        asked = len(pki.responder.requests)
        assert (await client.status(good.hash_data(pki.responder.url))).status == "good"
        assert len(pki.responder.requests) == asked  # cached until nextUpdate


async def test_an_answer_signed_by_someone_else_is_not_believed(tmp_path: Path) -> None:
    async with contract_pki(tmp_path) as pki:
        leaf = pki.contract(EMAID)
        impostor = issue("impostor", ca=True)
        pki.responder.known[leaf.cert.serial_number] = type(leaf)(leaf.cert, leaf.key, impostor)
        answer = await OcspClient(timeout_s=2, cache_s=0).status(leaf.hash_data(pki.responder.url))
        assert answer.status == "error" and "issuer" in answer.reason


async def test_contract_chains(tmp_path: Path) -> None:
    async with contract_pki(tmp_path) as pki:
        validator = ContractValidator(OcspClient(timeout_s=2, cache_s=0), load_certificates(str(pki.roots_file)))
        good = pki.contract(EMAID)
        assert await validator.check_chain(good.chain_pem()) == "Accepted"
        assert await validator.check_chain(good.chain_pem() + pki.root.pem) == "Accepted"  # root sent along
        revoked = pki.contract(EMAID)
        pki.responder.revoke(revoked)
        assert await validator.check_chain(revoked.chain_pem()) == "CertificateRevoked"
        pki.responder.revoke(pki.sub)
        assert await validator.check_chain(good.chain_pem()) == "CertificateRevoked"  # a revoked sub-CA
        pki.responder.revoked.clear()
        old = pki.contract(EMAID, not_before=datetime.now(timezone.utc) - timedelta(days=5), days=1)
        assert await validator.check_chain(old.chain_pem()) == "CertificateExpired"
        assert await validator.check_chain(good.pem) == "CertChainError"  # the sub-CA is missing
        other_root = issue("other", ca=True)
        assert await validator.check_chain(issue(EMAID, issue("sub", other_root, ca=True)).chain_pem()) == \
            "CertChainError"
        forged_sub = issue("Conformance MO Sub-CA", issue("Conformance V2G Root", ca=True), ca=True)
        assert await validator.check_chain(issue(EMAID, forged_sub).chain_pem()) == "SignatureError"
        assert await validator.check_chain("garbage") == "CertChainError"
        assert await validator.check_hash_data([good.hash_data(pki.responder.url),
                                                pki.sub.hash_data(pki.responder.url)]) == "Accepted"
        assert await validator.check_hash_data([]) == "CertChainError"


@pytest.mark.parametrize("token, certificate, expected", [
    ("Accepted", "Accepted", ("Accepted", "Accepted")),
    ("ConcurrentTx", "Accepted", ("ConcurrentTx", "Accepted")),
    ("Unknown", "Accepted", ("Unknown", "ContractCancelled")),
    ("Accepted", "CertificateRevoked", ("Invalid", "CertificateRevoked")),
    ("Accepted", "CertificateExpired", ("Expired", "CertificateExpired")),
    ("Accepted", "CertChainError", ("Invalid", "CertChainError")),
])
def test_token_and_certificate_verdicts_combine(token: str, certificate: str, expected: tuple[str, str]) -> None:
    assert combine(token, certificate) == expected


async def test_file_contract_provider(tmp_path: Path) -> None:
    (tmp_path / f"{hashlib.sha256(b'request').hexdigest()}.exi").write_bytes(b"response")
    provider = load_provider({"provider": "file", "directory": str(tmp_path)})
    assert isinstance(provider, FileContractProvider)
    answer = await provider.answer("CS", "urn:iso:15118:2:2013:MsgDef", "Install", b"request")
    assert (answer.status, answer.exi_response) == ("Accepted", b"response")
    missing = await provider.answer("CS", "urn:iso:15118:2:2013:MsgDef", "Update", b"other")
    assert missing.status == "Failed" and "no prepared answer" in missing.reason
