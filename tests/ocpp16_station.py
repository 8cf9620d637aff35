"""Charge points built from the `ocpp` package's OCPP 1.6 ChargePoint: a third party's 1.6J stations,
not our simulator.

Each connector feeds a car that takes up to ``max_current_a`` on ``phases`` phases. The charge point
obeys the 1.6 charging profiles it holds (OCPP 1.6, 3.13): the TxProfile of the running transaction
with the highest stackLevel in force, else a TxDefaultProfile (its connector before connector 0),
capped by a ChargePointMaxProfile. It refuses what a real one refuses: a rate unit it does not list in
``ChargingScheduleAllowedChargingRateUnit``, a stackLevel above ``ChargeProfileMaxStackLevel``, more
periods than ``ChargingScheduleMaxPeriods``, a TxProfile for a transaction it is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result

from csms.tasks import cancel_and_wait
from tests.station_schedule import schedule_limit_a

VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0


def iso(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Connector:
    connector_id: int
    transaction_id: int | None = None
    started_at: datetime | None = None
    energy_wh: float = 0.0
    power_w: float = 0.0


@dataclass
class Held:
    connector_id: int
    profile: dict[str, Any]  # the ocpp package's snake_case csChargingProfiles
    received_at: datetime


class Lib16Station:
    def __init__(self, station_id: str, connectors: int = 1, *, max_current_a: float = 16.0, phases: int = 3,
                 rate_units: str = "Current,Power", stack_levels: int = 8, max_periods: int = 24,
                 meter_interval_s: float = 0.5, id_tag: str = "TAG-16") -> None:
        self.station_id = station_id
        self.connectors = {i: Connector(i) for i in range(1, connectors + 1)}
        self.max_current_a, self.phases = max_current_a, phases
        self.rate_units, self.stack_levels, self.max_periods = rate_units, stack_levels, max_periods
        self.meter_interval_s = meter_interval_s
        self.id_tag = id_tag
        self.profiles: dict[int, Held] = {}
        self.pushes: list[tuple[int, dict[str, Any], str]] = []  # (connector, profile, our verdict)
        self.calls: dict[str, int] = {}
        self.boot_status: str | None = None
        self.local_list: tuple[int, list[str]] = (0, [])
        self.certificate_chains: list[str] = []
        self.configuration: dict[str, str] = {}  # keys the central system changed
        self._cp: _Cp | None = None
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._meter: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()

    @property
    def cp(self) -> _Cp:
        assert self._cp is not None
        return self._cp

    async def connect(self, url: str, *, boot: bool = True, timeout: float = 10.0, **options: Any) -> str:
        """Open the websocket (``url`` without the station id; ``options`` for websockets.connect, e.g.
        ``ssl``, ``additional_headers``); returns the negotiated subprotocol."""
        self._ws = await asyncio.wait_for(
            websockets.connect(f"{url}/{self.station_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                               **options), timeout)
        cp = _Cp(self.station_id, self._ws, response_timeout=10)
        cp.station = self
        self._cp = cp
        self._reader = asyncio.create_task(self._read(cp), name=f"{self.station_id} reader")
        if boot:
            result = await cp.call(call.BootNotification(charge_point_model="Lib16", charge_point_vendor="ThirdParty",
                                                         charge_point_serial_number="SN16",
                                                         firmware_version="1.6.0"))
            self.boot_status = result.status
            for cid in (0, *self.connectors):
                await cp.call(call.StatusNotification(connector_id=cid, error_code="NoError", status="Available",
                                                      timestamp=iso()))
        if self._meter is None or self._meter.done():
            self._last_tick = time.monotonic()
            self._meter = asyncio.create_task(self._meter_loop(), name=f"{self.station_id} meter")
        return str(self._ws.subprotocol)

    async def _read(self, cp: _Cp) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    async def stop(self) -> None:
        await cancel_and_wait([task for task in (self._meter, self._reader) if task is not None])
        if self._ws is not None:
            await self._ws.close()

    # Transactions ----------------------------------------------------------------------------------
    async def authorize(self, id_tag: str) -> Any:
        return await self.cp.call(call.Authorize(id_tag=id_tag))

    async def start_transaction(self, connector_id: int = 1, id_tag: str | None = None) -> int:
        c = self.connectors[connector_id]
        await self.cp.call(call.StatusNotification(connector_id=connector_id, error_code="NoError",
                                                   status="Preparing", timestamp=iso()))
        result = await self.cp.call(call.StartTransaction(connector_id=connector_id, id_tag=id_tag or self.id_tag,
                                                          meter_start=int(c.energy_wh), timestamp=iso()))
        c.transaction_id, c.started_at = int(result.transaction_id), datetime.now(UTC)
        c.power_w = self._power_w(c)
        await self.cp.call(call.StatusNotification(connector_id=connector_id, error_code="NoError",
                                                   status="Charging", timestamp=iso()))
        return c.transaction_id

    async def stop_transaction(self, connector_id: int = 1, reason: str = "EVDisconnected") -> Any:
        c = self.connectors[connector_id]
        assert c.transaction_id is not None
        self.tick()
        result = await self.cp.call(call.StopTransaction(
            meter_stop=int(c.energy_wh), timestamp=iso(), transaction_id=c.transaction_id, reason=reason,
            id_tag=self.id_tag, transaction_data=[self._meter_value(c, "Transaction.End")]))
        c.transaction_id, c.started_at, c.power_w = None, None, 0.0
        for pid in [p for p, h in self.profiles.items()
                    if h.profile["charging_profile_purpose"] == "TxProfile" and h.connector_id == connector_id]:
            del self.profiles[pid]
        await self.cp.call(call.StatusNotification(connector_id=connector_id, error_code="NoError",
                                                   status="Available", timestamp=iso()))
        return result

    def _meter_value(self, c: Connector, context: str) -> dict[str, Any]:
        return {"timestamp": iso(), "sampled_value": [
            {"value": f"{c.energy_wh / 1000.0:.4f}", "context": context, "measurand": "Energy.Active.Import.Register",
             "unit": "kWh"},
            {"value": f"{c.power_w:.1f}", "context": context, "measurand": "Power.Active.Import", "unit": "W"}]}

    async def send_meter_values(self, connector_id: int = 1) -> None:
        self.tick()
        c = self.connectors[connector_id]
        await self.cp.call(call.MeterValues(connector_id=connector_id, transaction_id=c.transaction_id,
                                            meter_value=[self._meter_value(c, "Sample.Periodic")]))

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(self.meter_interval_s)
            for c in self.connectors.values():
                if c.transaction_id is not None:
                    with contextlib.suppress(Exception):
                        await self.send_meter_values(c.connector_id)

    def tick(self) -> None:
        now = time.monotonic()
        hours = (now - self._last_tick) / 3600.0
        self._last_tick = now
        for c in self.connectors.values():
            if c.transaction_id is not None:
                c.energy_wh += c.power_w * hours
                c.power_w = self._power_w(c)

    # Power under the profiles held -------------------------------------------------------------------
    def power_kw(self) -> float:
        self.tick()
        return sum(self._power_w(c) for c in self.connectors.values() if c.transaction_id is not None) / 1000.0

    def _power_w(self, c: Connector) -> float:
        amps = min(self.max_current_a, self.limit_a(c.connector_id))
        return 0.0 if amps < MIN_CURRENT_A else amps * self.phases * VOLTAGE_V

    def limit_a(self, connector_id: int) -> float:
        now = datetime.now(UTC)
        c = self.connectors[connector_id]
        held = list(self.profiles.values())
        value = _highest([h for h in held if h.profile["charging_profile_purpose"] == "TxProfile"
                          and h.connector_id == connector_id
                          and h.profile.get("transaction_id") == c.transaction_id], now, c.started_at, self.phases)
        if value is None:
            for scope in (connector_id, 0):
                value = _highest([h for h in held if h.profile["charging_profile_purpose"] == "TxDefaultProfile"
                                  and h.connector_id == scope], now, c.started_at, self.phases)
                if value is not None:
                    break
        cap = _highest([h for h in held if h.profile["charging_profile_purpose"] == "ChargePointMaxProfile"],
                       now, None, self.phases)
        if cap is not None:
            value = cap if value is None else min(value, cap)
        return self.max_current_a if value is None else value

    def install(self, connector_id: int, profile: dict[str, Any]) -> str:
        verdict = self._verdict(connector_id, profile)
        self.pushes.append((connector_id, profile, verdict))
        if verdict == "Accepted":
            purpose, level = profile["charging_profile_purpose"], profile["stack_level"]
            for pid in [p for p, h in self.profiles.items()
                        if p == profile["charging_profile_id"] or (
                            h.connector_id == connector_id and h.profile["charging_profile_purpose"] == purpose
                            and h.profile["stack_level"] == level)]:
                del self.profiles[pid]
            self.profiles[profile["charging_profile_id"]] = Held(connector_id, profile, datetime.now(UTC))
            self.tick()
        return verdict

    def _verdict(self, connector_id: int, profile: dict[str, Any]) -> str:
        schedule = profile["charging_schedule"]
        allowed = {"Current": "A", "Power": "W"}
        units = {allowed[u.strip()] for u in self.rate_units.split(",")}
        if schedule["charging_rate_unit"] not in units or profile["stack_level"] > self.stack_levels:
            return "Rejected"
        if len(schedule["charging_schedule_period"]) > self.max_periods:
            return "Rejected"
        if profile["charging_profile_purpose"] == "TxProfile":
            c = self.connectors.get(connector_id)
            if c is None or c.transaction_id is None or profile.get("transaction_id") != c.transaction_id:
                return "Rejected"
        if profile["charging_profile_purpose"] == "ChargePointMaxProfile" and connector_id != 0:
            return "Rejected"
        return "Accepted"


def _highest(candidates: list[Held], at: datetime, tx_start: datetime | None, phases: int) -> float | None:
    for held in sorted(candidates, key=lambda h: -h.profile["stack_level"]):
        value = _evaluate(held, at, tx_start, phases)
        if value is not None:
            return value
    return None


def _evaluate(held: Held, at: datetime, tx_start: datetime | None, phases: int) -> float | None:
    schedule = held.profile["charging_schedule"]
    start = datetime.fromisoformat(schedule.get("start_schedule") or iso(held.received_at))
    return schedule_limit_a(held.profile, schedule, start, at, tx_start, held.received_at, phases)


class _Cp(ChargePoint):
    station: Lib16Station

    def _count(self, action: str) -> None:
        self.station.calls[action] = self.station.calls.get(action, 0) + 1

    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        self._count("SetChargingProfile")
        return call_result.SetChargingProfile(status=self.station.install(connector_id, cs_charging_profiles))

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **criteria: Any) -> Any:
        self._count("ClearChargingProfile")
        st = self.station
        gone = [p for p, h in st.profiles.items()
                if (criteria.get("id") is None or p == criteria["id"])
                and (criteria.get("connector_id") is None or h.connector_id == criteria["connector_id"])
                and (criteria.get("charging_profile_purpose") is None
                     or h.profile["charging_profile_purpose"] == criteria["charging_profile_purpose"])
                and (criteria.get("stack_level") is None or h.profile["stack_level"] == criteria["stack_level"])]
        for p in gone:
            del st.profiles[p]
        return call_result.ClearChargingProfile(status="Accepted" if gone else "Unknown")

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        self._count("GetConfiguration")
        st = self.station
        known = {"ChargingScheduleAllowedChargingRateUnit": st.rate_units,
                 "ChargeProfileMaxStackLevel": str(st.stack_levels),
                 "ChargingScheduleMaxPeriods": str(st.max_periods), "HeartbeatInterval": "300"}
        asked = key or list(known)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": known[k]} for k in asked if k in known],
            unknown_key=[k for k in asked if k not in known])

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> Any:
        self._count("ChangeConfiguration")
        if key not in ("HeartbeatInterval", "AuthorizationKey"):
            return call_result.ChangeConfiguration(status="NotSupported")
        self.station.configuration[key] = value
        return call_result.ChangeConfiguration(status="Accepted")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, connector_id: int, duration: int, charging_rate_unit: str | None = None) -> Any:
        self._count("GetCompositeSchedule")
        st = self.station
        if connector_id not in st.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        amps = st.limit_a(connector_id)
        unit = charging_rate_unit or "A"
        limit = amps if unit == "A" else amps * st.phases * VOLTAGE_V
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=iso(),
            charging_schedule={"duration": duration, "charging_rate_unit": unit,
                               "charging_schedule_period": [{"start_period": 0, "limit": round(limit, 1)}]})

    @on("Reset")
    def on_reset(self, type: str) -> Any:  # noqa: A002 - the ocpp package's keyword
        self._count("Reset")
        return call_result.Reset(status="Accepted")

    @on("UnlockConnector")
    def on_unlock_connector(self, connector_id: int) -> Any:
        self._count("UnlockConnector")
        return call_result.UnlockConnector(status="Unlocked")

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str) -> Any:  # noqa: A002
        self._count("ChangeAvailability")
        return call_result.ChangeAvailability(status="Accepted")

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, **_: Any) -> Any:
        self._count("RemoteStartTransaction")
        return call_result.RemoteStartTransaction(status="Accepted")

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int) -> Any:
        self._count("RemoteStopTransaction")
        running = {c.transaction_id for c in self.station.connectors.values()}
        return call_result.RemoteStopTransaction(status="Accepted" if transaction_id in running else "Rejected")

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        self._count("TriggerMessage")
        return call_result.TriggerMessage(status="Accepted")

    @on("ExtendedTriggerMessage")
    def on_extended_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        self._count("ExtendedTriggerMessage")
        return call_result.ExtendedTriggerMessage(status="Accepted")

    # Local list, reservations, firmware, logs, certificates (answered, and counted by action) ------------
    @on("SendLocalList")
    def on_send_local_list(self, list_version: int, update_type: str, **rest: Any) -> Any:
        self._count("SendLocalList")
        self.station.local_list = (list_version, [e["id_tag"] for e in rest.get("local_authorization_list") or []])
        return call_result.SendLocalList(status="Accepted")

    @on("GetLocalListVersion")
    def on_get_local_list_version(self) -> Any:
        self._count("GetLocalListVersion")
        return call_result.GetLocalListVersion(list_version=self.station.local_list[0])

    @on("ReserveNow")
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int, **_: Any) -> Any:
        self._count("ReserveNow")
        return call_result.ReserveNow(status="Accepted")

    @on("CancelReservation")
    def on_cancel_reservation(self, reservation_id: int) -> Any:
        self._count("CancelReservation")
        return call_result.CancelReservation(status="Accepted")

    @on("UpdateFirmware")
    def on_update_firmware(self, location: str, retrieve_date: str, **_: Any) -> Any:
        self._count("UpdateFirmware")
        return call_result.UpdateFirmware()

    @on("SignedUpdateFirmware")
    def on_signed_update_firmware(self, request_id: int, firmware: dict[str, Any], **_: Any) -> Any:
        self._count("SignedUpdateFirmware")
        return call_result.SignedUpdateFirmware(status="Accepted")

    @on("GetLog")
    def on_get_log(self, log_type: str, request_id: int, log: dict[str, Any], **_: Any) -> Any:
        self._count("GetLog")
        return call_result.GetLog(status="Accepted", filename="log.txt")

    @on("InstallCertificate")
    def on_install_certificate(self, certificate_type: str, certificate: str) -> Any:
        self._count("InstallCertificate")
        return call_result.InstallCertificate(status="Accepted")

    @on("GetInstalledCertificateIds")
    def on_get_installed_certificate_ids(self, certificate_type: str) -> Any:
        self._count("GetInstalledCertificateIds")
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data=[
            {"hash_algorithm": "SHA256", "issuer_name_hash": "aa", "issuer_key_hash": "bb", "serial_number": "1f"}])

    @on("ClearCache")
    def on_clear_cache(self) -> Any:
        self._count("ClearCache")
        return call_result.ClearCache(status="Accepted")

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str) -> Any:
        self._count("CertificateSigned")
        self.station.certificate_chains.append(certificate_chain)
        return call_result.CertificateSigned(status="Accepted")
