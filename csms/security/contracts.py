"""ISO 15118 contract certificates: checking them in Authorize (C07) and providing them (M01/M02).

**Checking.** A station sends either the hashes of the contract certificate chain with the
responder to ask (``iso15118CertificateHashData``: it checked the chain itself), or the chain as
PEM (``certificate``: the central system checks everything). The verdict is OCPP's
AuthorizeCertificateStatusEnumType:

| what | verdict | idTokenInfo.status |
|---|---|---|
| every certificate good | Accepted (ContractCancelled if the token is refused) | the token's own status |
| a certificate revoked | CertificateRevoked | Invalid |
| a certificate outside its validity | CertificateExpired | Expired |
| a signature in the chain does not verify | SignatureError | Invalid |
| no chain to a trust anchor, a responder that cannot be reached or answers nonsense | CertChainError | Invalid |

**Providing.** Get15118EVCertificate forwards the EV's EXI-encoded CertificateInstallationReq or
CertificateUpdateReq to a contract-certificate provider (a mobility operator's or certificate pool's
backend) and returns its EXI answer. The default provider reads prepared answers from a folder: the
file ``<sha256 of the decoded exiRequest>.exi`` holds the decoded exiResponse. Other providers are
plugged in by ``module:factory`` (the factory gets the provider's config mapping).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from csms.security.ocsp import OcspClient

ACCEPTED, REVOKED, EXPIRED = "Accepted", "CertificateRevoked", "CertificateExpired"
SIGNATURE_ERROR, CHAIN_ERROR, CONTRACT_CANCELLED = "SignatureError", "CertChainError", "ContractCancelled"
TOKEN_STATUS = {REVOKED: "Invalid", EXPIRED: "Expired", SIGNATURE_ERROR: "Invalid", CHAIN_ERROR: "Invalid"}


def combine(token_status: str, certificate_status: str) -> tuple[str, str]:
    """(idTokenInfo.status, certificateStatus) from the token's own status and the certificate's."""
    if certificate_status != ACCEPTED:
        return TOKEN_STATUS.get(certificate_status, "Invalid"), certificate_status
    if token_status in ("Blocked", "Expired", "Invalid", "Unknown"):
        return token_status, CONTRACT_CANCELLED
    return token_status, ACCEPTED


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (trust anchors: V2G / MO roots and, if wanted, sub-CAs)."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    return next((d.access_location.value for d in aia
                 if d.access_method == AuthorityInformationAccessOID.OCSP
                 and isinstance(d.access_location, x509.UniformResourceIdentifier)), None)


def hash_data(cert: x509.Certificate, issuer: x509.Certificate, responder_url: str | None = None) -> dict[str, str]:
    """OCPP's OCSPRequestData for ``cert`` (SHA256), as a station would send it."""
    request = x509_ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    data = {"hashAlgorithm": "SHA256", "issuerNameHash": request.issuer_name_hash.hex(),
            "issuerKeyHash": request.issuer_key_hash.hex(), "serialNumber": format(cert.serial_number, "x")}
    if responder_url is not None:
        data["responderURL"] = responder_url
    return data


class ContractValidator:
    """C07: the verdict on a contract certificate, by OCSP and (for a PEM chain) the trust anchors."""

    def __init__(self, ocsp: OcspClient, trust_anchors: Sequence[x509.Certificate] = ()) -> None:
        self.ocsp = ocsp
        self.trust_anchors = list(trust_anchors)

    async def check_hash_data(self, entries: Sequence[Mapping[str, Any]]) -> str:
        answers = await asyncio.gather(*(self.ocsp.status(dict(e)) for e in entries))
        if any(a.status == "revoked" for a in answers):
            return REVOKED
        if not answers or any(a.status != "good" for a in answers):
            return CHAIN_ERROR
        return ACCEPTED

    async def check_chain(self, pem: str, now: datetime | None = None) -> str:
        try:
            chain = x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            return CHAIN_ERROR
        moment = now or datetime.now(timezone.utc)
        if any(not c.not_valid_before_utc <= moment <= c.not_valid_after_utc for c in chain):
            return EXPIRED
        links: list[tuple[x509.Certificate, x509.Certificate]] = []
        for n, cert in enumerate(chain):
            if n + 1 < len(chain):
                issuer = chain[n + 1]
            elif self._is_anchor(cert):
                break  # the station sent the root along
            else:
                found = self._anchor_of(cert)
                if found is None:
                    return CHAIN_ERROR
                issuer = found
            verdict = _issued_by(cert, issuer)
            if verdict != ACCEPTED:
                return verdict
            links.append((cert, issuer))
        checks = []
        for n, (cert, issuer) in enumerate(links):
            url = ocsp_url(cert)
            if url is None:
                if n == 0:
                    return CHAIN_ERROR  # C07.FR.05: the contract certificate itself must be checkable
                continue
            checks.append(self.ocsp.status(hash_data(cert, issuer, url), issuer=issuer))
        answers = await asyncio.gather(*checks)
        if any(a.status == "revoked" for a in answers):
            return REVOKED
        if any(a.status != "good" for a in answers):
            return CHAIN_ERROR
        return ACCEPTED

    def _is_anchor(self, cert: x509.Certificate) -> bool:
        fingerprint = cert.fingerprint(hashes.SHA256())
        return any(a.fingerprint(hashes.SHA256()) == fingerprint for a in self.trust_anchors)

    def _anchor_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        return next((a for a in self.trust_anchors if a.subject == cert.issuer), None)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> str:
    if cert.issuer != issuer.subject:
        return CHAIN_ERROR
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return SIGNATURE_ERROR
    except (ValueError, TypeError):
        return CHAIN_ERROR
    return ACCEPTED


