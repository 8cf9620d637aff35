"""The server TLS context for profiles 2 and 3, and reading the station's client certificate.

One context serves both profiles: a client certificate is optional at the TLS layer (profile-2
stations have none), but if one is presented it must chain to ``client_ca_file`` or the TLS
handshake fails. Which profile a station must use is decided later, per station, in auth.py.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from csms.configcheck import bounds


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str  # server certificate chain (PEM, leaf first)
    key_file: str
    client_ca_file: str | None = None  # trust anchors for profile-3 client certificates
    min_version: Literal["1.2", "1.3"] = "1.2"
    # The wss:// listener's own port, beside plain ws:// on websocket.port (with allow_plain_ws:
    # profile 1 there, profiles 2 and 3 here); None: TLS on websocket.port, the only listener.
    port: int | None = field(default=None, metadata=bounds(0, 65535))


_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# TLS 1.2 suites: forward-secret AEAD only (OCPP 2.0.1 requires the ECDHE-*-AES-GCM ones).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsError(Exception):
    """The certificate, key or CA file cannot be used (message names the file and the cause)."""


def server_context(cfg: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.set_ciphers(_TLS12_CIPHERS)
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename or cfg.cert_file}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"cannot load server certificate {cfg.cert_file} with key {cfg.key_file}: "
                       f"{getattr(exc, 'reason', None) or exc}") from None
    if cfg.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
        except FileNotFoundError:
            raise TlsError(f"cannot read client CA file {cfg.client_ca_file}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"cannot load client CA file {cfg.client_ca_file}: "
                           f"{getattr(exc, 'reason', None) or exc}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_certificate(transport: Any) -> dict[str, Any] | None:
    """The verified client certificate of a TLS connection (None: plain TCP or no certificate)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    return ssl_object.getpeercert() or None


def is_tls(transport: Any) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def common_names(cert: dict[str, Any]) -> list[str]:
    """Every CN in the certificate's subject (a subject may, oddly, hold several)."""
    return [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
