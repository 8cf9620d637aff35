"""Prometheus metrics of one daemon (its own registry, so several daemons can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = Gauge("csms_stations_connected", "Stations with an open websocket", registry=r)
        self.messages = Counter("csms_messages_total", "Station-initiated CALLs handled", ["action"], registry=r)
        self.callerrors = Counter("csms_callerrors_total", "CALLERRORs sent to stations", ["code"], registry=r)
        self.handle_seconds = Histogram("csms_handle_seconds", "Time to handle a station CALL (incl. persistence)",
                                        buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5),
                                        registry=r)
        self.commands = Counter("csms_commands_total", "CSMS-initiated calls by outcome", ["action", "outcome"],
                                registry=r)
        self.command_seconds = Histogram("csms_command_seconds", "Latency of CSMS-initiated calls", ["action"],
                                         registry=r)
        self.refused = Counter("csms_connections_refused_total", "Websocket handshakes refused", ["reason"],
                               registry=r)
        self._msg_children: dict[str, Counter] = {}
        # Registries exposed beside this one (the grid's metrics while this node leads it, several nodes).
        self.extra: list[CollectorRegistry] = []

    def handled(self, action: str, error_code: str | None, seconds: float) -> None:
        child = self._msg_children.get(action)
        if child is None:
            child = self._msg_children[action] = self.messages.labels(action)
        child.inc()
        self.handle_seconds.observe(seconds)
        if error_code is not None:
            self.callerrors.labels(error_code).inc()

    def frame_error(self, code: str) -> None:
        self.callerrors.labels(code).inc()

    def command(self, action: str, outcome: str, seconds: float) -> None:
        self.commands.labels(action, outcome).inc()
        self.command_seconds.labels(action).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry) + b"".join(generate_latest(r) for r in self.extra)
