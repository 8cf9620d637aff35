"""Operator API access control, token file, error shapes and the api: config section."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from csms.api.config import check
from csms.config import ConfigError, parse_config
from tests.api_fixture import EXTRA_ADMIN_TOKEN, READ_TOKEN, api_daemon
from tests.daemon_fixture import running_daemon


async def test_fresh_install_generates_a_private_admin_token_next_to_the_db(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, "csms.api")
    async with api_daemon(tmp_path) as api:
        path = tmp_path / "api-token"
        assert api.daemon.api.token_file == str(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        token = path.read_text().strip()
        assert len(token) >= 40 and token == api.admin_token
        assert str(path) in caplog.text  # the operator is told where it is
        status, _ = await api.post("/api/id-tokens", {"id_token": "CARD1"}, token=token)
        assert status == 201
    async with api_daemon(tmp_path) as api:  # a restart keeps the same token
        assert api.admin_token == token


async def test_requests_without_or_with_a_wrong_token_are_refused(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        async with api.session.get(api.url + "/api/stations") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in (await r.json())["error"]
        status, body = await api.get("/api/stations", token="not-a-token")
        assert (status, body) == (401, {"error": "invalid API token"})
        async with api.session.get(api.url + "/api/stations", headers={"Authorization": f"Basic {api.admin_token}"}) as r:
            assert r.status == 401


async def test_read_scope_may_read_but_not_change(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        assert (await api.get("/api/stations", token="read"))[0] == 200
        assert (await api.get("/api/id-tokens", token="read"))[0] == 200
        status, body = await api.post("/api/id-tokens", {"id_token": "CARD1"}, token="read")
        assert status == 403 and "'admin'" in body["error"] and "viewer" in body["error"]
        assert await api.daemon.store.get_id_token("CARD1") is None
        status, _ = await api.delete("/api/stations/CS-1", token="read")
        assert status == 403


async def test_tokens_from_the_config_by_hash(tmp_path: Path) -> None:
    import hashlib

    digest = hashlib.sha256(EXTRA_ADMIN_TOKEN.encode()).hexdigest()
    async with api_daemon(tmp_path, api={"generate_token": False,
                                         "tokens": [{"name": "ops", "scope": "admin", "sha256": digest}]}) as api:
        assert not (tmp_path / "api-token").exists()
        assert api.admin_token == EXTRA_ADMIN_TOKEN
        assert (await api.post("/api/id-tokens", {"id_token": "CARD2"}))[0] == 201
        assert (await api.get("/api/stations", token=READ_TOKEN))[0] == 401  # only the configured tokens count


async def test_health_is_public_metrics_need_a_token(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        assert await api.get("/health/live", token=None) == (200, {"status": "ok"})
        status, body = await api.get("/health/ready", token=None)
        assert status == 200 and body["checks"] == {"daemon_started": True, "station_endpoint": True}
        assert (await api.get("/metrics", token=None))[0] == 401
        status, text = await api.get("/metrics", token="read")
        assert status == 200 and "csms_stations_connected" in text and "csms_api_requests_total" in text
    async with api_daemon(tmp_path, api={"metrics_public": True}) as api:
        assert (await api.get("/metrics", token=None))[0] == 200


async def test_unknown_paths_and_methods_get_json_errors(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        assert await api.get("/api/nope") == (404, {"error": "no such endpoint: GET /api/nope"})
        status, body = await api.request("PUT", "/api/stations")
        assert status == 405 and "GET" in body["error"] and "POST" in body["error"]
        status, body = await api.post("/api/id-tokens", raw=b"{not json")
        assert status == 400 and body["error"].startswith("request body is not valid JSON")
        status, body = await api.post("/api/id-tokens", raw=b"x" * (1024 * 1024 + 10))
        assert status == 413 and "too large" in body["error"]


async def test_a_failing_handler_answers_500_without_a_stack_trace(tmp_path: Path, caplog) -> None:
    async with api_daemon(tmp_path) as api:
        async def broken() -> None:
            raise RuntimeError("secret internals /var/lib/x.py line 3")
        api.daemon.store.list_stations = broken  # type: ignore[method-assign]
        status, body = await api.get("/api/stations")
        assert status == 500
        assert body == {"error": "internal error; the daemon logged the details"}
        assert "secret internals" in caplog.text and "Traceback" in caplog.text


async def test_an_api_token_never_opens_a_station_socket(tmp_path: Path) -> None:
    """With station authentication on, the API's admin token is not a station password."""
    import base64

    import websockets

    async with api_daemon(tmp_path, security={"allow_plain_ws": True},
                          registration={"policy": "registered_only"}) as api:
        status, body = await api.post("/api/stations", {"station_id": "CS-SEC", "security_profile": 1})
        assert status == 201 and len(body["password"]) >= 16
        for secret in (api.admin_token, READ_TOKEN):
            auth = base64.b64encode(f"CS-SEC:{secret}".encode()).decode()
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(api.running.station_url("CS-SEC"), subprotocols=["ocpp2.0.1"],
                                         additional_headers={"Authorization": f"Basic {auth}"})
            assert refused.value.response.status_code == 401
        auth = base64.b64encode(f"CS-SEC:{body['password']}".encode()).decode()
        ws = await websockets.connect(api.running.station_url("CS-SEC"), subprotocols=["ocpp2.0.1"],
                                      additional_headers={"Authorization": f"Basic {auth}"})
        await ws.close()
        detail = (await api.get("/api/stations/CS-SEC"))[1]
        assert detail["has_password"] is True
        assert body["password"] not in str(detail) and "password_hash" not in detail


async def test_api_can_be_disabled(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api={"enabled": False}) as d:
        assert d.daemon.api is None
        assert not any(type(c).__name__ == "ApiServer" for c in d.daemon.components)


def test_config_check_reports_every_problem_with_its_key() -> None:
    issues = check({"port": 70000, "host": "", "tokens": [{"scope": "root", "token": "short"}, "x"],
                    "metrics_public": "yes", "typo": 1, "sse_heartbeat_s": 0}, "c.yaml")
    keys = {i.key for i in issues}
    assert {"api.port", "api.host", "api.tokens[0].scope", "api.tokens[0].token", "api.tokens[1]",
            "api.metrics_public", "api.typo", "api.sse_heartbeat_s"} <= keys
    assert check({}, "c.yaml") == []
    with pytest.raises(ConfigError) as err:
        parse_config({"api": {"port": "9080"}}, "c.yaml")
    assert "api.port" in str(err.value)
    both = check({"tokens": [{"scope": "read", "token": "x" * 20, "sha256": "0" * 64}]}, "c.yaml")
    assert [i.key for i in both] == ["api.tokens[0]"]
