"""An OCSP client (RFC 6960) for ISO 15118 certificates: contract certificates in Authorize (C07)
and the station's own V2G certificate in GetCertificateStatus (M06).

OCPP hands the central system a certificate's identity as hashes (``OCSPRequestDataType``:
issuer name hash, issuer key hash, serial number and the responder's URL), so the request is built
from those with `cryptography` and POSTed to the responder. An answer counts only when it is
signed by the certificate's issuer or by a responder that issuer delegated to (EKU OCSPSigning);
the signer's certificate comes from the response itself, from the caller (who may hold the
issuer), or from the configured trust anchors. Good answers are cached until their nextUpdate
(at most ``cache_s``); errors are not cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger("csms.security.ocsp")

HASHES: dict[str, type[hashes.HashAlgorithm]] = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384,
                                                 "SHA512": hashes.SHA512}
MAX_RESPONSE_BYTES = 64 * 1024
CLOCK_SKEW = timedelta(minutes=5)

Status = Literal["good", "revoked", "unknown", "error"]


@dataclass(frozen=True)
class OcspAnswer:
    status: Status
    der: bytes | None = None  # the responder's DER response, when it answered at all
    reason: str = ""


class OcspError(Exception):
    """The request could not be made or the answer cannot be trusted (the message says why)."""


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, pos, pos + length


def key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING content of a certificate (what issuerKeyHash hashes)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    _, start, _ = _tlv(spki, 0)  # SubjectPublicKeyInfo SEQUENCE
    _, _, algorithm_end = _tlv(spki, start)  # AlgorithmIdentifier
    _, bits_start, bits_end = _tlv(spki, algorithm_end)  # BIT STRING
    return spki[bits_start + 1:bits_end]  # without the unused-bits octet


def request_der(hash_data: dict[str, Any]) -> bytes:
    """The DER OCSP request for one OCPP OCSPRequestData / CertificateHashData."""
    algorithm = HASHES.get(hash_data.get("hashAlgorithm", ""))
    if algorithm is None:
        raise OcspError(f"unsupported hashAlgorithm {hash_data.get('hashAlgorithm')!r}")
    try:
        name_hash = bytes.fromhex(hash_data["issuerNameHash"])
        key_hash = bytes.fromhex(hash_data["issuerKeyHash"])
        serial = int(hash_data["serialNumber"], 16)
    except (KeyError, ValueError) as exc:
        raise OcspError(f"unusable certificate hash data: {exc}") from None
    size = algorithm().digest_size
    if len(name_hash) != size or len(key_hash) != size:
        raise OcspError(f"hash lengths do not match {hash_data['hashAlgorithm']}")
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, algorithm()).build()
    return request.public_bytes(serialization.Encoding.DER)


def _verify(cert: x509.Certificate, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _is_signer(cert: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    if response.responder_key_hash is not None:
        return hashlib.sha1(key_bits(cert)).digest() == response.responder_key_hash  # noqa: S324 - RFC 6960 KeyHash
    return cert.subject == response.responder_name


class OcspClient:
    """Asks OCSP responders; ``trusted`` certificates may be the issuers or delegated signers."""

    def __init__(self, timeout_s: float = 5.0, cache_s: float = 300.0, trusted: Sequence[x509.Certificate] = (),
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.trusted = list(trusted)
        self.clock = clock
        self._cache: dict[tuple[str, ...], tuple[float, OcspAnswer]] = {}

    async def fetch(self, url: str, der_request: bytes) -> bytes:
        """POST one request; the raw DER answer (raises OcspError)."""
        if not url.startswith(("http://", "https://")):
            raise OcspError(f"responder URL must be http(s), got {url[:80]!r}")
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    url, data=der_request, headers={"Content-Type": "application/ocsp-request"}) as reply:
                if reply.status != 200:
                    raise OcspError(f"responder answered HTTP {reply.status}")
                body = await reply.content.read(MAX_RESPONSE_BYTES + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise OcspError(f"responder {url} unreachable: {type(exc).__name__} {exc}".strip()) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise OcspError("responder answer too large")
        return body

    async def status(self, hash_data: dict[str, Any], issuer: x509.Certificate | None = None) -> OcspAnswer:
        """The revocation status of one certificate; never raises (errors are status 'error')."""
        key = tuple(str(hash_data.get(k, "")) for k in ("hashAlgorithm", "issuerNameHash", "issuerKeyHash",
                                                         "serialNumber", "responderURL"))
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            der = await self.fetch(hash_data.get("responderURL", ""), request_der(hash_data))
            answer, expires_in = self._judge(hash_data, der, issuer)
        except OcspError as exc:
            log.info("OCSP for serial %s: %s", hash_data.get("serialNumber"), exc)
            return OcspAnswer("error", None, str(exc))
        if answer.status in ("good", "revoked") and self.cache_s > 0:
            self._cache[key] = (time.monotonic() + min(self.cache_s, expires_in), answer)
        return answer

    def _judge(self, hash_data: dict[str, Any], der: bytes,
               issuer: x509.Certificate | None) -> tuple[OcspAnswer, float]:
        try:
            response = ocsp.load_der_ocsp_response(der)
        except ValueError as exc:
            raise OcspError(f"not an OCSP response: {exc}") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise OcspError(f"responder refused: {response.response_status.name}")
        if response.serial_number != int(hash_data["serialNumber"], 16):
            raise OcspError("response is about another certificate")
        if (isinstance(response.hash_algorithm, HASHES[hash_data["hashAlgorithm"]])
                and response.issuer_key_hash.hex() != hash_data["issuerKeyHash"].lower()):
            raise OcspError("response is about a certificate of another issuer")
        self._check_signature(response, hash_data, issuer)
        now = self.clock()
        if response.this_update_utc > now + CLOCK_SKEW:
            raise OcspError("response is from the future (thisUpdate)")
        next_update = response.next_update_utc
        if next_update is not None and next_update < now - CLOCK_SKEW:
            raise OcspError("response is stale (nextUpdate has passed)")
        expires_in = (next_update - now).total_seconds() if next_update is not None else self.cache_s
        status: Status = {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked"}.get(
            response.certificate_status, "unknown")  # type: ignore[assignment]
        return OcspAnswer(status, der), max(0.0, expires_in)

    def _issuer_candidates(self, response: ocsp.OCSPResponse, hash_data: dict[str, Any],
                           issuer: x509.Certificate | None) -> list[x509.Certificate]:
        algorithm = HASHES[hash_data["hashAlgorithm"]]
        wanted = hash_data["issuerKeyHash"].lower()
        pool = [*response.certificates, *([issuer] if issuer is not None else []), *self.trusted]
        found = []
        for cert in pool:
            digest = hashes.Hash(algorithm())
            digest.update(key_bits(cert))
            if digest.finalize().hex() == wanted:
                found.append(cert)
        return found

    def _check_signature(self, response: ocsp.OCSPResponse, hash_data: dict[str, Any],
                         issuer: x509.Certificate | None) -> None:
        issuers = self._issuer_candidates(response, hash_data, issuer)
        if not issuers:
            raise OcspError("cannot check the response signature: the issuer's certificate is unknown")
        algorithm = response.signature_hash_algorithm
        for signer in issuers:  # signed by the issuer itself
            if _is_signer(signer, response) and _verify(signer, response.signature, response.tbs_response_bytes,
                                                        algorithm):
                return
        for delegate in response.certificates:  # or by a responder the issuer certified for OCSP signing
            if not _is_signer(delegate, response):
                continue
            try:
                usage = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                continue
            if ExtendedKeyUsageOID.OCSP_SIGNING not in usage:
                continue
            for signer in issuers:
                try:
                    delegate.verify_directly_issued_by(signer)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                if _verify(delegate, response.signature, response.tbs_response_bytes, algorithm):
                    return
        raise OcspError("response signature does not verify against the issuer or a delegated responder")
