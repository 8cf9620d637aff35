"""The daemon's certificate authority: signs station CSRs (SignCertificate) for profile 3.

The flow of OCPP 2.0.1 use case A02/A03: the station sends a CSR, we check it (valid signature,
subject CN = the station's identity, a sound key) and answer Accepted or Rejected; after the
answer is on the wire we send CertificateSigned with the chain (leaf first, then the CA).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from csms.configcheck import bounds
from csms.interfaces import StationSession
from csms.protocol.errors import CallTimeout, OcppError, StationOffline


@dataclass(frozen=True)
class CaConfig:
    cert_file: str  # the CA that signs station CSRs (SignCertificate)
    key_file: str
    validity_days: int = field(default=365, metadata=bounds(1, 3650))


log = logging.getLogger("csms.security")

MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
BACKDATE = timedelta(minutes=5)  # tolerate a station clock slightly behind ours


class CaError(Exception):
    """The CA's certificate or key cannot be used."""


class CsrRejected(Exception):
    """A CSR we will not sign; the message becomes the statusInfo of the Rejected answer."""

    def __init__(self, reason_code: str, info: str) -> None:
        super().__init__(info)
        self.reason_code = reason_code


@dataclass
class CertificateAuthority:
    cert: x509.Certificate
    key: Any  # a private key object of `cryptography`
    validity: timedelta

    @classmethod
    def load(cls, cfg: CaConfig) -> CertificateAuthority:
        try:
            with open(cfg.cert_file, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(cfg.key_file, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except OSError as exc:
            raise CaError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except (ValueError, TypeError) as exc:
            raise CaError(f"cannot load the CA certificate {cfg.cert_file} / key {cfg.key_file}: {exc}") from None
        pub = cert.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        if pub != key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo):
            raise CaError(f"the key {cfg.key_file} does not belong to the certificate {cfg.cert_file}")
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise CaError(f"{cfg.cert_file} is not a CA certificate (basicConstraints CA:FALSE)")
        except x509.ExtensionNotFound:
            raise CaError(f"{cfg.cert_file} has no basicConstraints extension; it cannot act as a CA") from None
        return cls(cert, key, timedelta(days=cfg.validity_days))

    def check_csr(self, pem: str, station_id: str) -> x509.CertificateSigningRequest:
        try:
            csr = x509.load_pem_x509_csr(pem.encode())
        except ValueError as exc:
            raise CsrRejected("InvalidCSR", f"not a PEM encoded PKCS#10 request: {exc}"[:512]) from None
        if not csr.is_signature_valid:
            raise CsrRejected("InvalidCSR", "the CSR's signature does not verify")
        cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cns != [station_id]:
            raise CsrRejected("InvalidCSR", f"subject CN must be the station identity {station_id!r}, got {cns}")
        key = csr.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise CsrRejected("InvalidCSR", f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, _CURVES):
                raise CsrRejected("InvalidCSR", f"elliptic curve {key.curve.name} is not accepted")
        elif not isinstance(key, ed25519.Ed25519PublicKey):
            raise CsrRejected("InvalidCSR", f"unsupported key type {type(key).__name__}")
        return csr

    def sign(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """A client-authentication certificate for the CSR's subject and key, issued by this CA."""
        now = datetime.now(timezone.utc)
        not_after = min(now + self.validity, self.cert.not_valid_after_utc)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value \
            if _has(self.cert, x509.SubjectKeyIdentifier) else x509.SubjectKeyIdentifier.from_public_key(
                self.cert.public_key())
        builder = (x509.CertificateBuilder()
                   .subject_name(csr.subject)
                   .issuer_name(self.cert.subject)
                   .public_key(csr.public_key())
                   .serial_number(secrets.randbits(127) | 1)
                   .not_valid_before(now - BACKDATE)
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, key_encipherment=False,
                                                content_commitment=False, data_encipherment=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                                  critical=False))
        algorithm = None if isinstance(self.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return builder.sign(self.key, algorithm)

    def chain_pem(self, leaf: x509.Certificate) -> str:
        return (leaf.public_bytes(serialization.Encoding.PEM)
                + self.cert.public_bytes(serialization.Encoding.PEM)).decode("ascii")


def _has(cert: x509.Certificate, ext: type) -> bool:
    try:
        cert.extensions.get_extension_for_class(ext)
        return True
    except x509.ExtensionNotFound:
        return False


SIGNED_TYPES = ("ChargingStationCertificate", "V2GCertificate")


class IssuedCertificates(Protocol):
    """Where the certificates the CA issues are kept (csms/operations.py)."""

    async def certificate_issued(self, station_id: str, certificate_type: str, serial_number: str,
                                 not_after: datetime) -> None: ...

    async def certificate_delivered(self, station_id: str, serial_number: str, status: str) -> None: ...


class CsrSigner:
    """The :class:`csms.interfaces.CertificateSigner`: answers SignCertificate, then delivers CertificateSigned."""

    def __init__(self, ca: CertificateAuthority, issued: IssuedCertificates | None = None) -> None:
        self.ca = ca
        self.issued = issued

    async def __call__(self, conn: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        """Every certificate type of 2.0.1 (A02/A03): the charging-station certificate, the V2G
        certificate, and without a type one certificate for both (combined); CertificateSigned
        echoes the type of the request (A02.FR.14)."""
        requested = payload.get("certificateType")
        cert_type = requested or "ChargingStationCertificate"
        if cert_type not in SIGNED_TYPES:
            return _rejected(conn.station_id, "UnsupportedCertType", f"cannot sign a {cert_type}")
        try:
            csr = self.ca.check_csr(payload["csr"], conn.station_id)
        except CsrRejected as exc:
            return _rejected(conn.station_id, exc.reason_code, str(exc))

        async def deliver() -> None:
            leaf = await asyncio.to_thread(self.ca.sign, csr)
            chain = self.ca.chain_pem(leaf)
            serial = format(leaf.serial_number, "x")
            if self.issued is not None:
                await self.issued.certificate_issued(conn.station_id, cert_type, serial, leaf.not_valid_after_utc)
            signed: dict[str, Any] = {"certificateChain": chain}
            if requested is not None:
                signed["certificateType"] = requested
            try:
                answer = await conn.call("CertificateSigned", signed)
            except (OcppError, CallTimeout, StationOffline) as exc:
                log.warning("%s: CertificateSigned (serial %x) not delivered: %s", conn.station_id,
                            leaf.serial_number, exc)
                if self.issued is not None:
                    await self.issued.certificate_delivered(conn.station_id, serial, type(exc).__name__)
                return
            if self.issued is not None:
                await self.issued.certificate_delivered(conn.station_id, serial, str(answer.get("status")))
            (log.info if answer.get("status") == "Accepted" else log.warning)(
                "%s: CertificateSigned serial %x valid until %s: %s", conn.station_id, leaf.serial_number,
                leaf.not_valid_after_utc.isoformat(), answer.get("status"))

        conn.after(deliver)
        log.info("%s: CSR accepted; the signed certificate follows", conn.station_id)
        return {"status": "Accepted"}


def _rejected(station_id: str, code: str, info: str) -> dict[str, Any]:
    log.warning("%s: SignCertificate rejected: %s", station_id, info)
    return {"status": "Rejected", "statusInfo": {"reasonCode": code[:20], "additionalInfo": info[:512]}}
