"""The grid's Prometheus metrics (in the daemon's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SignalMetrics:
    """Limits in force, safe mode and signals by outcome (the limit intake and its sources)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.limit_kw = Gauge("csms_grid_limit_kw", "Limit in force per capacity group", ["transformer"],
                              registry=registry)
        self.safe_mode = Gauge("csms_grid_safe_mode", "1 while a capacity group is in safe mode", ["transformer"],
                               registry=registry)
        self.signals = Counter("csms_grid_signals_total", "Limit signals by outcome", ["transformer", "outcome"],
                               registry=registry)
        self.message_errors = Counter("csms_grid_message_errors_total",
                                      "Inbound MQTT messages whose handling failed unexpectedly (a bug)",
                                      ["kind"], registry=registry)
        self.broker_connected = Gauge("csms_grid_mqtt_connected", "1 while connected to the MQTT broker",
                                      registry=registry)


class ControlMetrics:
    """Load per group, reaction and planning times, pushes and findings (the controller's side)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.limit = Gauge("csms_transformer_limit_kw", "Limit in force per capacity group", ["transformer"],
                           registry=registry)
        self.load = Gauge("csms_transformer_load_kw", "Measured EV load plus base load per capacity group",
                          ["transformer"], registry=registry)
        self.planned = Gauge("csms_transformer_planned_kw", "Planned EV load plus base load for the current slot",
                             ["transformer"], registry=registry)
        self.reaction = Histogram("csms_grid_reaction_seconds",
                                  "Stricter limit received -> every affected station answered the cut",
                                  buckets=(.01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30), registry=registry)
        self.plan_s = Histogram("csms_grid_plan_seconds", "Time to compute one plan of all groups",
                                buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5), registry=registry)
        self.wave_s = Histogram("csms_grid_wave_seconds", "A cut's or plan's pushes: first sent -> last answered",
                                ["kind"], buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60), registry=registry)
        self.pushes = Counter("csms_grid_pushes_total", "TxProfile pushes by outcome", ["status"], registry=registry)
        self.findings = Counter("csms_grid_findings_total", "Verification findings by kind", ["kind"],
                                registry=registry)
