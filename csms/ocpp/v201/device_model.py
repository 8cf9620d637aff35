"""Device-model reports and events (OCPP 2.0.1 blocks B and N): variables are kept per station."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.events import StationMonitoringEvent, StationReport
from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps
from csms.protocol.redaction import redact, variable_value


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    variables_store, messages, reports = deps.device_model, deps.messages, deps.reports

    async def notify_report(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        variables = []
        for item in payload.get("reportData", []):
            for attr in item.get("variableAttribute", []):
                variables.append({"component": item["component"], "variable": item["variable"],
                                  "attributeType": attr.get("type", "Actual"),
                                  "value": variable_value(item["variable"]["name"], attr.get("value"))})
        if variables:
            await variables_store.record_variables(session.station_id, variables, now())
        session.publish(StationReport(station_id=session.station_id, request_id=payload["requestId"],
                                      seq_no=payload["seqNo"], to_be_continued=bool(payload.get("tbc")),
                                      variables=len(variables)))
        return {}

    async def notify_event(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        variables = [{"component": e["component"], "variable": e["variable"], "attributeType": "Actual",
                      "value": variable_value(e["variable"]["name"], e["actualValue"])} for e in payload["eventData"]]
        await variables_store.record_variables(session.station_id, variables, now())
        await messages.record_station_message(session.station_id, "NotifyEvent", redact(payload), now())
        session.publish(StationMonitoringEvent(station_id=session.station_id, events=payload["eventData"]))
        return {}

    async def notify_monitoring_report(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "NotifyMonitoringReport", payload, now())
        if reports is not None:
            await reports.station_message(session.station_id, "NotifyMonitoringReport", payload)
        return {}

    return {"NotifyReport": notify_report, "NotifyEvent": notify_event,
            "NotifyMonitoringReport": notify_monitoring_report}
