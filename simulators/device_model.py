"""The slice of the OCPP 2.0.1 device model a simulated station exposes (Get/SetVariables).

One store for every version: OCPP 1.6 reads and changes the same values through its
configuration keys (`simulators.versions.v16`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulators.models import StationModel
from simulators.security import PASSWORD_MAX, PASSWORD_MIN, password_problem


@dataclass
class Variable:
    value: str
    mutable: bool = False
    kind: str = "string"  # "int", "decimal", "bool", "string", "password"
    on_set: Callable[[str], None] | None = None
    write_only: bool = False  # OCPP WriteOnly mutability: GetVariables never reveals it


Key = tuple[str, str, str | None]  # (component, variable, variable instance)


class DeviceModel:
    """Actual-attribute values only; everything else is NotSupportedAttributeType."""

    def __init__(self, model: StationModel) -> None:
        units = ",".join(model.rate_units)
        self.vars: dict[Key, Variable] = {
            ("SmartChargingCtrlr", "Enabled", None): Variable("true", kind="bool"),
            ("SmartChargingCtrlr", "Available", None): Variable("true", kind="bool"),
            ("SmartChargingCtrlr", "RateUnit", None): Variable(units),
            ("SmartChargingCtrlr", "ProfileStackLevel", None): Variable(str(model.max_stack_level), kind="int"),
            ("SmartChargingCtrlr", "PeriodsPerSchedule", None): Variable(str(model.periods_per_schedule),
                                                                         kind="int"),
            ("SmartChargingCtrlr", "LimitChangeSignificance", None): Variable(
                str(model.limit_change_significance), mutable=True, kind="decimal"),
            ("SmartChargingCtrlr", "Phases3to1", None): Variable("false", kind="bool"),
            ("SmartChargingCtrlr", "ACPhaseSwitchingSupported", None): Variable("false", kind="bool"),
            ("SmartChargingCtrlr", "EntriesChargingProfiles", None): Variable("0", kind="int"),
            ("OCPPCommCtrlr", "HeartbeatInterval", None): Variable("300", mutable=True, kind="int"),
            ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"): Variable(
                str(model.message_attempts), mutable=True, kind="int"),
            ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"): Variable(
                str(int(model.message_attempt_interval_s)), mutable=True, kind="int"),
            ("SampledDataCtrlr", "TxUpdatedInterval", None): Variable(str(int(model.meter_interval_s)),
                                                                      mutable=True, kind="int"),
            ("SampledDataCtrlr", "TxUpdatedMeasurands", None): Variable(
                "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Current.Offered,SoC"),
            ("TxCtrlr", "TxStartPoint", None): Variable("EVConnected"),
            ("TxCtrlr", "TxStopPoint", None): Variable("EVConnected"),
            ("AuthCtrlr", "Enabled", None): Variable("true" if model.authorize else "false", kind="bool"),
            ("ChargingStation", "Model", None): Variable(model.name),
            ("ChargingStation", "VendorName", None): Variable(model.vendor),
            ("ChargingStation", "SupplyPhases", None): Variable(str(model.phases), kind="int"),
            ("EVSE", "Power", None): Variable(str(int(model.max_current_a * model.phases * 230)), kind="decimal"),
            ("V2XChargingCtrlr", "Enabled", None): Variable("true" if model.v2g else "false", kind="bool"),
        }
        if model.security is not None:  # only a station that authenticates has these (OCPP A00-A01)
            self.vars[("SecurityCtrlr", "SecurityProfile", None)] = Variable(str(model.security.profile), kind="int")
            if model.security.uses_password:
                self.vars[("SecurityCtrlr", "BasicAuthPassword", None)] = Variable(
                    "", mutable=True, kind="password", write_only=True)
        self._components = {key[0] for key in self.vars}

    def get(self, item: dict) -> dict:
        result, found, attribute_type = self._resolve(item)
        if found is None:
            return result
        if attribute_type != "Actual":
            result["attributeStatus"] = "NotSupportedAttributeType"
            return result
        if found.write_only:
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = {"reasonCode": "WriteOnly"}
            return result
        result["attributeStatus"] = "Accepted"
        result["attributeValue"] = found.value
        return result

    def set(self, item: dict) -> dict:
        result, found, attribute_type = self._resolve(item)
        if found is None:
            return result
        value = str(item.get("attributeValue", ""))
        if attribute_type != "Actual":
            result["attributeStatus"] = "NotSupportedAttributeType"
        elif not found.mutable:
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = {"reasonCode": "ReadOnly"}
        elif not _valid(found.kind, value):
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = {"reasonCode": "InvalidValue", "additionalInfo": _expected(found.kind)}
        else:
            found.value = value
            if found.on_set is not None:
                found.on_set(value)
            result["attributeStatus"] = "Accepted"
        return result

    def add(self, component: str, variable: str, value: Variable, instance: str | None = None) -> None:
        """A variable only some versions have (e.g. OCPP 2.1's V2XChargingCtrlr.SupportedOperationModes)."""
        self.vars[(component, variable, instance)] = value
        self._components.add(component)

    def value(self, component: str, variable: str, instance: str | None = None) -> str:
        return self.vars[(component, variable, instance)].value

    def on_set(self, component: str, variable: str, callback: Callable[[str], None],
               instance: str | None = None) -> None:
        self.vars[(component, variable, instance)].on_set = callback

    def _resolve(self, item: dict) -> tuple[dict, Variable | None, str]:
        """The answer's common part for a Get/SetVariables item, the variable it names (None when
        unknown: the answer then already says why) and the requested attribute type."""
        component = item.get("component", {})
        variable = item.get("variable", {})
        result = {"component": component, "variable": variable}
        attribute_type = item.get("attributeType", "Actual")
        if attribute_type != "Actual":
            result["attributeType"] = attribute_type
        return result, self._lookup(component, variable, result), attribute_type

    def _lookup(self, component: dict, variable: dict, result: dict) -> Variable | None:
        name = component.get("name")
        if name not in self._components:
            result["attributeStatus"] = "UnknownComponent"
            return None
        found = self.vars.get((name, variable.get("name", ""), variable.get("instance")))
        if found is None:
            result["attributeStatus"] = "UnknownVariable"
        return found


def _expected(kind: str) -> str:
    if kind == "password":
        return f"expected {PASSWORD_MIN}-{PASSWORD_MAX} printable ASCII characters"
    return f"expected {kind}"


def _valid(kind: str, value: str) -> bool:
    if kind == "password":
        return password_problem(value) is None
    try:
        if kind == "int":
            return int(value) >= 0
        if kind == "decimal":
            return float(value) >= 0
        if kind == "bool":
            return value in ("true", "false")
    except ValueError:
        return False
    return True
