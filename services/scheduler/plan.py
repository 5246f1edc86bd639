"""The scheduler's decisions, as pure functions: which job an account gets, under which key.

Nothing here touches PostgreSQL, NATS or a clock: callers pass ``today`` (the scrape
day, from ``settings.today()``), ``now`` and the rows they read, and get back plans
that the shell (``fanout.py``, ``triggers.py``) inserts and publishes. The dedup rules
are those of docs/data-path.md:

* one job per account, scrape day and kind: ``dedup_key = "{account}:{day}:{kind}"``,
  inserted with ``ON CONFLICT DO NOTHING``, so two schedulers, a restart or a double
  click all land on the same row, and the same ``Nats-Msg-Id``;
* a manual trigger (or an account event, see :func:`event_wants_backfill`) whose
  day's latest attempt ended ``failed`` or ``partial`` gets a new attempt, keyed
  ``"{dedup_key}:retry-N"``; N is derived from the attempts that exist, so two
  racing clicks compute the same key and still create one job.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cronsim import CronSim

from shared.airbnb.windows import DateRange, WindowSettings, sync_window
from shared.messages import (
    AccountEvent,
    EncryptedCredentials,
    JobStatus,
    SyncKind,
    SyncRequest,
    SyncTriggerReply,
    SyncTriggerSource,
    to_json,
)

# The admin's rule (services/admin/models.py): Airbnb's ids have no leading zero.
ACCOUNT_ID_RE = re.compile(r"^[1-9][0-9]{0,31}$")
RETRYABLE: frozenset[str] = frozenset({"failed", "partial"})
_RETRY_RE = re.compile(r":retry-([0-9]+)$")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Account:
    """What the scheduler reads of an account (the cookie only as its Fernet token)."""

    account_id: str
    cookie_token: str
    x_client_version: str
    user_agent: str
    is_active: bool = True
    deleted: bool = False
    credentials_invalid: bool = False
    never_synced: bool = True
    # accounts.credentials_version the token was read at; the request carries it so that
    # a rotation the fetcher saves back applies only while it is still current.
    credentials_version: int = 1

    @property
    def credentials(self) -> EncryptedCredentials:
        return EncryptedCredentials(
            cookie_token=self.cookie_token,
            x_client_version=self.x_client_version,
            user_agent=self.user_agent,
            version=self.credentials_version,
        )


@dataclass(frozen=True, slots=True)
class JobPlan:
    """One ``sync_jobs`` row and the ``SyncRequest`` that goes with it."""

    job_id: uuid.UUID
    account_id: str
    kind: SyncKind
    trigger: SyncTriggerSource
    dedup_key: str
    scrape_day: dt.date
    window_start: dt.date
    window_end: dt.date
    credentials: EncryptedCredentials
    requested_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ExistingJob:
    """An attempt already in ``sync_jobs`` for one account, scrape day and kind."""

    job_id: uuid.UUID
    dedup_key: str
    status: JobStatus
    kind: SyncKind
    trigger: SyncTriggerSource
    scrape_day: dt.date
    window_start: dt.date
    window_end: dt.date
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Refusal:
    error: str
    detail: str

    def reply(self) -> SyncTriggerReply:
        return SyncTriggerReply(error=self.error, detail=self.detail)


# --- keys and kinds -------------------------------------------------------------------------


def sync_kind(*, full_requested: bool, never_synced: bool) -> SyncKind:
    """'full' when asked for, or when the account never synced (its first-run backfill)."""
    return "full" if full_requested or never_synced else "incremental"


def dedup_key(account_id: str, scrape_day: dt.date, kind: SyncKind) -> str:
    return f"{account_id}:{scrape_day.isoformat()}:{kind}"


def retry_key(base_key: str, attempt: int) -> str:
    return f"{base_key}:retry-{attempt}"


def attempt_number(key: str) -> int:
    """0 for the first attempt (the bare dedup key), N for ``...:retry-N``."""
    m = _RETRY_RE.search(key)
    return int(m.group(1)) if m else 0


def choose_attempt(
    base_key: str, attempts: Iterable[ExistingJob], *, allow_retry: bool
) -> ExistingJob | str:
    """The job to reuse, or the dedup key of the attempt to create.

    The latest attempt is reused unless it ended failed/partial and a retry is
    allowed; then the next ``:retry-N`` key is returned.
    """
    mine = [
        a
        for a in attempts
        if a.dedup_key == base_key or a.dedup_key.startswith(f"{base_key}:retry-")
    ]
    if not mine:
        return base_key
    latest = max(mine, key=lambda a: attempt_number(a.dedup_key))
    if allow_retry and latest.status in RETRYABLE:
        return retry_key(base_key, attempt_number(latest.dedup_key) + 1)
    return latest


# --- who may be synced ----------------------------------------------------------------------


def refusal(account: Account | None, account_id: str) -> Refusal | None:
    """Why ``account`` gets no sync now, or None when it may be synced.

    The order matters for the operator: a deleted account is 'deleted' even if it
    was also inactive, and credentials only matter for an account we would sync.
    """
    if account is None:
        return Refusal("not_found", f"No account {account_id} exists.")
    if account.deleted:
        return Refusal("deleted", f"Account {account_id} is deleted; restore it before syncing it.")
    if not account.is_active:
        return Refusal(
            "inactive", f"Account {account_id} is inactive; activate it before syncing it."
        )
    if account.credentials_invalid:
        return Refusal(
            "needs_credentials",
            f"Airbnb rejected the credentials of account {account_id}; "
            "update its cookie before syncing it.",
        )
    return None


def invalid_request(detail: str) -> SyncTriggerReply:
    return SyncTriggerReply(error="invalid_request", detail=detail)


def check_account_id(account_id: str) -> SyncTriggerReply | None:
    if ACCOUNT_ID_RE.fullmatch(account_id):
        return None
    return invalid_request("account_id must be 1 to 32 digits, not starting with 0.")


def event_wants_backfill(event: AccountEvent, *, never_synced: bool) -> bool:
    """Whether an account event makes the account 'appear' and earn a backfill now.

    created/restored: it appeared. updated: only when it can newly be synced
    (credentials changed after Airbnb rejected them, reactivated) or never was.
    """
    if event.event in ("created", "restored"):
        return True
    if event.event == "updated":
        return event.credentials_changed or event.reactivated or never_synced
    return False


# --- plans ------------------------------------------------------------------------------------

# A version 4 UUID is 122 random bits: these clear the 6 others and set them (RFC 4122).
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)
_IDS_PER_DRAW = 1024


def _random_uuids() -> Iterator[uuid.UUID]:
    """Version 4 UUIDs as ``uuid.uuid4`` makes them, 1,024 from one ``os.urandom``.

    ``uuid4`` is one ``os.urandom(16)`` (a system call) and one ``UUID(bytes=...,
    version=4)`` per id, 2.0 µs; one draw per 1,024 ids and ``UUID(int=...)``, 1.2 µs,
    for one id per job of the daily fan-out (benchmarks/RESULTS.md, issue 17 item 3).
    """
    while True:
        raw = os.urandom(16 * _IDS_PER_DRAW)
        for i in range(0, len(raw), 16):
            yield uuid.UUID(int=(int.from_bytes(raw[i : i + 16]) & _V4_CLEAR) | _V4_SET)


_job_ids = _random_uuids()


def _new_draw_after_fork() -> None:
    # A forked child must not hand out the ids left in its parent's draw.
    global _job_ids
    _job_ids = _random_uuids()


os.register_at_fork(after_in_child=_new_draw_after_fork)


def new_job_id() -> uuid.UUID:
    """A random (version 4) UUID for a new job."""
    return next(_job_ids)


@dataclass(frozen=True, slots=True)
class Windows:
    """The two windows of one scrape day, computed once per fan-out, not per account."""

    full: DateRange
    incremental: DateRange

    @classmethod
    def for_day(cls, today: dt.date, settings: WindowSettings) -> Windows:
        return cls(
            full=sync_window(today, first_run=True, settings=settings),
            incremental=sync_window(today, first_run=False, settings=settings),
        )

    def of(self, kind: SyncKind) -> DateRange:
        return self.full if kind == "full" else self.incremental


def plan_job(
    account: Account,
    *,
    kind: SyncKind,
    trigger: SyncTriggerSource,
    scrape_day: dt.date,
    windows: Windows,
    now: dt.datetime,
    key: str | None = None,
    new_id: Callable[[], uuid.UUID] = new_job_id,
) -> JobPlan:
    window = windows.of(kind)
    return JobPlan(
        job_id=new_id(),
        account_id=account.account_id,
        kind=kind,
        trigger=trigger,
        dedup_key=key or dedup_key(account.account_id, scrape_day, kind),
        scrape_day=scrape_day,
        window_start=window.start,
        window_end=window.end,
        credentials=account.credentials,
        requested_at=now,
    )


def plan_jobs(
    accounts: Iterable[Account],
    *,
    trigger: SyncTriggerSource,
    scrape_day: dt.date,
    windows: Windows,
    now: dt.datetime,
    full: bool = False,
    new_id: Callable[[], uuid.UUID] = new_job_id,
) -> list[JobPlan]:
    """One plan per account, sorted by dedup key.

    The order matters: two schedulers inserting the same keys in the same order
    wait for each other on the unique index instead of deadlocking.
    """
    plans = [
        plan_job(
            a,
            kind=sync_kind(full_requested=full, never_synced=a.never_synced),
            trigger=trigger,
            scrape_day=scrape_day,
            windows=windows,
            now=now,
            new_id=new_id,
        )
        for a in accounts
    ]
    plans.sort(key=lambda p: p.dedup_key)
    return plans


def in_key_order(
    accounts: Iterable[Account], *, scrape_day: dt.date, full: bool = False
) -> list[Account]:
    """``accounts`` in the order of their jobs' dedup keys: the order :func:`plan_jobs`
    gives, known before planning, so that a fan-out can plan chunk by chunk."""
    return sorted(
        accounts,
        key=lambda a: dedup_key(
            a.account_id,
            scrape_day,
            sync_kind(full_requested=full, never_synced=a.never_synced),
        ),
    )


def plan_from_existing(
    job: ExistingJob, account_id: str, credentials: EncryptedCredentials
) -> JobPlan:
    """The plan of a job that already exists, to publish its request (again).

    ``requested_at`` is the job's creation time, so a re-publish is the same message.
    """
    return JobPlan(
        job_id=job.job_id,
        account_id=account_id,
        kind=job.kind,
        trigger=job.trigger,
        dedup_key=job.dedup_key,
        scrape_day=job.scrape_day,
        window_start=job.window_start,
        window_end=job.window_end,
        credentials=credentials,
        requested_at=job.created_at,
    )


def _request_fields(plan: JobPlan) -> dict[str, object]:
    """The plan's ``SyncRequest`` fields, in the model's order (the order they are
    written in)."""
    return {
        "job_id": plan.job_id,
        "account_id": plan.account_id,
        "kind": plan.kind,
        "trigger": plan.trigger,
        "scrape_day": plan.scrape_day,
        "window_start": plan.window_start,
        "window_end": plan.window_end,
        "credentials": plan.credentials,
        "requested_at": plan.requested_at,
    }


def sync_request(plan: JobPlan) -> SyncRequest:
    return SyncRequest.model_validate(_request_fields(plan))


def sync_request_body(plan: JobPlan) -> bytes:
    """``encode(sync_request(plan))``, the same bytes, without building the model.

    Every field of a plan is typed and was checked when it was made (its credentials
    are an ``EncryptedCredentials`` already), so validating them again per request
    only cost time: building the ``SyncRequest`` and encoding it was 8 µs a job, a
    seventh of the daily fan-out's CPU; the fields as a dict, written by the same
    ``to_json``, cost under 1 µs. tests/unit/test_scheduler_plan.py holds the bytes
    equal and the fields those of the model.
    """
    return to_json(_request_fields(plan))


def chunked(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- the daily run: when it is due, and the one leader that runs it ---------------------------


@dataclass(frozen=True, slots=True)
class DailyRun:
    """A row of ``airbnb.scheduler_runs``: the daily run of one scrape day, begun or done."""

    scrape_day: dt.date
    leader: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    attempts: int = 1

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def todays_run_time(cron: str, now: dt.datetime) -> dt.datetime | None:
    """When ``cron`` (UTC) fires first on ``now``'s date, or None if not that day."""
    midnight = dt.datetime.combine(now.date(), dt.time(0), dt.UTC)
    # CronSim yields the fires strictly after its start: one microsecond before midnight
    # lets a cron that fires at 00:00:00 count for this day.
    first = next(CronSim(cron, midnight - dt.timedelta(microseconds=1)), None)
    return first if first is not None and first.date() == now.date() else None


