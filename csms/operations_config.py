"""The config sections of the OCPP 2.0.1 operations (issue 17), in the house style (csms/configcheck.py).

``iso15118``: trust anchors for contract certificates, the OCSP client, the contract-certificate
provider. ``firmware``: the firmware signing certificate sent with every UpdateFirmware
(L01.FR.11). ``tariffs``: plans, groups and the running-cost cadence (parsed by
csms/domain/tariffs.py, whose errors name the key). Relative file names resolve against the
config file's folder; files are loaded now, so a wrong path is a config error, not a failure later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from csms.configcheck import Issues, bounds, build
from csms.domain.tariffs import TariffError, Tariffs, parse_tariffs


@dataclass(frozen=True)
class ContractProviderConfig:
    provider: str = "file"  # "file", or "package.module:factory" (gets this mapping)
    directory: str | None = None  # the file provider's folder of prepared answers


@dataclass(frozen=True)
class Iso15118Config:
    trust_anchors_file: str | None = None  # V2G / MO roots (PEM) for a contract chain sent in Authorize
    ocsp_timeout_s: float = field(default=5.0, metadata=bounds(0.1, 60))
    ocsp_cache_s: float = field(default=300.0, metadata=bounds(0, 86400))
    contract_certificates: ContractProviderConfig | None = None


@dataclass(frozen=True)
class FirmwareConfig:
    signing_certificate_file: str | None = None


def _base(file: str) -> Path | None:
    return None if file.startswith("<") else Path(file).resolve().parent


def _resolve(path: str, file: str) -> str:
    p = Path(path).expanduser()
    base = _base(file)
    return str(base / p) if base is not None and not p.is_absolute() else str(p)


def _pem_file(path: str, key: str, issues: Issues) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        issues.add(key, f"cannot read {path}: {exc.strerror or exc}")
        return []
    except ValueError:
        issues.add(key, f"{path} holds no PEM certificate")
        return []
    return certificates


def iso15118_section(raw: Any, issues: Issues) -> Iso15118Config | None:
    if raw is None:
        return None
    top = build(Iso15118Config, raw, "iso15118", issues, skip=("contract_certificates",))
    if top is None:
        return None
    if top.get("trust_anchors_file"):
        top["trust_anchors_file"] = _resolve(top["trust_anchors_file"], issues.file)
        _pem_file(top["trust_anchors_file"], "iso15118.trust_anchors_file", issues)
    provider = None
    if "contract_certificates" in raw:
        kwargs = build(ContractProviderConfig, raw["contract_certificates"], "iso15118.contract_certificates", issues)
        if kwargs is not None:
            provider = ContractProviderConfig(**kwargs)
            if provider.provider == "file":
                if provider.directory is None:
                    issues.add("iso15118.contract_certificates.directory", "required for the file provider")
                else:
                    directory = _resolve(provider.directory, issues.file)
                    if not Path(directory).is_dir():
                        issues.add("iso15118.contract_certificates.directory", f"{directory} is not a folder")
                    provider = ContractProviderConfig("file", directory)
            elif ":" not in provider.provider:
                issues.add("iso15118.contract_certificates.provider",
                           f"'file' or 'package.module:factory', got {provider.provider!r}")
    return Iso15118Config(**top, contract_certificates=provider)


def firmware_section(raw: Any, issues: Issues) -> FirmwareConfig | None:
    if raw is None:
        return None
    kwargs = build(FirmwareConfig, raw, "firmware", issues)
    if kwargs is None:
        return None
    if kwargs.get("signing_certificate_file"):
        path = _resolve(kwargs["signing_certificate_file"], issues.file)
        if _pem_file(path, "firmware.signing_certificate_file", issues):
            kwargs["signing_certificate_file"] = path
    return FirmwareConfig(**kwargs)


def tariffs_section(raw: Any, issues: Issues) -> Tariffs | None:
    if raw is None:
        return None
    try:
        return parse_tariffs(raw)
    except TariffError as exc:
        issues.add(exc.field, exc.message)
        return None


def firmware_certificate(config: FirmwareConfig | None) -> str | None:
    """The PEM of the configured firmware signing certificate (checked at load)."""
    if config is None or not config.signing_certificate_file:
        return None
    return Path(config.signing_certificate_file).read_text()
