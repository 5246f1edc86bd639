"""The writer's NATS edge: fetch a batch, commit it, ack it; never lose a message.

Per batch (docs/data-path.md, Writer):

- decode and plan every message; one that cannot be decoded, or holds a row that
  can never be written, goes to the dead letters at once (and is termed);
- commit the rest in one transaction (services/writer/store.py), then ack them;
- PostgreSQL unreachable: retry the whole batch with exponential backoff (cap
  ``WRITER_DB_RETRY_MAX_S``), ack nothing, keep every message in flight with
  in-progress acks; on shutdown nak the batch instead;
- any other failure: isolate, i.e. retry the batch message by message. A message
  that fails alone for a data reason that can never go away is dead-lettered at
  once; for another reason it is nak'ed with a delay, and dead-lettered when it
  reaches ``topology.MAX_DELIVER`` deliveries. The rest keep flowing.

After a commit: acks, metrics, one log line per job state change and per rotated
credentials applied or dropped (names of the changed cookies and versions, never
a token), and a core-NATS notification per job touched on ``airbnb.jobs.{job_id}``
for progress displays. A rotation handled already (a redelivery, a replay) is
neither counted nor logged: it changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from services.writer import bookkeeping, row_codecs, store
from services.writer.bookkeeping import Planned
from services.writer.row_codecs import RowError
from services.writer.settings import WriterSettings
from shared import topology
from shared.backoff import RetryStopped, capped_backoff, retry_until
from shared.jetstream import Delivery, PullWorker
from shared.logs import log_context
from shared.messages import MessageDecodeError, encode
from shared.metrics import (
    BATCH_ROWS,
    COMMIT_SECONDS,
    CREDENTIAL_ROTATIONS,
    JOBS,
    ROWS_WRITTEN,
    WRITER_PENDING,
)
from shared.topology import heartbeat_interval

log = logging.getLogger("sync_airbnb.writer")

SERVICE = "writer"
# How long one fetch waits for a first message: bounds how late a stop is noticed.
IDLE_FETCH_S = 1.0
# How often the writer reads its consumer's pending count (the writer-lag alert's gauge).
PENDING_EVERY_S = 15.0
ACQUIRE_TIMEOUT_S = 10.0

ErrorKind = Literal["transient", "permanent", "unknown"]

# SQLSTATE classes: connection, transaction rollback (serialization, deadlock),
# insufficient resources, operator intervention (shutdown), system error.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# data exception, integrity constraint violation: the same input fails again.
_PERMANENT_CLASSES = frozenset({"22", "23"})


def classify_error(exc: BaseException) -> ErrorKind:
    """transient: retry the batch as it is; permanent: that input can never succeed."""
    if isinstance(exc, RowError | store.RowEncodeError | MessageDecodeError):
        return "permanent"
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate[:2] in _TRANSIENT_CLASSES or sqlstate == "55P03":  # lock_not_available
            return "transient"
        if sqlstate[:2] in _PERMANENT_CLASSES:
            return "permanent"
        return "unknown"
    # A closed connection, a refused connect, a pool or command timeout.
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return "transient"
    return "unknown"


def redelivery_delay(num_delivered: int) -> float:
    """Backoff before a message that failed alone is offered again: 1, 2, 4 ... 60 s."""
    return float(capped_backoff(num_delivered, 1, 60))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class _Committed:
    result: store.CommitResult


@dataclass(frozen=True, slots=True)
class _Orphans:
    reasons: dict[int, str]


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Stopped:
    pass


_Outcome = _Committed | _Orphans | _Failed | _Stopped
_Item = tuple[Delivery, Planned]


class Writer:
    def __init__(
        self,
        *,
        js: JetStreamContext,
        nc: NatsClient,
        pool: asyncpg.Pool,
        settings: WriterSettings,
        stopping: asyncio.Event,
    ) -> None:
        self.js = js
        self.nc = nc
        self.pool = pool
        self.settings = settings
        self.stopping = stopping
        # In-progress acks well inside the consumer's ack_wait (JETSTREAM_ACK_WAIT_S), so no
        # message of a batch in hand (a slow commit, PostgreSQL down) goes to another writer.
        self._heartbeat_s = heartbeat_interval(settings.jetstream_ack_wait_s)
        # The batch in hand; each message is settled (acked, termed or nak'ed) once.
        self._in_hand: list[Delivery] = []
        self._copy_strategy = row_codecs.CopyStrategy()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        consumer = topology.WRITER_RESULTS
        worker = PullWorker(
            self.js,
            consumer,
            self.handle_batch,
            service=SERVICE,
            # One batch in hand at a time: up to WRITER_BATCH_MAX_MESSAGES, pulled for
            # WRITER_BATCH_MAX_WAIT_S after the first one.
            max_in_flight=self.settings.writer_batch_max_messages,
            batch_max=self.settings.writer_batch_max_messages,
            batch_wait_s=self.settings.writer_batch_max_wait_s,
            heartbeat_s=self._heartbeat_s,
            # The batch in hand sees ``stopping`` and naks itself.
            on_stop="finish",
            fetch_wait_s=IDLE_FETCH_S,
            what="results",
            logger=log,
        )
        await worker.bind()
        log.info(
            "consuming %s/%s in batches of up to %d messages",
            consumer.stream,
            consumer.durable,
            self.settings.writer_batch_max_messages,
        )
        pending = asyncio.create_task(
            report_pending(self.js, consumer, self.stopping), name="writer-pending"
        )
        try:
            await worker.run(self.stopping)
        finally:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)

    # --- one batch ------------------------------------------------------------------------

    async def handle_batch(self, msgs: Sequence[Delivery]) -> None:
        """One batch (the worker heartbeats its unsettled messages meanwhile)."""
        started = time.monotonic()
        self._in_hand = list(msgs)
        try:
            items: list[_Item] = []
            for msg in msgs:
                try:
                    planned = bookkeeping.plan_message(
                        bookkeeping.decode_result(msg.subject, msg.data)
                    )
                except MessageDecodeError as exc:
                    await self._dead_letter(msg, f"undecodable: {exc}", "undecodable")
                except RowError as exc:
                    await self._dead_letter(msg, f"row cannot be written: {exc}", "bad_row")
                except Exception as exc:
                    # Not the message's known faults: a bug. Retried later, and dead-lettered
                    # at MAX_DELIVER, so it never blocks the rest nor vanishes.
                    log.exception("planning a message on %s failed", msg.subject)
                    await self._failed_alone(msg, exc)
                else:
                    items.append((msg, planned))
            await self._process(items, started)
        finally:
            # Whatever is still in hand (an unexpected error above) is offered again.
            for msg in self._in_hand:
                if not msg.settled:
                    await msg.nak()
            self._in_hand = []

    async def _process(self, items: list[_Item], started: float) -> None:
        while items:
            outcome = await self._commit_with_retry([p for _, p in items])
            if isinstance(outcome, _Committed):
                await self._after_commit(items, outcome.result, started)
                return
            if isinstance(outcome, _Stopped):
                log.info("stopping: %d message(s) of the batch nak'ed for redelivery", len(items))
                for msg, _ in items:
                    await msg.nak()
                return
            if isinstance(outcome, _Orphans):
                for i, reason in outcome.reasons.items():
                    await self._dead_letter(items[i][0], reason, "orphan")
                items = [item for i, item in enumerate(items) if i not in outcome.reasons]
                continue
            if len(items) == 1:
                await self._failed_alone(items[0][0], outcome.error)
                return
            log.warning(
                "batch of %d messages failed (%s); retrying them one by one",
                len(items),
                _describe(outcome.error),
            )
            for n, item in enumerate(items):
                if self.stopping.is_set():
                    for msg, _ in items[n:]:
                        await msg.nak()
                    return
                await self._process([item], time.monotonic())
            return

    async def _commit_with_retry(self, batch: list[Planned]) -> _Outcome:
        async def commit() -> _Outcome:
            async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                return _Committed(await store.commit_batch(conn, batch, self._copy_strategy))

        async def unavailable(exc: BaseException, delay: float) -> None:
            log.warning(
                "PostgreSQL unavailable (%s); retrying the batch of %d in %.1fs",
                _describe(exc),
                len(batch),
                delay,
            )
            await self._send_in_progress()

        try:
            return await retry_until(
                commit,
                base_s=0.2,
                cap_s=self.settings.writer_db_retry_max_s,
                retry_if=lambda exc: classify_error(exc) == "transient",
                stop=self.stopping,  # a commit in progress is let finish
                on_retry=unavailable,
            )
        except store.OrphanMessages as exc:
            return _Orphans(exc.reasons)
        except RetryStopped:
            return _Stopped()
        except Exception as exc:
            return _Failed(exc)

    async def _failed_alone(self, msg: Delivery, exc: BaseException) -> None:
        kind = classify_error(exc)
        deliveries = msg.deliveries
        reason = f"{_describe(exc)} (delivery {deliveries})"
        if kind == "permanent":
            await self._dead_letter(msg, f"cannot be written: {reason}", "bad_data")
        elif deliveries >= topology.MAX_DELIVER:
            await self._dead_letter(msg, f"failed {deliveries} times: {reason}", "max_deliver")
        else:
            delay = redelivery_delay(deliveries)
            log.warning(
                "message on %s failed (%s); redelivery in %.0fs",
                msg.subject,
                reason,
                delay,
                extra={"subject": msg.subject, "deliveries": deliveries},
            )
            await msg.nak(delay)

    # --- settling messages ----------------------------------------------------------------
    # Delivery.ack/nak never raise: a message not acked is redelivered later, which the
    # ledger makes harmless.

    async def _dead_letter(self, msg: Delivery, reason: str, category: str) -> None:
        await msg.dead_letter(reason, category=category, nak_delay=redelivery_delay(msg.deliveries))

    async def _send_in_progress(self) -> None:
        for msg in self._in_hand:
            if not msg.settled:
                await msg.in_progress()

    # --- after commit ---------------------------------------------------------------------

    async def _after_commit(
        self, items: list[_Item], result: store.CommitResult, started: float
    ) -> None:
        for msg, _ in items:
            await msg.ack()
        COMMIT_SECONDS.observe(time.monotonic() - started)
        BATCH_ROWS.observe(result.rows_copied)
        for table, n in result.rows_written.items():
            ROWS_WRITTEN.labels(table=table).inc(n)
        for t in result.transitions:
            JOBS.labels(status=t.status).inc()
            final = t.status in bookkeeping.FINAL_STATUSES
            snapshot = result.jobs.get(t.job_id)
            with log_context(job_id=str(t.job_id), account_id=t.account_id):
                log.info(
                    "job %s: %s",
                    t.status,
                    t.detail or "",
                    extra={
                        "status": t.status,
                        **t.counts,
                        # rows counted up to the end of this batch: exact for a final job
                        **({"rows_written": snapshot.rows_written} if final and snapshot else {}),
                    },
                )
        for r in result.rotations:
            if r.outcome == "already_handled":
                continue
            CREDENTIAL_ROTATIONS.labels(outcome=r.outcome).inc()
            with log_context(job_id=str(r.job_id), account_id=r.account_id):
                if r.outcome == "applied":
                    log.info(
                        "account %s: credentials rotated by job %s saved (version %d -> %s; "
                        "changed: %s)",
                        r.account_id,
                        r.job_id,
                        r.from_version,
                        r.version,
                        ", ".join(r.changed) or "not named",
                        extra={"from_version": r.from_version, "version": r.version},
                    )
                else:
                    log.warning(
                        "account %s: credentials rotated by job %s dropped: the sync started "
                        "from version %d, the account is at %s (changed since, or deleted)",
                        r.account_id,
                        r.job_id,
                        r.from_version,
                        r.version if r.version is not None else "no such account",
                        extra={"from_version": r.from_version, "version": r.version},
                    )
        for job_id, update in result.jobs.items():
            try:
                await self.nc.publish(topology.job_updates_subject(job_id), encode(update))
            except Exception as exc:  # a progress display missing one update is harmless
                log.debug("job update not published: %s", _describe(exc))


async def report_pending(
    js: JetStreamContext,
    consumer: topology.Consumer,
    stopping: asyncio.Event,
    *,
    interval_s: float = PENDING_EVERY_S,
) -> None:
    """Set WRITER_PENDING from the consumer's num_pending every ``interval_s`` until
    ``stopping``; while NATS does not answer, the gauge keeps its last value."""
    while not stopping.is_set():
        try:
            info = await js.consumer_info(consumer.stream, consumer.durable)
        except Exception as exc:
            log.debug("consumer info not read (%r)", exc)
        else:
            WRITER_PENDING.set(info.num_pending or 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval_s)
