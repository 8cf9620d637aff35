"""The limit side of the grid: the limit book, the intake with its signal sources, and the status
publisher that reports each group's state (to MQTT when a broker is configured)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from csms.grid.config import GridConfig
from csms.grid.effects.memory import GridMemory
from csms.grid.intake import LimitDesk
from csms.grid.metrics import SignalMetrics
from csms.grid.model.limits import LimitBook
from csms.grid.sources.mqtt import MqttSignalSource
from csms.grid.sources.openadr.source import OpenAdrSource
from csms.grid.sources.status import StatusPublisher, Topics
from csms.interfaces import Bus, Clock, SignalSource


class Signals:
    """A component: the intake's watchdog and every source start and stop together.

    A new source (OpenADR 3, UFTP) is built here from its config section and appended to
    ``sources``: it hands its signals to ``desk`` and reports its outages to it.
    """

    def __init__(self, config: GridConfig, bus: Bus, registry: CollectorRegistry, clock: Clock,
                 memory: GridMemory | None = None) -> None:
        self.book = LimitBook(config)
        self.status = StatusPublisher(Topics(config.mqtt.topic_prefix) if config.mqtt else None,
                                      qos=config.mqtt.qos if config.mqtt else 1, now=clock)
        self.metrics = SignalMetrics(registry)
        self.desk = LimitDesk(config, self.book, bus, self.status, self.metrics, clock, memory)
        self.mqtt = (MqttSignalSource(config.mqtt, self.desk, self.status, self.metrics, clock)
                     if config.mqtt is not None else None)
        self.sources: list[SignalSource] = [self.mqtt] if self.mqtt is not None else []
        self.openadr = (OpenAdrSource(config.openadr, config, self.desk, bus, registry, clock, memory)
                        if config.openadr is not None else None)
        if self.openadr is not None:
            self.sources.append(self.openadr)
        self.desk.sources.extend(self.sources)

    def add(self, source: SignalSource) -> None:
        """A source built elsewhere (it needs more than the limit side, e.g. the fleet for UFTP)."""
        self.sources.append(source)
        self.desk.sources.append(source)

    def source_status(self) -> dict[str, Any]:
        """Each source that reports its own state (the OpenADR VEN: VTN link, programs, refusals)."""
        return {s.name: status() for s in self.sources if callable(status := getattr(s, "status", None))}

    async def start(self) -> None:
        await self.desk.restore()
        await self.desk.start()
        for source in self.sources:
            await source.start()

    async def stop(self) -> None:
        try:
            for source in reversed(self.sources):
                await source.stop()
        finally:
            await self.desk.stop()