def run_is_due(cron: str, now: dt.datetime, run: DailyRun | None) -> bool:
    """Whether the leader must run (or resume) the day's fan-out now.

    A run that finished is never repeated; one that began and never finished (its
    leader died mid-fan-out) is resumed at once, whatever the time; with no run yet,
    it is due once the day's scheduled time has passed, so a scheduler that was down
    at 05:00 and starts at 09:00 catches up, and one that starts at 04:00 waits.
    """
    if run is not None:
        return not run.finished
    at = todays_run_time(cron, now)
    return at is not None and at <= now


def seconds_to_next_fire(cron: str, now: dt.datetime, *, cap_s: float) -> float:
    """How long the leader sleeps before it looks again: until the next fire, at most
    ``cap_s`` (so a wall clock that jumps is noticed within that)."""
    fire = next(CronSim(cron, now), None)
    if fire is None:
        return cap_s
    return max(0.0, min(cap_s, (fire - now).total_seconds()))


def unschedulable_reason(account: Account) -> str | None:
    """Why a queued job of ``account`` can never run, as its ``sync_jobs.error``.

    Same order as :func:`refusal`: deleted wins over inactive, credentials come last.
    """
    if account.deleted:
        return "account deleted"
    if not account.is_active:
        return "account inactive"
    if account.credentials_invalid:
        return "credentials invalid"
    return None


