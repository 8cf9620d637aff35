"""Block J, Meter values: MeterValues and transaction meter values are answered and kept.

Covers TC_J_01..04 (J01.FR.18: every MeterValuesRequest gets a MeterValuesResponse, with or without
a transaction; signed values kept as sent), TC_J_07..11 (J02.FR.19: transaction meter values in
Started / Updated / Ended, shown as the transaction's energy series) and a precise CALLERROR for a
sampled value no meter can produce (the rest of the connection carries on).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.station import OCPPError, rig, ts

SIGNED = {"signedMeterData": "AAECAwQ=", "signingMethod": "ECDSA-secp256r1-SHA256", "encodingMethod": "OCMF",
          "publicKey": "BBB="}


def reading(wh: float, *, signed: bool = False, context: str = "Sample.Clock") -> dict:
    value = {"value": wh, "measurand": "Energy.Active.Import.Register", "context": context}
    if signed:
        value["signedMeterValue"] = SIGNED
    return {"timestamp": ts(), "sampledValue": [value]}


async def test_j01_meter_values_without_a_transaction_are_answered(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("J-1") as st:
        assert await st.send("MeterValues", {"evseId": 1, "meterValue": [reading(100)]}) == {}  # TC_J_01
        assert await st.send("MeterValues", {"evseId": 0, "meterValue": [reading(5, signed=True)]}) == {}  # TC_J_04


async def test_j01_j02_meter_values_of_a_transaction_form_its_energy_series(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("J-2") as st:
        await r.id_token("J-CARD")
        await st.transaction("Started", "J-TX", id_token={"idToken": "J-CARD", "type": "ISO14443"}, energy_wh=1000)
        assert await st.send("MeterValues", {"evseId": 1, "meterValue": [reading(1500)]}) == {}  # TC_J_02
        await st.transaction("Updated", "J-TX", trigger="MeterValuePeriodic", energy_wh=2000)  # TC_J_09
        await st.transaction("Ended", "J-TX", info={"stoppedReason": "Local"},
                             meterValue=[{"timestamp": ts(), "sampledValue": [  # TC_J_03 / TC_J_10
                                 {"value": 2500, "measurand": "Energy.Active.Import.Register",
                                  "context": "Transaction.End", "signedMeterValue": SIGNED}]}])
        detail = await r.get("/api/transactions/J-2/J-TX")
        assert [p["energy_wh"] for p in detail["energy_series"]] == [1000, 1500, 2000, 2500]
        assert detail["events"][-1]["meterValue"][0]["sampledValue"][0]["signedMeterValue"] == SIGNED  # TC_J_11


@pytest.mark.parametrize("value", [{"value": 1, "unitOfMeasure": {"unit": "Wh", "multiplier": 12}}])
async def test_j_a_sample_no_meter_can_produce_is_refused_precisely(tmp_path: Path, value: dict) -> None:
    async with rig(tmp_path) as r, r.station("J-3") as st:
        with pytest.raises(OCPPError) as refused:
            await st.send("MeterValues", {"evseId": 1, "meterValue": [{"timestamp": ts(), "sampledValue": [value]}]})
        assert refused.value.code == "PropertyConstraintViolation"
        assert await st.send("MeterValues", {"evseId": 1, "meterValue": [reading(1)]}) == {}
