"""``sync-airbnb sync ACCOUNT_ID [--full] [--wait]``: trigger one account's sync.

The trigger is a durable ``SyncTriggered`` on the JetStream stream
``AIRBNB_SYNC_TRIGGERS`` (as the admin's ``POST /accounts/{id}/sync`` sends it): once
JetStream stored it, it is handled even by a scheduler that starts later. The
scheduler announces what it made of it on ``airbnb.triggers.{trigger_id}``
(subscribed to *before* the trigger is sent) and records it in
``airbnb.sync_triggers`` (read every second when ``DATABASE_URL`` is set): the job id
(printed alone on stdout, for scripts) or a refusal (printed with its detail; exit 1).
Without ``--wait`` the command waits ``SYNC_TRIGGER_TIMEOUT_S`` for it; with none by
then it says the trigger is stored and exits 0 (the sync will be queued when a
scheduler runs). ``--wait`` waits for the scheduler as long as it takes, then shows a
progress bar on stderr until the job ends, from two sources merged by :func:`merge`:

* the writer's notifications on ``airbnb.jobs.{job_id}`` (subscribed to with a
  wildcard *before* the trigger is sent, so none is missed);
* when ``DATABASE_URL`` is set, ``airbnb.sync_jobs`` read every second. This
  is the only way to see a job that had already ended when ``--wait`` began
  (the trigger answers the same day's job again, and no notification comes).

Exit codes: 0 the sync was queued or its trigger stored (with ``--wait``: succeeded);
1 refused, failed, partial, or NATS/JetStream unreachable; 2 a settings error (one
line: ``NATS_URL`` is required); 130 interrupted while waiting (the trigger or the
job goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from pydantic import Field, field_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared import topology
from shared.messages import (
    FINAL_JOB_STATUSES,
    JobUpdate,
    MessageDecodeError,
    SyncTriggered,
    SyncTriggerReply,
    decode,
)
from shared.settings import NatsSettings, load_settings, nats_servers, validate_database_url
from shared.sync_triggers import new_trigger, store_trigger

FINAL = FINAL_JOB_STATUSES
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
DB_POLL_S = 1.0
# Without DATABASE_URL, a hint after this long with no notification at all; and, either
# way, after this long with no scheduler handling the trigger.
QUIET_HINT_S = 15.0
T = TypeVar("T")

_REFUSAL_TEXT = {
    "not_found": "account {id} does not exist",
    "deleted": "account {id} is deleted",
    "inactive": "account {id} is inactive",
    "needs_credentials": "account {id} needs new credentials (Airbnb rejected its session); "
    "update its airbnb_cookie",
    "invalid_request": "the scheduler refused the request",
    "internal": "the scheduler could not queue the sync",
}


class SyncCommandSettings(NatsSettings):
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    sync_trigger_timeout_s: float = Field(
        default=10.0, gt=0, le=120, validation_alias="SYNC_TRIGGER_TIMEOUT_S"
    )  # for JetStream to store the trigger; without --wait, for the scheduler too

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return validate_database_url(v) if v else None


# --- the pure part ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobState:
    status: str = "queued"
    listings_total: int | None = None
    listings_succeeded: int = 0
    listings_failed: int = 0
    rows_written: int = 0
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def listings_done(self) -> int:
        return self.listings_succeeded + self.listings_failed


_ORDER = {"queued": 0, "running": 1}


def merge(prev: JobState, snapshot: Mapping[str, Any]) -> JobState:
    """``prev`` updated by one snapshot (a notification or a database row).

    Snapshots from several writers, or from NATS and the database, can arrive out
    of order: a final state never changes again (the writer's rule too), counts
    only grow, and ``running`` is never undone by a stale ``queued``.
    """
    if prev.final:
        return prev
    status = str(snapshot.get("status") or prev.status)
    if status not in FINAL and _ORDER.get(status, 0) < _ORDER.get(prev.status, 0):
        status = prev.status
    total = snapshot.get("listings_total")
    return replace(
        prev,
        status=status,
        listings_total=int(total) if total is not None else prev.listings_total,
        listings_succeeded=max(
            prev.listings_succeeded, int(snapshot.get("listings_succeeded") or 0)
        ),
        listings_failed=max(prev.listings_failed, int(snapshot.get("listings_failed") or 0)),
        rows_written=max(prev.rows_written, int(snapshot.get("rows_written") or 0)),
        error=snapshot.get("error") or prev.error,
    )


def _grown(prev: int, value: Any) -> int:
    return max(prev, int(value or 0))


def refusal_line(account_id: str, reply: SyncTriggerReply) -> str:
    """The scheduler's own detail when it gave one (it names the account and the way out)."""
    code = reply.error or "no job id"
    text = reply.detail or _REFUSAL_TEXT.get(code, "the scheduler refused").format(id=account_id)
    return f"sync-airbnb sync: refused ({code}): {text}"


def outcome_line(job_id: uuid.UUID, state: JobState) -> str:
    counts = (
        f"{state.listings_succeeded} of {state.listings_total} listings"
        if state.listings_total is not None
        else "no listings announced"
    )
    line = f"job {job_id} {state.status}: {counts}, {state.rows_written:,} rows written"
    if state.status != "succeeded":
        line += f"; {state.error or 'no reason recorded'}"
    return line


def exit_code(state: JobState) -> int:
    return 0 if state.status == "succeeded" else EXIT_FAILED


# --- the imperative shell -----------------------------------------------------------------


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _connect(url: str) -> NatsClient:
    async def quiet(_: Exception) -> None:
        # nats-py would print each failed attempt with a traceback; the caller says it once.
        return None

    return await nats.connect(
        servers=nats_servers(url),  # one server, or a cluster's nodes comma-separated
        name="sync-airbnb-sync",
        connect_timeout=3,
        max_reconnect_attempts=5,
        reconnect_time_wait=1,
        error_cb=quiet,
    )


async def send_trigger(
    nc: NatsClient, account_id: str, full: bool, timeout_s: float
) -> tuple[SyncTriggered, Subscription] | str:
    """The trigger, stored in JetStream, and the subscription its outcome will come on;
    or one line saying why it was not stored."""
    trigger = new_trigger(account_id, full=full)
    tid = trigger.trigger_id
    try:
        sub = await nc.subscribe(topology.trigger_outcome_subject(tid), max_msgs=1)
        await nc.flush()
        await store_trigger(nc.jetstream(), trigger, timeout_s=timeout_s)
    except (NatsError, OSError, TimeoutError) as exc:
        return f"sync-airbnb sync: JetStream did not store the trigger: {exc or type(exc).__name__}"
    return trigger, sub


async def _recorded_outcome(
    conn: asyncpg.Connection, trigger_id: uuid.UUID
) -> SyncTriggerReply | None:
    row = await conn.fetchrow(
        "SELECT t.job_id, t.error, t.detail, j.status FROM airbnb.sync_triggers t"
        " LEFT JOIN airbnb.sync_jobs j USING (job_id) WHERE t.trigger_id = $1",
        trigger_id,
    )
    if row is None:
        return None
    return SyncTriggerReply(trigger_id=trigger_id, **dict(row))


async def await_outcome(
    sub: Subscription, trigger_id: uuid.UUID, database_url: str | None, within: float | None
) -> SyncTriggerReply | None:
    """What the scheduler made of the trigger; None if nothing came ``within`` seconds
    (``None``: wait as long as it takes)."""
    conn: asyncpg.Connection | None = None
    if database_url:
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _err(f"sync-airbnb sync: cannot read sync_triggers ({exc}); following NATS only")
    started = time.monotonic()
    hinted = False
    try:
        while within is None or time.monotonic() - started < within:
            step = DB_POLL_S if within is None else min(DB_POLL_S, within)
            try:
                msg = await sub.next_msg(timeout=step)
            except (NatsError, TimeoutError):  # nats' TimeoutError is one of its errors
                msg = None
            if msg is not None:
                with contextlib.suppress(MessageDecodeError):
                    return decode(SyncTriggerReply, msg.data)
            if conn is not None:
                try:
                    recorded = await _recorded_outcome(conn, trigger_id)
                except (OSError, asyncpg.PostgresError) as exc:
                    _err(f"sync-airbnb sync: reading sync_triggers failed ({exc})")
                    conn = None
                    recorded = None
                if recorded is not None:
                    return recorded
            if within is None and not hinted and time.monotonic() - started > QUIET_HINT_S:
                hinted = True
                _err(
                    f"sync-airbnb sync: no scheduler has handled trigger {trigger_id} for "
                    f"{QUIET_HINT_S:g}s; it waits in JetStream until one runs"
                )
        return None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class JobWatch:
    """Collects snapshots of one job from NATS notifications and database polls."""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.state = JobState()
        self.changed = asyncio.Event()
        self.last_update = time.monotonic()
        self._early: list[JobUpdate] = []  # notifications before the job id was known

    async def on_notification(self, msg: Msg) -> None:
        try:
            update = decode(JobUpdate, msg.data)
        except MessageDecodeError:
            return  # not a job update of this version: the database poll still answers
        if self.job_id is None:
            self._early.append(update)
            return
        if str(update.job_id) == self.job_id:
            self.apply(update.model_dump())

    def known(self, job_id: uuid.UUID) -> None:
        self.job_id = str(job_id)
        for update in self._early:
            if str(update.job_id) == self.job_id:
                self.apply(update.model_dump())
        self._early.clear()

    def apply(self, snapshot: Mapping[str, Any]) -> None:
        self.state = merge(self.state, snapshot)
        self.last_update = time.monotonic()
        self.changed.set()


async def poll_database(url: str, job_id: uuid.UUID, watch: JobWatch) -> None:
    """Feed ``watch`` from ``airbnb.sync_jobs`` until cancelled; gives up quietly if
    PostgreSQL cannot be reached (the NATS notifications still come)."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _err(f"sync-airbnb sync: cannot read sync_jobs ({exc}); following NATS only")
        return
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT status, listings_total, listings_succeeded, listings_failed,"
                " rows_written, error FROM airbnb.sync_jobs WHERE job_id = $1",
                job_id,
            )
            if row is not None:
                watch.apply(dict(row))
            await asyncio.sleep(DB_POLL_S)
    except (OSError, asyncpg.PostgresError) as exc:
        _err(f"sync-airbnb sync: reading sync_jobs failed ({exc}); following NATS only")
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


async def wait_for_job(
    job_id: uuid.UUID, watch: JobWatch, database_url: str | None, account_id: str
) -> JobState:
    poller = (
        asyncio.create_task(poll_database(database_url, job_id, watch)) if database_url else None
    )
    console = Console(stderr=True)
    progress = Progress(
        TextColumn(f"account {account_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("listings"),
        TextColumn("{task.fields[rows]:>9,} rows"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    hinted = False
    try:
        with progress:
            task = progress.add_task("sync", total=None, rows=0, status="queued")
            while not watch.state.final:
                watch.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.changed.wait(), timeout=1)
                s = watch.state
                progress.update(
                    task,
                    total=s.listings_total,
                    completed=s.listings_done,
                    rows=s.rows_written,
                    status=s.status,
                )
                quiet_for = time.monotonic() - watch.last_update
                if not database_url and not hinted and quiet_for > QUIET_HINT_S:
                    hinted = True
                    progress.console.print(
                        f"no news of job {job_id} for {QUIET_HINT_S:g}s: it is queued, or it "
                        "ended before --wait began (set DATABASE_URL to read its status)"
                    )
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(BaseException):
                await poller
    return watch.state


async def run(settings: SyncCommandSettings, account_id: str, *, full: bool, wait: bool) -> int:
    try:
        nc = await _connect(settings.nats_url)
    except (NatsError, OSError, TimeoutError) as exc:
        _err(f"sync-airbnb sync: cannot reach NATS at {settings.nats_url}: {exc}")
        return EXIT_FAILED
    try:
        watch = JobWatch()
        if wait:
            await nc.subscribe(topology.JOB_UPDATES, cb=watch.on_notification)
            await nc.flush()
        sent = await send_trigger(nc, account_id, full, settings.sync_trigger_timeout_s)
        if isinstance(sent, str):
            _err(sent)
            return EXIT_FAILED
        trigger, sub = sent
        handled = await _until_interrupted(
            await_outcome(
                sub,
                trigger.trigger_id,
                settings.database_url,
                None if wait else settings.sync_trigger_timeout_s,
            )
        )
        if handled is None and wait:
            _err(f"sync-airbnb sync: stopped waiting; trigger {trigger.trigger_id} stays stored")
            return EXIT_INTERRUPTED
        if handled is None:
            _err(
                f"sync-airbnb sync: trigger {trigger.trigger_id} stored; no scheduler handled "
                f"it within {settings.sync_trigger_timeout_s:g}s, one will when it runs"
            )
            return 0
        reply = handled
        if reply.job_id is None:
            _err(refusal_line(account_id, reply))
            return EXIT_FAILED
        print(reply.job_id, flush=True)
        if not wait:
            return 0
        if reply.status in FINAL and not settings.database_url:
            # Nothing will be announced for a job that already ended; its counts are in
            # the database only.
            line = f"job {reply.job_id} already ended today: {reply.status}"
            if reply.status == "succeeded":
                print(line, flush=True)
                return 0
            _err(f"sync-airbnb sync: {line} (set DATABASE_URL to read why)")
            return EXIT_FAILED
        watch.known(reply.job_id)
        state = await _until_interrupted(
            wait_for_job(reply.job_id, watch, settings.database_url, account_id)
        )
        if state is None:
            _err(f"sync-airbnb sync: stopped waiting; job {reply.job_id} carries on")
            return EXIT_INTERRUPTED
        line = outcome_line(reply.job_id, state)
        if state.status == "succeeded":
            print(line, flush=True)
        else:
            _err(f"sync-airbnb sync: {line}")
        return exit_code(state)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=5)


async def _until_interrupted(aw: Awaitable[T]) -> T | None:
    """``aw``'s result, or None on SIGINT/SIGTERM (the progress bar is closed properly)."""
    task = asyncio.ensure_future(aw)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(SyncCommandSettings, "sync")
    return asyncio.run(run(settings, args.account_id, full=args.full, wait=args.wait))
