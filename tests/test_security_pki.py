"""Test PKI built with `cryptography` (CA, server and station certificates), and unit tests of the CA."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from csms.security.ca import CaConfig, CaError, CertificateAuthority, CsrRejected
from csms.security.certificates import CertificateInputError, certificate_hash_data


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Netbewust test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: object) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption())


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str, *, server: bool = False
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = new_key()
    now = datetime.now(timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
         .not_valid_after(now + timedelta(days=10))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def make_csr(cn: str, key: object | None = None) -> str:
    key = key if key is not None else new_key()
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(cn)).sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Pki:
    """Files of a CA, a server certificate for 127.0.0.1 and a rogue CA, under one folder."""

    root: Path
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    rogue: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

    @classmethod
    def create(cls, root: Path) -> Pki:
        pki = cls(root, make_ca("Netbewust Test CA"), make_ca("Rogue CA"))
        pki.write("ca", *pki.ca)
        pki.write("server", *issue(pki.ca, "localhost", server=True))
        return pki

    def write(self, name: str, cert: x509.Certificate, key: object) -> tuple[Path, Path]:
        cert_path, key_path = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert_path.write_bytes(pem_cert(cert))
        key_path.write_bytes(pem_key(key))
        return cert_path, key_path

    def path(self, name: str) -> str:
        return str(self.root / name)

    def tls_section(self, **extra: object) -> dict[str, object]:
        return {"cert_file": self.path("server.pem"), "key_file": self.path("server.key"),
                "client_ca_file": self.path("ca.pem"), **extra}

    def ca_section(self) -> dict[str, object]:
        return {"cert_file": self.path("ca.pem"), "key_file": self.path("ca.key"), "validity_days": 30}

    def client_context(self, cn: str | None = None, *, rogue: bool = False) -> ssl.SSLContext:
        """What a station uses: trusts our CA; with ``cn``, presents a client certificate for it."""
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        if cn is not None:
            cert, key = self.write(f"client-{cn}{'-rogue' * rogue}",
                                   *issue(self.rogue if rogue else self.ca, cn))
            ctx.load_cert_chain(cert, key)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


# Unit tests of the CA ---------------------------------------------------------------------------------

def _authority(pki: Pki) -> CertificateAuthority:
    return CertificateAuthority.load(CaConfig(pki.path("ca.pem"), pki.path("ca.key"), validity_days=30))


def test_signed_certificate_chains_to_ca_and_keeps_subject(pki: Pki) -> None:
    ca = _authority(pki)
    key = new_key()
    leaf = ca.sign(ca.check_csr(make_csr("CS-9", key), "CS-9"))
    leaf.verify_directly_issued_by(pki.ca[0])
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CS-9"
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=29) < lifetime <= timedelta(days=30, minutes=5)
    chain = x509.load_pem_x509_certificates(ca.chain_pem(leaf).encode())
    assert [c.subject for c in chain] == [leaf.subject, pki.ca[0].subject]


@pytest.mark.parametrize("csr, reason", [
    ("not a csr", "not a PEM"),
    (make_csr("CS-OTHER"), "subject CN must be the station identity"),
    (make_csr("CS-9", rsa.generate_private_key(public_exponent=65537, key_size=1024)), "at least 2048"),
])
def test_csr_refused_with_reason(pki: Pki, csr: str, reason: str) -> None:
    with pytest.raises(CsrRejected, match=reason):
        _authority(pki).check_csr(csr, "CS-9")


def test_ca_key_must_match_certificate(pki: Pki, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(pem_key(new_key()))
    with pytest.raises(CaError, match="does not belong"):
        CertificateAuthority.load(CaConfig(pki.path("ca.pem"), str(other)))
    with pytest.raises(CaError, match="not a CA certificate"):
        CertificateAuthority.load(CaConfig(pki.path("server.pem"), pki.path("server.key")))
    with pytest.raises(CaError, match="cannot read"):
        CertificateAuthority.load(CaConfig(str(tmp_path / "missing.pem"), pki.path("ca.key")))


def test_certificate_hash_data_matches_ocsp_cert_id(pki: Pki) -> None:
    leaf, _ = issue(pki.ca, "CS-5")
    data = certificate_hash_data(pem_cert(leaf).decode(), pem_cert(pki.ca[0]).decode())
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, pki.ca[0], hashes.SHA256()).build()
    assert data == {"hashAlgorithm": "SHA256", "issuerNameHash": request.issuer_name_hash.hex(),
                    "issuerKeyHash": request.issuer_key_hash.hex(), "serialNumber": format(leaf.serial_number, "x")}
    root = certificate_hash_data(pem_cert(pki.ca[0]).decode(), algorithm="SHA384")
    assert root["hashAlgorithm"] == "SHA384" and len(root["issuerKeyHash"]) == 96
    with pytest.raises(CertificateInputError, match="did not issue"):
        certificate_hash_data(pem_cert(leaf).decode(), pem_cert(pki.rogue[0]).decode())
    with pytest.raises(CertificateInputError, match="hash algorithm"):
        certificate_hash_data(pem_cert(leaf).decode(), algorithm="MD5")
