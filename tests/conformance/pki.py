"""A contract-certificate PKI and an RFC 6960 OCSP responder for the ISO 15118 conformance tests.

Built with `cryptography`: a V2G/MO root, a sub-CA and contract (eMAID) certificates whose
Authority Information Access names the responder. The responder is a real HTTP server on
127.0.0.1 (aiohttp) that answers DER OCSP requests for the certificates it knows: good, revoked,
or unknown. It counts the requests, so a test can prove the central system asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass
class Issued:
    cert: x509.Certificate
    key: Key
    issuer: Issued | None = None

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def chain_pem(self) -> str:
        """This certificate and its issuers up to, not including, the root (as a station sends it)."""
        parts, node = [], self
        while node is not None and node.issuer is not None:
            parts.append(node.pem)
            node = node.issuer
        return "".join(parts)

    def hash_data(self, responder_url: str | None = None) -> dict[str, str]:
        """OCPP's OCSPRequestDataType / CertificateHashDataType of this certificate (SHA256)."""
        assert self.issuer is not None, "a root has no OCSP identity here"
        request = ocsp.OCSPRequestBuilder().add_certificate(self.cert, self.issuer.cert, hashes.SHA256()).build()
        data = {"hashAlgorithm": "SHA256", "issuerNameHash": request.issuer_name_hash.hex(),
                "issuerKeyHash": request.issuer_key_hash.hex(), "serialNumber": format(self.cert.serial_number, "x")}
        if responder_url is not None:
            data["responderURL"] = responder_url
        return data


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Conformance MO"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(cn: str, issuer: Issued | None = None, *, ca: bool = False, ocsp_url: str | None = None,
          not_before: datetime | None = None, days: float = 30) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(timezone.utc) - timedelta(hours=1)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(issuer.cert.subject if issuer else _name(cn)).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if ocsp_url is not None:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key, issuer)


@dataclass
class OcspResponder:
    """Answers OCSP for ``known`` certificates; ``revoked`` serials are reported revoked.

    Responses are signed by the certificate's issuer and carry the issuer's certificate (RFC 6960
    4.2.1 ``certs``), so the central system can check the signature without knowing the issuer.
    """

    url: str = ""
    known: dict[int, Issued] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)
    requests: list[ocsp.OCSPRequest] = field(default_factory=list)

    def add(self, *certs: Issued) -> None:
        for c in certs:
            self.known[c.cert.serial_number] = c

    def revoke(self, cert: Issued) -> None:
        self.revoked.add(cert.cert.serial_number)

    async def handle(self, request: web.Request) -> web.Response:
        req = ocsp.load_der_ocsp_request(await request.read())
        self.requests.append(req)
        found = self.known.get(req.serial_number)
        if found is None or found.issuer is None:
            der = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        else:
            now = datetime.now(timezone.utc)
            revoked = req.serial_number in self.revoked
            builder = ocsp.OCSPResponseBuilder().add_response(
                cert=found.cert, issuer=found.issuer.cert, algorithm=req.hash_algorithm,
                cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                this_update=now - timedelta(minutes=1), next_update=now + timedelta(hours=1),
                revocation_time=now - timedelta(days=1) if revoked else None,
                revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
            ).responder_id(ocsp.OCSPResponderEncoding.HASH, found.issuer.cert).certificates([found.issuer.cert])
            der = builder.sign(found.issuer.key, hashes.SHA256())
        return web.Response(body=der.public_bytes(serialization.Encoding.DER),
                            content_type="application/ocsp-response")


@contextlib.asynccontextmanager
async def ocsp_responder() -> AsyncIterator[OcspResponder]:
    """An OCSP responder on 127.0.0.1 (ephemeral port) at ``responder.url``."""
    responder = OcspResponder()
    app = web.Application()
    app.router.add_post("/ocsp", responder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    responder.url = f"http://127.0.0.1:{port}/ocsp"
    try:
        yield responder
    finally:
        await runner.cleanup()


@dataclass
class ContractPki:
    """MO root -> MO sub-CA -> contract certificates, with the root written to ``roots_file``."""

    root: Issued
    sub: Issued
    roots_file: Path
    responder: OcspResponder

    def contract(self, emaid: str, **kwargs: Any) -> Issued:
        leaf = issue(emaid, self.sub, ocsp_url=self.responder.url, **kwargs)
        self.responder.add(leaf)
        return leaf


@contextlib.asynccontextmanager
async def contract_pki(folder: Path) -> AsyncIterator[ContractPki]:
    async with ocsp_responder() as responder:
        root = issue("Conformance V2G Root", ca=True, days=365)
        sub = issue("Conformance MO Sub-CA", root, ca=True, ocsp_url=responder.url, days=180)
        responder.add(sub)
        roots_file = folder / "mo-roots.pem"
        roots_file.write_text(root.pem)
        yield ContractPki(root, sub, roots_file, responder)
