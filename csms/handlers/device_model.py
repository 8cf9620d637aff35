"""Device-model reports and events (OCPP 2.0.1 blocks B and N): variables are kept per station."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.common import now
from csms.protocol.redaction import redact, variable_value

if TYPE_CHECKING:
    from csms.connection import StationConnection


@router.on("NotifyReport")
async def notify_report(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    variables = []
    for item in payload.get("reportData", []):
        for attr in item.get("variableAttribute", []):
            variables.append({"component": item["component"], "variable": item["variable"],
                              "attributeType": attr.get("type", "Actual"),
                              "value": variable_value(item["variable"]["name"], attr.get("value"))})
    if variables:
        await conn.daemon.store.record_variables(conn.station_id, variables, now())
    conn.publish("station.report", request_id=payload["requestId"], seq_no=payload["seqNo"],
                 to_be_continued=bool(payload.get("tbc")), variables=len(variables))
    return {}


@router.on("NotifyEvent")
async def notify_event(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    variables = [{"component": e["component"], "variable": e["variable"], "attributeType": "Actual",
                  "value": variable_value(e["variable"]["name"], e["actualValue"])} for e in payload["eventData"]]
    await conn.daemon.store.record_variables(conn.station_id, variables, now())
    await conn.daemon.store.record_station_message(conn.station_id, "NotifyEvent", redact(payload), now())
    conn.publish("station.event", events=payload["eventData"])
    return {}


@router.on("NotifyMonitoringReport")
async def notify_monitoring_report(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_station_message(conn.station_id, "NotifyMonitoringReport", payload, now())
    return {}