# Providing contract certificates (M01 / M02) -----------------------------------------------------
@dataclass(frozen=True)
class ContractAnswer:
    status: str  # Accepted | Failed (Iso15118EVCertificateStatusEnumType)
    exi_response: bytes = b""
    reason: str = ""


class ContractCertificateProvider(Protocol):
    """Answers an EV's certificate installation or update request (EXI in, EXI out)."""

    async def answer(self, station_id: str, schema_version: str, action: str, exi_request: bytes) -> ContractAnswer:
        ...


class FileContractProvider:
    """Prepared answers in a folder, named by the SHA-256 of the EXI request they answer."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    async def answer(self, station_id: str, schema_version: str, action: str, exi_request: bytes) -> ContractAnswer:
        name = f"{hashlib.sha256(exi_request).hexdigest()}.exi"
        try:
            data = await asyncio.to_thread((self.directory / name).read_bytes)
        except FileNotFoundError:
            return ContractAnswer("Failed", reason=f"no prepared answer {name} for this {action} request")
        except OSError as exc:
            return ContractAnswer("Failed", reason=f"cannot read {name}: {exc.strerror or exc}")
        return ContractAnswer("Accepted", data)


def load_provider(config: Mapping[str, Any]) -> ContractCertificateProvider:
    """``{provider: file, directory: ...}`` or ``{provider: "package.module:factory", ...}``."""
    kind = config.get("provider", "file")
    if kind == "file":
        return FileContractProvider(str(config["directory"]))
    module_name, _, factory = str(kind).partition(":")
    provider: ContractCertificateProvider = getattr(importlib.import_module(module_name), factory)(dict(config))
    return provider


class Iso15118:
    """ISO 15118 for the OCPP 2.0.1 handlers (csms.ocpp.package.Iso15118Checks)."""

    def __init__(self, ocsp: OcspClient, validator: ContractValidator,
                 provider: ContractCertificateProvider | None = None) -> None:
        self.ocsp = ocsp
        self.validator = validator
        self.provider = provider

    async def contract_status(self, payload: Mapping[str, Any]) -> str | None:
        if payload.get("certificate"):
            return await self.validator.check_chain(payload["certificate"])
        if payload.get("iso15118CertificateHashData"):
            return await self.validator.check_hash_data(payload["iso15118CertificateHashData"])
        return None

    async def certificate_status(self, ocsp_request_data: Mapping[str, Any]) -> dict[str, Any]:
        """M06: ask the responder; the station gets its DER answer base64 encoded (M06.FR.02/08/09)."""
        answer = await self.ocsp.status(dict(ocsp_request_data))
        if answer.der is None:
            return {"status": "Failed", "statusInfo": {"reasonCode": "OCSPUnavailable",
                                                       "additionalInfo": answer.reason[:512]}}
        return {"status": "Accepted", "ocspResult": base64.b64encode(answer.der).decode()}

    async def ev_certificate(self, station_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """M01/M02: the EV's EXI request to the contract-certificate provider, its EXI answer back."""
        if self.provider is None:
            return {"status": "Failed", "exiResponse": "", "statusInfo": {
                "reasonCode": "NoContractProvider",
                "additionalInfo": "no contract-certificate provider is configured (iso15118.contract_certificates)"}}
        try:
            exi = base64.b64decode(payload["exiRequest"], validate=True)
        except (ValueError, binascii.Error):
            return {"status": "Failed", "exiResponse": "", "statusInfo": {"reasonCode": "InvalidExi",
                                                                          "additionalInfo": "exiRequest is not base64"}}
        answer = await self.provider.answer(station_id, payload["iso15118SchemaVersion"], payload["action"], exi)
        out: dict[str, Any] = {"status": answer.status, "exiResponse": base64.b64encode(answer.exi_response).decode()}
        if answer.reason:
            out["statusInfo"] = {"reasonCode": "NoContract" if answer.status != "Accepted" else "Info",
                                 "additionalInfo": answer.reason[:512]}
        return out


def build_iso15118(trust_anchors_file: str | None, ocsp_timeout_s: float, ocsp_cache_s: float,
                   provider: Mapping[str, Any] | None) -> Iso15118:
    anchors = load_certificates(trust_anchors_file) if trust_anchors_file else []
    ocsp = OcspClient(timeout_s=ocsp_timeout_s, cache_s=ocsp_cache_s, trusted=anchors)
    return Iso15118(ocsp, ContractValidator(ocsp, anchors), load_provider(provider) if provider else None)
