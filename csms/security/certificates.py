"""Typed CSMS-initiated certificate commands (OCPP 2.0.1 block M), through the daemon's Commands."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from csms.interfaces import Commands

INSTALL_TYPES = ("V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate", "ManufacturerRootCertificate")
_HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


class CertificateInputError(ValueError):
    """An argument the station would reject anyway (wrong type name, not a PEM certificate)."""


def _load(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise CertificateInputError(f"not a PEM encoded X.509 certificate: {exc}") from None


def certificate_hash_data(certificate_pem: str, issuer_pem: str | None = None,
                          algorithm: str = "SHA256") -> dict[str, str]:
    """The CertificateHashDataType identifying a certificate (for DeleteCertificate).

    issuerKeyHash is the hash of the issuer's public key, so it needs the issuer certificate;
    for a self-signed root (the usual thing to delete) the certificate is its own issuer.
    """
    if algorithm not in _HASHES:
        raise CertificateInputError(f"hash algorithm must be one of {', '.join(_HASHES)}, got {algorithm!r}")
    cert = _load(certificate_pem)
    issuer = _load(issuer_pem) if issuer_pem is not None else cert
    if issuer.subject != cert.issuer:
        raise CertificateInputError("the given issuer certificate did not issue this certificate")
    h = _HASHES[algorithm]
    # RFC 6960 CertID: hash of the DER issuer name and of the issuer key's BIT STRING content.
    issuer_key = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bits = _spki_bit_string(issuer_key)
    return {"hashAlgorithm": algorithm,
            "issuerNameHash": h(cert.issuer.public_bytes()).hexdigest(),
            "issuerKeyHash": h(key_bits).hexdigest(),
            "serialNumber": format(cert.serial_number, "x")}


def _spki_bit_string(spki_der: bytes) -> bytes:
    """The subjectPublicKey bytes inside a DER SubjectPublicKeyInfo (skipping the unused-bits octet)."""
    def read(data: bytes, pos: int) -> tuple[int, int, int]:  # -> tag, content start, content end
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[pos:pos + n], "big")
            pos += n
        return tag, pos, pos + length

    _, start, _ = read(spki_der, 0)  # SEQUENCE
    _, _, alg_end = read(spki_der, start)  # AlgorithmIdentifier
    tag, bits_start, bits_end = read(spki_der, alg_end)
    if tag != 0x03:
        raise CertificateInputError("malformed public key in the issuer certificate")
    return spki_der[bits_start + 1:bits_end]


async def install_certificate(commands: Commands, station_id: str, certificate_type: str,
                              certificate_pem: str) -> dict[str, Any]:
    """Send InstallCertificate (a root the station should trust); returns the station's answer."""
    if certificate_type not in INSTALL_TYPES:
        raise CertificateInputError(f"certificate type must be one of {', '.join(INSTALL_TYPES)}, "
                                    f"got {certificate_type!r}")
    _load(certificate_pem)
    return await commands.call(station_id, "InstallCertificate",
                                      {"certificateType": certificate_type, "certificate": certificate_pem})


async def get_installed_certificate_ids(commands: Commands, station_id: str,
                                        certificate_types: list[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if certificate_types:
        payload["certificateType"] = list(certificate_types)
    return await commands.call(station_id, "GetInstalledCertificateIds", payload)


async def delete_certificate(commands: Commands, station_id: str, hash_data: dict[str, str]) -> dict[str, Any]:
    """Send DeleteCertificate; ``hash_data`` from GetInstalledCertificateIds or :func:`certificate_hash_data`."""
    data = {k: hash_data[k] for k in ("hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber")
            if k in hash_data}
    return await commands.call(station_id, "DeleteCertificate", {"certificateHashData": data})
