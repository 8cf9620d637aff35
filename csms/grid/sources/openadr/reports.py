"""Usage reports the DSO's events ask for (``reportDescriptors``): measured, then built once due.

While an interval of such an event runs, the source samples each named group's measured load (EV
load plus the group's non-EV load, kW) about once a second; once the interval has ended, one report
per event interval is built with the mean: ``DEMAND`` as mean power (KW or W), ``USAGE`` as energy
over the interval (KWH or WH). Other payload types are not measured here and are skipped (said once).
Pure bookkeeping: the source posts the bodies and marks them sent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from csms.grid.sources.openadr.config import OpenAdrConfig
from csms.grid.sources.openadr.events import ParsedEvent

log = logging.getLogger("csms.grid.openadr")

# payloadType -> unit -> factor on (mean kW, hours) -> value
_MEASURES: dict[str, dict[str, Callable[[float, float], float]]] = {
    "DEMAND": {"KW": lambda kw, h: kw, "W": lambda kw, h: kw * 1000.0},
    "USAGE": {"KWH": lambda kw, h: kw * h, "WH": lambda kw, h: kw * h * 1000.0},
}
_DEFAULT_UNIT = {"DEMAND": "KW", "USAGE": "KWH"}
REMEMBER_SENT = 2000

Meter = Callable[[str], float | None]


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    return f"PT{round(seconds)}S"


class UsageReporter:
    def __init__(self, config: OpenAdrConfig) -> None:
        self.config = config
        self.samples: dict[tuple[str, int, str], list[float]] = {}  # (event, interval id, group) -> [sum kW, n]
        self.sent: OrderedDict[str, None] = OrderedDict()  # "<event id>|<interval id>"
        self._warned: set[str] = set()

    def sample(self, events: Iterable[ParsedEvent], meter: Meter, now: datetime) -> None:
        for event in events:
            if not event.reports:
                continue
            for (start, end, _), iid in zip(event.intervals, event.interval_ids, strict=False):
                if end is None or not start <= now < end:
                    continue
                for tid in self.config.groups_of(set(event.eans)):
                    kw = meter(tid)
                    if kw is not None:
                        acc = self.samples.setdefault((event.event_id, iid, tid), [0.0, 0.0])
                        acc[0] += kw
                        acc[1] += 1

    def due(self, program_id: str, events: Iterable[ParsedEvent], now: datetime) -> list[tuple[str, dict[str, Any]]]:
        """(key, report body) for every ended, measured interval not reported yet."""
        out = []
        for event in events:
            if not event.reports:
                continue
            for (start, end, _), iid in zip(event.intervals, event.interval_ids, strict=False):
                key = f"{event.event_id}|{iid}"
                if end is None or end > now or key in self.sent:
                    continue
                body = self._report(program_id, event, iid, start, end)
                if body is None:
                    self.mark_sent(key)  # nothing measured (e.g. the daemon was down): nothing to say
                    log.info("grid openadr: no measurements for event %s interval %s; no report", event.event_id, iid)
                    continue
                out.append((key, body))
        return out

    def mark_sent(self, key: str) -> None:
        self.sent[key] = None
        while len(self.sent) > REMEMBER_SENT:
            self.sent.popitem(last=False)
        event_id, _, iid = key.partition("|")
        for sample_key in [k for k in self.samples if k[0] == event_id and str(k[1]) == iid]:
            del self.samples[sample_key]

    def _measures(self, event: ParsedEvent) -> list[tuple[str, str, Callable[[float, float], float]]]:
        out = []
        for payload_type, units in event.reports:
            unit = (units or _DEFAULT_UNIT.get(payload_type, "")).upper()
            measure = _MEASURES.get(payload_type, {}).get(unit)
            if measure is None:
                if f"{payload_type}/{unit}" not in self._warned:
                    self._warned.add(f"{payload_type}/{unit}")
                    log.warning("grid openadr: cannot report %s in %s (only DEMAND in KW/W and USAGE in KWH/WH)",
                                payload_type, unit or "no unit")
                continue
            out.append((payload_type, unit, measure))
        return out

    def _report(self, program_id: str, event: ParsedEvent, iid: int, start: datetime, end: datetime
                ) -> dict[str, Any] | None:
        measures = self._measures(event)
        hours = (end - start).total_seconds() / 3600.0
        resources = []
        for tid in self.config.groups_of(set(event.eans)):
            acc = self.samples.get((event.event_id, iid, tid))
            if not acc or not measures:
                continue
            mean_kw = acc[0] / acc[1]
            eans = sorted(set(self.config.groups[tid]) & event.eans)
            resources.append({
                "resourceName": eans[0] if len(eans) == 1 else tid,
                "intervals": [{"id": iid, "intervalPeriod": {"start": _iso(start),
                                                             "duration": _duration((end - start).total_seconds())},
                               "payloads": [{"type": t, "values": [round(m(mean_kw, hours), 3)]}
                                            for t, _, m in measures]}]})
        if not resources:
            return None
        return {"programID": program_id, "eventID": event.event_id, "clientName": self.config.ven_name,
                "reportName": f"{event.event_id}-{iid}",
                "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": t, "units": u,
                                        "readingType": "AVERAGE"} for t, u, _ in measures],
                "resources": resources}