# --- retention ----------------------------------------------------------------------------

# A job in one of these states never changes again; queued and running jobs are never
# deleted, however old (the writer and the fetcher still act on them).
FINAL_JOB_STATUSES: tuple[JobStatus, ...] = ("succeeded", "partial", "failed")
# A job's listings go with it (ON DELETE CASCADE): a few to a few dozen rows each, so a
# statement deletes a tenth as many jobs as it would ledger or metrics rows.
JOBS_PER_ROW_BATCH = 10
# On plain PostgreSQL a metrics pass with nothing to delete reads each table whole (no
# index on ``time``): once a day is enough for a window counted in years.
METRICS_PASS_EVERY = dt.timedelta(days=1)

_INTERVAL_RE = re.compile(r"^\s*([0-9]{1,4})\s*(day|week|month|year)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RetentionTarget:
    """One table's retention: its rows whose ``age_column`` is before ``cutoff`` go,
    ``batch`` rows per DELETE (each in its own transaction)."""

    table: str
    age_column: str
    cutoff: dt.datetime
    batch: int
    final_jobs_only: bool = False


def parse_interval(text: str) -> tuple[int, str]:
    """``"5 years"`` as ``(5, "year")``; ValueError for what PostgreSQL and this do not
    both read the same way (one number and one of day, week, month, year)."""
    m = _INTERVAL_RE.match(text)
    if m is None or int(m.group(1)) < 1:
        raise ValueError(
            f"{text!r} is not a retention interval; expected a positive number and one of "
            "days, weeks, months, years, e.g. '5 years'"
        )
    return int(m.group(1)), m.group(2).lower()


def subtract_interval(now: dt.datetime, text: str) -> dt.datetime:
    """``now`` minus an interval of :func:`parse_interval`, calendar months as PostgreSQL
    counts them (29 February minus a year is 28 February)."""
    n, unit = parse_interval(text)
    if unit == "day":
        return now - dt.timedelta(days=n)
    if unit == "week":
        return now - dt.timedelta(weeks=n)
    months = n * 12 if unit == "year" else n
    total = now.year * 12 + (now.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    next_month = dt.date(year + month // 12, month % 12 + 1, 1)
    last_day = (next_month - dt.timedelta(days=1)).day
    return now.replace(year=year, month=month, day=min(now.day, last_day))


def metrics_pass_due(last: dt.datetime | None, now: dt.datetime) -> bool:
    return last is None or now - last >= METRICS_PASS_EVERY


def retention_plan(
    now: dt.datetime,
    *,
    jobs_days: int,
    ledger_days: int,
    metrics_retention: str,
    batch: int,
    metrics_tables: Iterable[str] = (),
) -> list[RetentionTarget]:
    """What to delete now: final jobs (and their listings) older than ``jobs_days``,
    ledger rows older than ``ledger_days``, and rows of ``metrics_tables`` (the plain
    ones: where TimescaleDB is used its retention policy drops chunks) older than
    ``metrics_retention``. Ledger first: it is the biggest of the bookkeeping."""
    targets = [
        RetentionTarget(
            "airbnb.sync_committed_chunks",
            "committed_at",
            now - dt.timedelta(days=ledger_days),
            batch,
        ),
        RetentionTarget(
            "airbnb.sync_jobs",
            # end_queued_jobs sets no finished_at; its update did end the job.
            "coalesce(finished_at, updated_at)",
            now - dt.timedelta(days=jobs_days),
            max(1, batch // JOBS_PER_ROW_BATCH),
            final_jobs_only=True,
        ),
    ]
    metrics_cutoff = subtract_interval(now, metrics_retention)
    for table in sorted(metrics_tables):
        targets.append(RetentionTarget(table, "time", metrics_cutoff, batch))
    return targets
