"""Secrets (station password, network credentials) never reach records, traces or the device model."""

from __future__ import annotations

import json

from tests.ocpp_client import RawStation
from tests.waiting import until

NETWORK_PROFILE = {
    "configurationSlot": 1,
    "connectionData": {
        "ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": "wss://csms.example/ocpp",
        "messageTimeout": 30, "securityProfile": 2, "ocppInterface": "Wireless0",
        "apn": {"apn": "internet", "apnPassword": "apn-secret-1", "simPin": 1234, "apnAuthentication": "AUTO"},
        "vpn": {"server": "vpn.example", "user": "u", "password": "vpn-secret-2", "key": "vpn-key-3",
                "type": "IPSec"},
    },
}
SECRETS = ("apn-secret-1", "vpn-secret-2", "vpn-key-3", "station-secret-4")


def _assert_clean(value: object) -> None:
    text = json.dumps(value)
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked in {text[:300]}"


async def test_network_profile_and_password_never_recorded_in_clear(csms):
    st = await RawStation.connect(csms.ws_url, "RED-1")
    await st.boot()
    st.auto_answer["SetNetworkProfile"] = {"status": "Accepted"}
    st.auto_answer["GetVariables"] = {"getVariableResult": [{
        "attributeStatus": "Accepted", "attributeValue": "station-secret-4",
        "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}}]}
    commands = csms.daemon.commands
    assert (await commands.call("RED-1", "SetNetworkProfile", NETWORK_PROFILE))["status"] == "Accepted"
    await commands.get_variables("RED-1", [{"component": {"name": "SecurityCtrlr"},
                                            "variable": {"name": "BasicAuthPassword"}}])
    # A lax station reporting its password in a device-model report.
    await st.result("NotifyReport", {"requestId": 1, "generatedAt": "2026-11-26T12:00:00Z", "seqNo": 0,
                                     "reportData": [{"component": {"name": "SecurityCtrlr"},
                                                     "variable": {"name": "BasicAuthPassword"},
                                                     "variableAttribute": [{"value": "station-secret-4"}]}]})
    await commands.flush_records()
    records = await until(lambda: csms.daemon.store.list_commands("RED-1"), what="command records")
    assert {r["action"] for r in records} >= {"SetNetworkProfile", "GetVariables"}
    _assert_clean(records)
    _assert_clean(await csms.daemon.store.list_variables("RED-1"))
    trace = csms.daemon.station_trace("RED-1")
    assert any("SetNetworkProfile" in frame for _, _, frame in trace)
    _assert_clean(trace)
    # What is kept is still useful: the non-secret fields are there.
    network = next(r for r in records if r["action"] == "SetNetworkProfile")
    assert network["request"]["connectionData"]["vpn"]["server"] == "vpn.example"
    assert network["request"]["connectionData"]["apn"]["apnPassword"] == "***"
    assert network["request"]["connectionData"]["apn"]["simPin"] == "***"
    await st.close()


def test_16_authorization_key_is_redacted_and_other_keys_stay() -> None:
    from csms.protocol.redaction import redact_frame, redact_payload

    change = {"key": "AuthorizationKey", "value": "a-secret-password-1234"}
    assert redact_payload("ChangeConfiguration", change) == {"key": "AuthorizationKey", "value": "***"}
    other = {"key": "HeartbeatInterval", "value": "300"}
    assert redact_payload("ChangeConfiguration", other) == other
    report = {"configurationKey": [{"key": "AuthorizationKey", "readonly": False, "value": "a-secret-password-1234"},
                                   {"key": "HeartbeatInterval", "readonly": False, "value": "300"}]}
    assert "a-secret" not in str(redact_payload("GetConfiguration", report))
    assert "300" in str(redact_payload("GetConfiguration", report))
    frame = '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"a-secret-password-1234"}]'
    assert "a-secret" not in redact_frame(frame) and "AuthorizationKey" in redact_frame(frame)
