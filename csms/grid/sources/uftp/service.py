"""The UFTP endpoint of the daemon: the `shapeshifter-uftp` library's AGR service, bridged to the loop.

The library runs its FastAPI/uvicorn endpoint in a thread, checks each signed message (signature
against the sender's public key from our address book, never DNS: 401 when it does not verify,
419 when the sender is unknown, 400 for XML that is not a UFTP message) and hands the message to
a worker thread. There each ``process_*`` method passes it to the :class:`Aggregator` on the
daemon's event loop and waits for the decision (which is stored before it is answered), then
sends the answers with the library's client, retrying with backoff until each answer's deadline.

As a :class:`csms.interfaces.SignalSource` it never reports an outage: UFTP has no heartbeat, and a
silent DSO only means no new orders. Orders in force stay binding until their last ISP ends (they
never run on past it), offers expire, and answers that cannot be delivered are retried and
reported (``/api/grid`` -> ``uftp.dso``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.exceptions import HTTPException
from shapeshifter_uftp import PayloadMessage, ShapeshifterAgrService
from shapeshifter_uftp import transport as shapeshifter_transport

from csms.grid.sources.uftp.aggregator import Aggregator, Outgoing
from csms.grid.sources.uftp.config import UftpConfig
from csms.tasks import cancel_and_wait

log = logging.getLogger("csms.grid.uftp")


def confine_library_parser() -> None:
    """The library parses each message's XML by its root name among *every* dataclass imported in
    the process (xsdata picks the last one named e.g. ``FlexOffer``); confine that search to the
    library's own models, so no dataclass of ours or of a dependency can hijack it."""
    context = shapeshifter_transport._context
    if context.models_package != "shapeshifter_uftp":
        context.models_package = "shapeshifter_uftp"
        context.xsi_cache.clear()
        context.sys_modules = 0


confine_library_parser()

DECISION_TIMEOUT_S = 30.0
LISTEN_TIMEOUT_S = 15.0
SETTLE_AFTER_FACTOR = 2.0  # meter data of an ISP is read this many measure intervals after it ended
_SNAKE = re.compile(r"(.)([A-Z][a-z])")


