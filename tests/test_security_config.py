"""The ``security`` config section and password hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from csms.config import ConfigError, load_config, parse_config
from csms.security import passwords
from csms.security.config import check
from tests.test_security_pki import Pki, pki  # noqa: F401 - fixture


def issues(section: dict, file: str = "<test>") -> dict[str, str]:
    return {i.key: i.message for i in check(section, file)}


def test_empty_section_is_lab_mode_and_valid() -> None:
    assert check({}, "<test>") == []
    assert parse_config({}, "<test>").security is None


def test_every_problem_is_reported_with_its_key(pki: Pki) -> None:
    found = issues({"allow_plain_ws": "yes", "tls": {"cert_file": 1}, "ca": {"key_file": "k"},
                    "auth_failures": {"per_identity": 0, "per_adress": 3}, "message_rate": [], "idl": 1})
    assert found["security.allow_plain_ws"].startswith("expected true or false")
    assert found["security.tls.cert_file"].startswith("expected a non-empty string")
    assert found["security.tls.key_file"] == "required key is missing"
    assert found["security.ca.cert_file"] == "required key is missing"
    assert found["security.auth_failures.per_identity"].startswith("must be between 1")
    assert found["security.auth_failures.per_adress"].startswith("unknown key")
    assert found["security.message_rate"] == "expected a mapping, got list"
    assert found["security.idl"].startswith("unknown key")


def test_tls_is_required_unless_plain_ws_is_allowed(pki: Pki) -> None:
    assert "security.tls" in issues({"idle_timeout_s": 60})
    assert issues({"allow_plain_ws": True}) == {}
    assert "security.allow_plain_ws" in issues({"allow_plain_ws": True, "tls": pki.tls_section()})
    assert issues({"tls": pki.tls_section(min_version="1.1")})["security.tls.min_version"].startswith("expected one of")


def test_key_material_is_loaded_at_check_time(pki: Pki, tmp_path: Path) -> None:
    assert issues({"tls": pki.tls_section(), "ca": pki.ca_section()}) == {}
    assert "no such file" in issues({"tls": pki.tls_section(cert_file=str(tmp_path / "nope.pem"))})["security.tls"]
    mismatched = issues({"tls": pki.tls_section(key_file=pki.path("ca.key"))})["security.tls"]
    assert "cannot load server certificate" in mismatched
    assert "not a CA" in issues({"allow_plain_ws": True, "ca": {"cert_file": pki.path("server.pem"),
                                                                "key_file": pki.path("server.key")}})["security.ca"]


def test_relative_paths_resolve_against_the_config_file(pki: Pki) -> None:
    config = pki.root / "csms.yaml"
    config.write_text(yaml.safe_dump({"security": {"tls": {"cert_file": "server.pem", "key_file": "server.key"}}}))
    cfg = load_config(config)
    assert cfg.security is not None and cfg.security.tls is not None
    assert cfg.security.tls.cert_file == pki.path("server.pem")
    config.write_text(yaml.safe_dump({"security": {"tls": {"cert_file": "missing.pem", "key_file": "server.key"}}}))
    with pytest.raises(ConfigError, match="security.tls: cannot read"):
        load_config(config)


def test_password_hash_roundtrip_and_rules() -> None:
    stored = passwords.hash_password("0123456789abcdef")
    assert stored.startswith("scrypt$16384$8$1$") and "0123456789abcdef" not in stored
    assert passwords.verify("0123456789abcdef", stored)
    assert not passwords.verify("0123456789abcdeF", stored)
    assert passwords.hash_password("0123456789abcdef") != stored  # salted
    for broken in (None, "", "md5$x", "scrypt$a$b$c$d$e", stored[:-8]):
        assert not passwords.verify("0123456789abcdef", broken)
    generated = {passwords.generate() for _ in range(20)}
    assert len(generated) == 20 and all(len(p) == passwords.GENERATED_LENGTH and p.isalnum() for p in generated)
    with pytest.raises(passwords.PasswordError, match="16-40"):
        passwords.validate("x" * 15)
    with pytest.raises(passwords.PasswordError, match="printable ASCII"):
        passwords.validate("sixteen-chars-é-x")
