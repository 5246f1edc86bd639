"""The one JetStream pull worker: every durable consumer of the project runs through it.

A service gives :class:`PullWorker` its durable (a :class:`shared.topology.Consumer`)
and a handler; the worker does the rest, the same way for every service:

- **fetch loop**: binds to the durable and pulls, waiting ``fetch_wait_s`` per pull
  (which also bounds how late a stop is noticed);
- **in-flight cap**: never more than ``max_in_flight`` messages in the hands of
  handlers; a pull asks for the free slots only, so replicas share the queue;
- **batches**: the handler gets up to ``batch_max`` messages at once; with
  ``batch_wait_s`` the worker keeps pulling that long after the first message of
  a batch to fill it (the writer's mode). Batches of one run concurrently up to
  the cap (the fetcher's mode);
- **heartbeats**: while a handler runs, every message of its batch not yet settled
  gets an in-progress ack each ``heartbeat_s`` (see ``topology.heartbeat_interval``);
- **typed settle**: the handler settles each :class:`Delivery` with ``ack()``,
  ``nak(delay)`` or ``term()``. None of them raises: a failure is logged and the
  message is left to JetStream, which redelivers it after ack_wait;
- **dead-letter-or-nak**: ``Delivery.dead_letter`` moves a message to the dead
  letters (``shared.dead_letters``); if that fails it is logged and the message is
  nak'ed. ``Delivery.retry_or_dead_letter`` naks, or dead-letters once
  ``topology.MAX_DELIVER`` deliveries have failed;
- **backoff**: a failed pull (NATS away, reconnecting) waits along
  ``shared.backoff.backoff_delays`` before the next one;
- **bounded stop**: when ``stopping`` is set the worker stops pulling, naks what a
  pull still brings, and then either cancels the handlers in flight and naks
  their unsettled messages without delay (``on_stop="cancel"``, the fetcher) or
  lets them finish (``on_stop="finish"``: the handler watches ``stopping`` and naks
  what it holds, as the writer does). If the worker itself is cancelled (the
  runtime's shutdown budget ran out), its handlers are cancelled and their
  unsettled messages nak'ed either way.

A message a handler leaves unsettled when it returns (or raises: that is logged)
is left to redelivery after ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Literal, TypeVar

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from shared import topology
from shared.backoff import backoff_delays
from shared.dead_letters import send_to_dead_letters

log = logging.getLogger("sync_airbnb.jetstream")

SettleHow = Literal["ack", "nak", "term"]
OnStop = Literal["cancel", "finish"]
T = TypeVar("T")

# How long one pull waits for messages: also the longest a stop waits for a pull to end.
FETCH_WAIT_S = 1.0
# The waits after failed pulls in a row.
FETCH_RETRY_BASE_S = 1.0
FETCH_RETRY_CAP_S = 5.0


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Delivery:
    """One message in hand and the only way to settle it; ``settled`` once it was."""

    __slots__ = ("_js", "_service", "msg", "settled")

    def __init__(self, msg: Msg, *, js: JetStreamContext, service: str) -> None:
        self.msg = msg
        self.settled = False
        self._js = js
        self._service = service

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def deliveries(self) -> int:
        """How many times JetStream has delivered this message (1 when unknown)."""
        try:
            return int(self.msg.metadata.num_delivered)
        except Exception:
            return 1

    async def ack(self) -> None:
        await self.settle("ack")

    async def nak(self, delay: float | None = None) -> None:
        await self.settle("nak", delay)

    async def term(self) -> None:
        await self.settle("term")

    async def settle(self, how: SettleHow, delay: float | None = None) -> None:
        """Ack, nak (after ``delay`` seconds) or term; never raises.

        A failure is logged and the message stays with JetStream, which offers it
        again after ack_wait: every handler is idempotent for redeliveries.
        """
        self.settled = True
        try:
            if how == "ack":
                await self.msg.ack()
            elif how == "nak":
                await self.msg.nak(delay=delay)
            else:
                await self.msg.term()
        except Exception as exc:
            log.warning(
                "could not %s a message on %s: %s; it is redelivered",
                how,
                self.msg.subject,
                describe_error(exc),
                extra={"subject": self.msg.subject},
            )

    async def in_progress(self) -> None:
        """Tell JetStream the message is still being worked on; never raises."""
        try:
            await self.msg.in_progress()
        except Exception as exc:
            log.warning("in-progress ack failed: %s", describe_error(exc))

    async def dead_letter(
        self, reason: str, *, category: str, nak_delay: float | None = None
    ) -> bool:
        """Send the message to the dead letters (and term it); never raises.

        True once it was dead-lettered. A failure is logged and the message nak'ed
        after ``nak_delay``, so the next delivery tries again: nothing is lost.
        """
        self.settled = True
        try:
            await send_to_dead_letters(self._js, self._service, self.msg, reason, category=category)
        except Exception as exc:
            log.error(
                "could not dead-letter a message on %s: %s",
                self.msg.subject,
                describe_error(exc),
                extra={"subject": self.msg.subject},
            )
            await self.settle("nak", nak_delay)
            return False
        return True

    async def retry_or_dead_letter(
        self, reason: str, *, delay: float, category: str = "max_deliver"
    ) -> bool:
        """Nak after ``delay``; or, at ``topology.MAX_DELIVER`` deliveries, dead-letter.

        True when the message went to the dead letters.
        """
        if self.deliveries >= topology.MAX_DELIVER:
            return await self.dead_letter(reason, category=category, nak_delay=delay)
        await self.settle("nak", delay)
        return False


Handler = Callable[[Sequence[Delivery]], Awaitable[None]]


class PullWorker:
    """Pull ``consumer`` and hand batches to ``handler``; see the module docstring."""

    def __init__(
        self,
        js: JetStreamContext,
        consumer: topology.Consumer,
        handler: Handler,
        *,
        service: str,
        max_in_flight: int,
        batch_max: int = 1,
        batch_wait_s: float = 0.0,
        heartbeat_s: float | None = None,
        on_stop: OnStop = "finish",
        fetch_wait_s: float = FETCH_WAIT_S,
        what: str = "messages",
        logger: logging.Logger | None = None,
    ) -> None:
        if max_in_flight < 1 or batch_max < 1:
            raise ValueError("max_in_flight and batch_max must be at least 1")
        self.js = js
        self.consumer = consumer
        self.handler = handler
        self.service = service
        self.max_in_flight = max_in_flight
        self.batch_max = min(batch_max, max_in_flight)
        self.batch_wait_s = batch_wait_s
        self.heartbeat_s = heartbeat_s
        self.on_stop = on_stop
        self.fetch_wait_s = fetch_wait_s
        self.what = what
        self.log = logger or log
        self._running: dict[asyncio.Task[None], list[Delivery]] = {}
        self._sub: JetStreamContext.PullSubscription | None = None

    @property
    def in_flight(self) -> int:
        """Messages in the hands of handlers now."""
        return sum(len(batch) for batch in self._running.values())

    async def bind(self) -> None:
        """Bind to the durable; ``run`` does it if nobody did. A service that logs that it
        consumes binds first, so the line means the consumer is found."""
        if self._sub is None:
            c = self.consumer
            self._sub = await self.js.pull_subscribe_bind(durable=c.durable, stream=c.stream)

    async def run(self, stopping: asyncio.Event) -> None:
        """Pull and handle until ``stopping`` is set; then stop as ``on_stop`` says."""
        await self.bind()
        sub = self._sub
        assert sub is not None
        stop_wait = asyncio.create_task(stopping.wait())
        waits = backoff_delays(FETCH_RETRY_BASE_S, FETCH_RETRY_CAP_S)
        cancelled = False
        try:
            while not stopping.is_set():
                free = pull_size(self.max_in_flight, self.in_flight, self.batch_max)
                if not free:
                    await asyncio.wait(
                        {*self._running, stop_wait}, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                try:
                    msgs = await self._pull(sub, free, stopping)
                except Exception as exc:  # NATS reconnecting, a server hiccup
                    delay = next(waits)
                    self.log.warning(
                        "pulling %s failed: %s; next pull in %.1fs",
                        self.what,
                        describe_error(exc),
                        delay,
                    )
                    await asyncio.wait({stop_wait}, timeout=delay)
                    continue
                waits = backoff_delays(FETCH_RETRY_BASE_S, FETCH_RETRY_CAP_S)
                deliveries = [Delivery(m, js=self.js, service=self.service) for m in msgs]
                if stopping.is_set():
                    for d in deliveries:
                        await d.nak()
                    break
                for batch in chunks(deliveries, self.batch_max):
                    self._start(batch)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            stop_wait.cancel()
            await self._stop(cancel=cancelled or self.on_stop == "cancel")
            self._sub = None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pull(
        self, sub: JetStreamContext.PullSubscription, limit: int, stopping: asyncio.Event
    ) -> list[Msg]:
        """Up to ``limit`` messages: [] after an idle ``fetch_wait_s``; with a batch window,
        keeps pulling ``batch_wait_s`` after the first message. A failed first pull raises."""
        try:
            msgs = await sub.fetch(limit, timeout=self.fetch_wait_s)
        except (TimeoutError, NatsTimeoutError):
            return []
        if self.batch_wait_s <= 0:
            return msgs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait_s
        while len(msgs) < limit and not stopping.is_set():
            remaining = deadline - loop.time()
            if remaining < 0.01:
                break
            try:
                msgs.extend(await sub.fetch(limit - len(msgs), timeout=remaining))
            except (TimeoutError, NatsTimeoutError):
                break
            except Exception as exc:  # keep what is in hand; the next pull backs off
                self.log.warning("pulling %s failed: %s", self.what, describe_error(exc))
                break
        return msgs

    def _start(self, batch: list[Delivery]) -> None:
        task = asyncio.create_task(self._handle(batch))
        self._running[task] = batch
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("handling %s failed", self.what, exc_info=task.exception())

    async def _handle(self, batch: list[Delivery]) -> None:
        beat = asyncio.create_task(self._heartbeat(batch)) if self.heartbeat_s else None
        try:
            await self.handler(batch)
        finally:
            if beat is not None:
                beat.cancel()

    async def _heartbeat(self, batch: list[Delivery]) -> None:
        assert self.heartbeat_s
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for d in batch:
                if not d.settled:
                    await d.in_progress()

    async def _stop(self, *, cancel: bool) -> None:
        """Cancel (or await) the handlers in flight; nak what cancelled ones held."""
        running = dict(self._running)
        if not running:
            return
        if cancel:
            for task in running:
                task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        unsettled = [d for batch in running.values() for d in batch if not d.settled]
        for d in unsettled:
            # No delay: another replica takes it at once.
            await d.nak()
        if unsettled:
            self.log.info("handed back %d %s in flight", len(unsettled), self.what)


def pull_size(max_in_flight: int, in_flight: int, batch_max: int) -> int:
    """How many messages the next pull asks for: the free slots, or 0 (wait for a handler
    to finish) while fewer than one whole batch is free (pure)."""
    free = max_in_flight - in_flight
    return free if free >= batch_max else 0


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive lists of at most ``size`` (pure)."""
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