class _AgrService(ShapeshifterAgrService):  # type: ignore[misc]  # the library is untyped
    def __init__(self, owner: UftpSource, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner

    def process_flex_request(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_flex_request, message)

    def process_flex_order(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_flex_order, message)

    def process_flex_settlement(self, message: Any) -> None:
        self.owner.handle(self.owner.settle, message)

    def process_flex_offer_response(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_flex_offer_response, message)

    def process_flex_reservation_update(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_flex_reservation_update, message)

    def process_d_prognosis_response(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_other, message)

    def process_flex_offer_revocation_response(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_other, message)

    def process_metering_response(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_other, message)

    def process_agr_portfolio_query_response(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_other, message)

    def process_agr_portfolio_update_response(self, message: Any) -> None:
        self.owner.handle(self.owner.aggregator.on_other, message)


class UftpSource:
    """A daemon component and :class:`csms.interfaces.SignalSource` named ``uftp``."""

    name = "uftp"

    def __init__(self, cfg: UftpConfig, aggregator: Aggregator) -> None:
        self.cfg = cfg
        self.aggregator = aggregator
        self.book = {p.domain: p for p in cfg.participants}
        self.port = cfg.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.service = _AgrService(self, sender_domain=cfg.domain, signing_key=cfg.signing_key,
                                   key_lookup_function=self._key, endpoint_lookup_function=self._endpoint,
                                   host=cfg.host, port=cfg.port, path=cfg.path, version=cfg.version)

    # The address book (the library calls these instead of looking in DNS) --------------------------
    def _participant(self, domain: str, role: Any) -> Any:
        found = self.book.get(domain)
        if found is None or str(role) != "DSO":
            raise HTTPException(419, f"no {role} participant {domain!r} in the config")
        return found

    def _key(self, domain: str, role: Any) -> str:
        return str(self._participant(domain, role).public_key)

    def _endpoint(self, domain: str, role: Any) -> str:
        return str(self._participant(domain, role).endpoint)

    # Lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        await self.aggregator.restore()
        await asyncio.to_thread(self._listen)
        self.port = self.service.server.servers[0].sockets[0].getsockname()[1]
        log.info("uftp: aggregator %s listening on http://%s:%d%s (Shapeshifter %s)", self.cfg.domain, self.cfg.host,
                 self.port, self.cfg.path, self.cfg.version)
        self._tasks.append(asyncio.create_task(self._measure_loop(), name="uftp measure"))

    def _listen(self) -> None:
        """The library's run_in_thread, but one that fails instead of waiting forever when uvicorn
        cannot bind (it ends its thread on a port in use)."""
        service = self.service
        service.server_thread = threading.Thread(target=service.run, name="uftp endpoint", daemon=True)
        service.server_thread.start()
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while not service.server.started:
            if not service.server_thread.is_alive() or time.monotonic() > deadline:
                service.server.should_exit = True
                raise OSError(f"grid.uftp: cannot listen on {self.cfg.host}:{self.cfg.port} (port in use?)")
            time.sleep(0.05)

    async def stop(self) -> None:
        self._stopping.set()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await asyncio.to_thread(self._stop_service)

    def _stop_service(self) -> None:
        self.service.stop()
        self.service.inbound_executor.shutdown(wait=True, cancel_futures=True)
        self.service.outbound_executor.shutdown(wait=True, cancel_futures=True)

    def outage(self, now: datetime) -> str | None:
        return None  # see the module docstring: a silent DSO is no reason for safe mode

    @property
    def settle_after_s(self) -> float:
        return SETTLE_AFTER_FACTOR * self.cfg.measure_interval_s

    async def settle(self, message: Any) -> list[Outgoing]:
        return await self.aggregator.on_flex_settlement(message, self.settle_after_s)

    async def _measure_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.measure_interval_s)
            try:
                await self.aggregator.measure(self.settle_after_s)
            except Exception:  # noqa: BLE001 - a store hiccup must not end measuring
                log.exception("uftp: measuring delivered flexibility failed; trying again")

    # From the library's worker threads -----------------------------------------------------------------
    def handle(self, decide: Callable[[Any], Awaitable[list[Outgoing]]], message: PayloadMessage) -> None:
        """Decide on the loop (stored before answered), then send the answers from this thread."""
        loop = self._loop
        if loop is None or self._stopping.is_set():
            return

        async def run() -> list[Outgoing]:
            return await decide(message)

        try:
            outgoing = asyncio.run_coroutine_threadsafe(run(), loop).result(DECISION_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - reported; the DSO sees no answer and may send again
            log.exception("uftp: deciding on %s %s failed", type(message).__name__, message.message_id)
            return
        for item in outgoing:
            self._deliver(item)

    def _deliver(self, item: Outgoing) -> None:
        kind = type(item.message).__name__
        delay = 0.5
        while True:
            try:
                client = self.service.dso_client(item.domain, self.cfg.version)
                client.request_timeout = self.cfg.request_timeout_s
                getattr(client, "send_" + _SNAKE.sub(r"\1_\2", kind).lower())(item.message)
                error = None
            except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, non-200 answers
                error = f"{type(exc).__name__}: {exc}"[:300]
            if error is None or datetime.now(UTC) + timedelta(seconds=delay) >= item.deadline or self._stopping.is_set():
                break
            log.warning("uftp: sending %s to %s failed (%s); again in %.1f s", kind, item.domain, error, delay)
            self._on_loop(functools.partial(self.aggregator.send_failed, item, error))
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self.cfg.retry_max_s)
        if error is not None:
            log.error("uftp: gave up sending %s %s to %s: %s", kind, item.message.message_id, item.domain, error)
        self._on_loop_async(self.aggregator.sent(item, error))

    def _on_loop(self, job: Callable[[], None]) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(job)

    def _on_loop_async(self, coro: Any) -> None:
        if self._loop is None:
            coro.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:
            coro.close()

    def status(self) -> dict[str, Any]:
        return {"endpoint": f"http://{self.cfg.host}:{self.port}{self.cfg.path}", **self.aggregator.status()}
