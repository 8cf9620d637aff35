"""The rules and payloads of issue 17's typed commands (csms.ops201), without a daemon."""

from __future__ import annotations

from datetime import datetime, timezone

import fastjsonschema
import pytest

from csms.ocpp.v201 import operations as ops201
from csms.ocpp.v201.operations import BodyError
from tests.conformance.pki import issue
from tests.test_daemon_kit import assert_schema_valid

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)
CARD = {"idToken": {"idToken": "A", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}


def test_every_body_schema_compiles() -> None:
    for schema in ops201.BODIES.values():
        fastjsonschema.compile(schema)


def test_payloads_are_schema_valid() -> None:
    cert = issue("signer").pem
    cases = {
        "GetReport": ops201.get_report({"component_criteria": ["Problem"]}, 1),
        "UpdateFirmware": ops201.update_firmware({"location": "https://x/fw", "signature": "c2ln"}, 2, cert, NOW),
        "PublishFirmware": ops201.publish_firmware({"location": "https://x/fw", "checksum": "a" * 32}, 3),
        "UnpublishFirmware": ops201.unpublish_firmware({"checksum": "b" * 32}),
        "InstallCertificate": ops201.install_certificate({"certificate_type": "CSMSRootCertificate",
                                                          "certificate": cert}),
        "GetLog": ops201.get_log({"log_type": "SecurityLog", "remote_location": "ftp://x/"}, 4),
        "GetMonitoringReport": ops201.get_monitoring_report({}, 5),
        "CustomerInformation": ops201.customer_information({"report": True, "clear": False,
                                                            "customer_identifier": "c"}, 6, None),
        "SetDisplayMessage": ops201.set_display_message({"priority": "InFront", "content": "hi"}, 7),
        "GetDisplayMessages": ops201.get_display_messages({"ids": [7]}, 8),
        "DataTransfer": ops201.data_transfer({"vendor_id": "v", "data": [1]}),
        "ReserveNow": ops201.reserve_now({"evse_id": 1}, 9, CARD["idToken"], None, NOW),
    }
    for action, payload in cases.items():
        assert_schema_valid(action, "Request", payload)


@pytest.mark.parametrize("call, field", [
    (lambda: ops201.update_firmware({"location": "x", "signature": "c2ln"}, 1, None, NOW), "signature"),
    (lambda: ops201.update_firmware({"location": "x", "signing_certificate": "nope"}, 1, None, NOW),
     "signing_certificate"),
    (lambda: ops201.update_firmware({"location": "x", "retrieve_date_time": "soon"}, 1, None, NOW),
     "retrieve_date_time"),
    (lambda: ops201.publish_firmware({"location": "x", "checksum": "xyz"}, 1), "checksum"),
    (lambda: ops201.install_certificate({"certificate_type": "ChargingStationCertificate", "certificate": ""}),
     "certificate_type"),
    (lambda: ops201.customer_information({"report": True, "clear": False}, 1, None), "id_token"),
    (lambda: ops201.customer_information({"report": False, "clear": False, "customer_identifier": "c"}, 1, None),
     "report"),
    (lambda: ops201.set_display_message({"priority": "InFront", "content": "x", "start_date_time":
                                         "2025-01-02T00:00:00Z", "end_date_time": "2025-01-01T00:00:00Z"}, 1),
     "end_date_time"),
    (lambda: ops201.reserve_now({"expiry": "2020-01-01T00:00:00Z"}, 1, CARD["idToken"], None, NOW), "expiry"),
    (lambda: ops201.get_log({"log_type": "SecurityLog", "remote_location": "x", "oldest_timestamp":
                             "2025-01-02T00:00:00Z", "latest_timestamp": "2025-01-01T00:00:00Z"}, 1),
     "latest_timestamp"),
])
def test_rules_beyond_the_schema_name_the_field(call, field: str) -> None:
    with pytest.raises(BodyError) as err:
        call()
    assert err.value.field == field


def test_local_list_entries() -> None:
    info = {"A": CARD, "B": {"idToken": {"idToken": "B", "type": "KeyCode"}, "idTokenInfo": {"status": "Blocked"}},
            "C": None}
    entries, after = ops201.local_list_entries("Full", {"id_tokens": ["A", "B"]}, [], info)
    assert after == ["A", "B"] and entries[1]["idTokenInfo"]["status"] == "Blocked"
    entries, after = ops201.local_list_entries("Differential", {"remove": ["A"]}, ["A", "B"], info)
    assert entries == [{"idToken": {"idToken": "A", "type": "ISO14443"}}] and after == ["B"]
    for update, body, field in (("Full", {"id_tokens": ["A", "A"]}, "id_tokens"),
                                ("Full", {"id_tokens": ["C"]}, "id_tokens[0]"),
                                ("Full", {}, "id_tokens"), ("Differential", {}, "add"),
                                ("Differential", {"id_tokens": []}, "id_tokens")):
        with pytest.raises(BodyError) as err:
            ops201.local_list_entries(update, body, [], info)
        assert err.value.field == field


def test_items_per_message_and_chunks() -> None:
    variables = [{"component": "DeviceDataCtrlr", "variable": "ItemsPerMessage", "variable_instance": None,
                  "value": "9"},
                 {"component": "DeviceDataCtrlr", "variable": "ItemsPerMessage",
                  "variable_instance": "ClearVariableMonitoring", "value": "3"},
                 {"component": {"name": "DeviceDataCtrlr"}, "variable": {"name": "ItemsPerMessage",
                                                                        "instance": "GetVariables"}, "value": "2"}]
    assert ops201.items_per_message(variables, "GetVariables") == 2
    assert ops201.items_per_message(variables, "SetVariables") is None
    assert ops201.items_per_message(variables, "ClearVariableMonitoring") == 3
    assert ops201.chunks([1, 2, 3], 2) == [[1, 2], [3]] and ops201.chunks([1, 2, 3], None) == [[1, 2, 3]]
