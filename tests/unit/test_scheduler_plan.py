"""The scheduler's pure decisions: kinds, dedup keys, retries, refusals, plans, when the
daily run is due, settings."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid

import orjson
import pytest
from pydantic import ValidationError

from services.scheduler.leader import application_name, holder_name
from services.scheduler.plan import (
    Account,
    DailyRun,
    ExistingJob,
    Windows,
    attempt_number,
    check_account_id,
    choose_attempt,
    chunked,
    dedup_key,
    event_wants_backfill,
    in_key_order,
    new_job_id,
    plan_from_existing,
    plan_jobs,
    refusal,
    retry_key,
    run_is_due,
    seconds_to_next_fire,
    sync_kind,
    sync_request,
    sync_request_body,
    todays_run_time,
    unschedulable_reason,
)
from services.scheduler.settings import SchedulerSettings, validate_cron
from shared.airbnb.windows import WindowSettings
from shared.messages import AccountEvent, SyncRequest, decode, encode

TODAY = dt.date(2025, 7, 11)  # a Friday
NOW = dt.datetime(2025, 7, 11, 5, 0, tzinfo=dt.UTC)
WINDOWS = Windows.for_day(TODAY, WindowSettings())


def account(account_id: str = "42", **kw: object) -> Account:
    fields: dict[str, object] = {
        "cookie_token": "gAAAA-token",
        "x_client_version": "v1",
        "user_agent": "ua",
        **kw,
    }
    return Account(account_id=account_id, **fields)  # type: ignore[arg-type]


def job(key: str, status: str) -> ExistingJob:
    return ExistingJob(
        job_id=uuid.uuid4(),
        dedup_key=key,
        status=status,  # type: ignore[arg-type]
        kind="incremental",
        trigger="manual",
        scrape_day=TODAY,
        window_start=WINDOWS.incremental.start,
        window_end=WINDOWS.incremental.end,
        created_at=NOW,
    )


def test_kind_is_full_when_asked_or_never_synced() -> None:
    assert sync_kind(full_requested=False, never_synced=True) == "full"
    assert sync_kind(full_requested=True, never_synced=False) == "full"
    assert sync_kind(full_requested=False, never_synced=False) == "incremental"


def test_dedup_key_names_account_day_and_kind() -> None:
    assert dedup_key("42", TODAY, "full") == "42:2025-07-11:full"
    assert dedup_key("42", TODAY, "incremental") != dedup_key("42", TODAY, "full")
    assert retry_key("42:2025-07-11:full", 2) == "42:2025-07-11:full:retry-2"
    assert attempt_number("42:2025-07-11:full") == 0
    assert attempt_number("42:2025-07-11:full:retry-12") == 12


def test_windows_first_run_goes_25_weeks_back_later_runs_one() -> None:
    # Sunday on or before 2025-07-11 is 2025-07-06; Saturday on or after is 2025-07-12.
    assert WINDOWS.full.start == dt.date(2025, 7, 6) - dt.timedelta(weeks=25)
    assert WINDOWS.incremental.start == dt.date(2025, 6, 29)
    assert WINDOWS.full.end == WINDOWS.incremental.end == dt.date(2025, 8, 16)
    custom = Windows.for_day(TODAY, WindowSettings(first_run_weeks_back=2, weeks_ahead=0))
    assert custom.full == custom.of("full")
    assert custom.full.start == dt.date(2025, 6, 22)
    assert custom.full.end == dt.date(2025, 7, 12)


class TestChooseAttempt:
    base = "42:2025-07-11:incremental"

    def test_no_job_yet_creates_the_first_attempt(self) -> None:
        assert choose_attempt(self.base, [], allow_retry=True) == self.base

    @pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
    def test_a_live_or_good_job_is_reused(self, status: str) -> None:
        existing = job(self.base, status)
        assert choose_attempt(self.base, [existing], allow_retry=True) is existing

    @pytest.mark.parametrize("status", ["failed", "partial"])
    def test_a_failed_day_gets_a_new_attempt_only_when_retry_is_allowed(self, status: str) -> None:
        existing = job(self.base, status)
        assert choose_attempt(self.base, [existing], allow_retry=True) == f"{self.base}:retry-1"
        # the daily run never retries on its own: one sync per account and day
        assert choose_attempt(self.base, [existing], allow_retry=False) is existing

    def test_the_latest_attempt_decides(self) -> None:
        attempts = [
            job(f"{self.base}:retry-2", "failed"),
            job(self.base, "failed"),
            job(f"{self.base}:retry-1", "partial"),
        ]
        assert choose_attempt(self.base, attempts, allow_retry=True) == f"{self.base}:retry-3"
        running = job(f"{self.base}:retry-3", "running")
        assert choose_attempt(self.base, [*attempts, running], allow_retry=True) is running

    def test_racing_clicks_compute_the_same_key(self) -> None:
        attempts = [job(self.base, "failed")]
        keys = {choose_attempt(self.base, attempts, allow_retry=True) for _ in range(5)}
        assert keys == {f"{self.base}:retry-1"}

    def test_jobs_of_other_keys_are_ignored(self) -> None:
        other = job("42:2025-07-11:full", "failed")
        assert choose_attempt(self.base, [other], allow_retry=True) == self.base


class TestRefusal:
    def test_unknown(self) -> None:
        r = refusal(None, "7")
        assert r is not None and r.error == "not_found" and "7" in r.detail

    def test_deleted_wins_over_inactive(self) -> None:
        r = refusal(account(deleted=True, is_active=False), "42")
        assert r is not None and r.error == "deleted"

    def test_inactive(self) -> None:
        r = refusal(account(is_active=False), "42")
        assert r is not None and r.error == "inactive"

    def test_marked_credentials(self) -> None:
        r = refusal(account(credentials_invalid=True), "42")
        assert r is not None and r.error == "needs_credentials"
        assert "gAAAA" not in r.detail

    def test_schedulable(self) -> None:
        assert refusal(account(), "42") is None

    def test_reply_carries_error_and_sentence(self) -> None:
        r = refusal(None, "7")
        assert r is not None
        reply = r.reply()
        assert reply.job_id is None and reply.error == "not_found" and reply.detail


@pytest.mark.parametrize(
    ("account_id", "ok"),
    [
        ("42", True),
        ("7", True),
        ("9" * 32, True),
        ("", False),
        ("4x2", False),
        ("9" * 33, False),
        # Airbnb's ids have no leading zero: "0007" would be a second account of host 7.
        ("0007", False),
        ("0" * 32, False),
        ("0", False),
    ],
)
def test_account_id_must_be_digits(account_id: str, ok: bool) -> None:
    reply = check_account_id(account_id)
    assert (reply is None) == ok
    if reply:
        assert reply.error == "invalid_request"


@pytest.mark.parametrize(
    ("event", "changes", "never_synced", "expected"),
    [
        ("created", {}, True, True),
        ("restored", {}, False, True),
        ("updated", {"credentials_changed": True}, False, True),
        ("updated", {"reactivated": True}, False, True),
        ("updated", {}, True, True),  # e.g. created inactive, now active: never synced
        ("updated", {}, False, False),  # a user-agent change of a synced account
        ("deleted", {}, True, False),
    ],
)
def test_which_events_earn_a_backfill(
    event: str, changes: dict[str, bool], never_synced: bool, expected: bool
) -> None:
    ev = AccountEvent(event=event, account_id="42", at=NOW, **changes)  # type: ignore[arg-type]
    assert event_wants_backfill(ev, never_synced=never_synced) is expected


def test_plan_jobs_picks_kind_window_and_key_per_account_sorted_by_key() -> None:
    ids = (uuid.UUID(int=i) for i in itertools.count(1))
    accounts = [account("9", never_synced=False), account("10", never_synced=True)]
    plans = plan_jobs(
        accounts,
        trigger="schedule",
        scrape_day=TODAY,
        windows=WINDOWS,
        now=NOW,
        new_id=lambda: next(ids),
    )
    assert [p.dedup_key for p in plans] == ["10:2025-07-11:full", "9:2025-07-11:incremental"]
    first, later = plans
    assert (first.kind, first.window_start, first.window_end) == (
        "full",
        WINDOWS.full.start,
        WINDOWS.full.end,
    )
    assert (later.kind, later.window_start) == ("incremental", WINDOWS.incremental.start)
    assert {p.scrape_day for p in plans} == {TODAY}
    assert {p.trigger for p in plans} == {"schedule"}
    forced = plan_jobs(
        accounts, trigger="manual", scrape_day=TODAY, windows=WINDOWS, now=NOW, full=True
    )
    assert {p.kind for p in forced} == {"full"}


def test_sync_request_carries_the_token_and_scrape_day_and_round_trips() -> None:
    (plan,) = plan_jobs([account()], trigger="manual", scrape_day=TODAY, windows=WINDOWS, now=NOW)
    msg = sync_request(plan)
    assert msg.credentials.cookie_token == "gAAAA-token"
    assert msg.scrape_day == TODAY and msg.job_id == plan.job_id
    assert decode(SyncRequest, encode(msg)) == msg


def test_a_republished_job_is_the_same_message() -> None:
    (plan,) = plan_jobs([account()], trigger="manual", scrape_day=TODAY, windows=WINDOWS, now=NOW)
    existing = ExistingJob(
        job_id=plan.job_id,
        dedup_key=plan.dedup_key,
        status="queued",
        kind=plan.kind,
        trigger=plan.trigger,
        scrape_day=plan.scrape_day,
        window_start=plan.window_start,
        window_end=plan.window_end,
        created_at=plan.requested_at,
    )
    again = plan_from_existing(existing, plan.account_id, plan.credentials)
    assert encode(sync_request(again)) == encode(sync_request(plan))


@pytest.mark.parametrize(
    "now",
    [
        NOW,
        dt.datetime(2025, 7, 11, 5, 0, 1, 123456, tzinfo=dt.UTC),
        dt.datetime(2025, 7, 11, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ],
)
def test_the_fast_request_encoding_is_the_models(now: dt.datetime) -> None:
    accounts = [
        account("42"),
        account("43", user_agent='Mozilla/5.0 "quoted" \\ ü', credentials_version=7),
    ]
    plans = plan_jobs(accounts, trigger="schedule", scrape_day=TODAY, windows=WINDOWS, now=now)
    for plan in plans:
        request = sync_request(plan)
        assert encode(request) == orjson.dumps(request.model_dump(mode="json"))
        # what the publisher sends: the model's bytes, without building the model
        assert sync_request_body(plan) == encode(request)
    # the account's credentials_version rides in the request (the fetcher's rotation names it)
    assert {p.account_id: p.credentials.version for p in plans} == {"42": 1, "43": 7}


def test_the_fast_request_encoding_takes_a_uuid_subclass() -> None:
    # asyncpg returns job ids as its own uuid.UUID subclass, which orjson does not serialise.
    class PgUUID(uuid.UUID):
        pass

    (plan,) = plan_jobs([account()], trigger="manual", scrape_day=TODAY, windows=WINDOWS, now=NOW)
    existing = ExistingJob(
        job_id=PgUUID(str(plan.job_id)),
        dedup_key=plan.dedup_key,
        status="queued",
        kind=plan.kind,
        trigger=plan.trigger,
        scrape_day=plan.scrape_day,
        window_start=plan.window_start,
        window_end=plan.window_end,
        created_at=plan.requested_at,
    )
    again = plan_from_existing(existing, plan.account_id, plan.credentials)
    assert encode(sync_request(again)) == encode(sync_request(plan))
    assert encode(sync_request(again)) == orjson.dumps(sync_request(again).model_dump(mode="json"))
    assert sync_request_body(again) == sync_request_body(plan) == encode(sync_request(plan))


def test_new_job_ids_are_random_version_4_uuids() -> None:
    # 3,000 ids: three draws of random bytes, the last one begun
    ids = [new_job_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
    assert {(u.version, u.variant) for u in ids} == {(4, uuid.RFC_4122)}
    assert all(type(u) is uuid.UUID and uuid.UUID(str(u)) == u for u in ids)
    # the 122 other bits are random: each is set in some id and clear in another
    ored = anded = ids[0].int
    for u in ids:
        ored, anded = ored | u.int, anded & u.int
    version_bits = (0xF000 << 64) | (0xC000 << 48)
    assert ored | version_bits == 2**128 - 1 and anded & ~version_bits == 0


def test_chunked() -> None:
    assert [list(c) for c in chunked([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(chunked([], 3)) == []


@pytest.mark.parametrize("expr", ["0 5 * * *", "*/2 * * * * *", "  0 5 * * MON  "])
def test_good_cron_expressions(expr: str) -> None:
    assert validate_cron(expr.strip()) == expr.strip()


@pytest.mark.parametrize("expr", ["", "every day", "61 5 * * *", "0 5 * *", "0 5 31 2 *"])
def test_bad_cron_expressions(expr: str) -> None:
    with pytest.raises(ValueError, match="not a valid cron expression"):
        validate_cron(expr)


def test_settings_default_cron_and_window_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@localhost/db")
    monkeypatch.setenv("NATS_URL", "nats://localhost:4222")
    monkeypatch.delenv("SCHEDULE_CRON", raising=False)
    monkeypatch.setenv("FIRST_RUN_WEEKS_BACK", "3")
    s = SchedulerSettings()
    assert s.schedule_cron == "0 5 * * *"
    assert s.window_settings() == WindowSettings(first_run_weeks_back=3)
    monkeypatch.setenv("SCHEDULE_CRON", "not cron")
    with pytest.raises(ValidationError, match="not a valid cron expression"):
        SchedulerSettings()


@pytest.mark.parametrize("full", [False, True])
def test_accounts_in_key_order_are_the_order_plan_jobs_gives(full: bool) -> None:
    # "123:..." sorts after "1234:..." (":" is above the digits): not account_id order.
    accounts = [
        account("1234", never_synced=False),
        account("123", never_synced=True),
        account("99", never_synced=False),
        account("1000", never_synced=True),
        account("12", never_synced=False),
    ]
    ordered = in_key_order(accounts, scrape_day=TODAY, full=full)
    plans = plan_jobs(
        accounts, trigger="schedule", scrape_day=TODAY, windows=WINDOWS, now=NOW, full=full
    )
    assert [a.account_id for a in ordered] == [p.account_id for p in plans]
    assert [a.account_id for a in ordered] != sorted(a.account_id for a in accounts)
    # Planned chunk by chunk in that order, the plans are the same, in the same order.
    chunks = [ordered[:2], ordered[2:]]
    by_chunk = [
        p
        for chunk in chunks
        for p in plan_jobs(
            chunk, trigger="schedule", scrape_day=TODAY, windows=WINDOWS, now=NOW, full=full
        )
    ]
    assert [p.dedup_key for p in by_chunk] == [p.dedup_key for p in plans]


# --- the daily run: when it is due ------------------------------------------------------------


def at(hh: int, mm: int = 0, ss: int = 0, day: dt.date = TODAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm, ss), dt.UTC)


def run(finished: bool) -> DailyRun:
    return DailyRun(
        scrape_day=TODAY,
        leader="sched-a",
        started_at=at(5),
        finished_at=at(5, 1) if finished else None,
    )


def test_todays_run_time_is_the_first_fire_of_the_day() -> None:
    assert todays_run_time("0 5 * * *", at(9)) == at(5)
    assert todays_run_time("0 5 * * *", at(4)) == at(5)
    assert todays_run_time("0 0 * * *", at(0, 0, 0)) == at(0)  # a fire at 00:00:00 counts
    assert todays_run_time("*/2 * * * * *", at(12)) == at(0)
    assert todays_run_time("30 4,16 * * *", at(20)) == at(4, 30)
    # 2025-07-11 is a Friday: a Monday-only cron has no run that day.
    assert todays_run_time("0 5 * * 1", at(9)) is None


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (at(9), True),  # down at 05:00, back at 09:00: the day's sync runs at start
        (at(5), True),  # the fire itself
        (at(23, 59, 59), True),  # still that day
        (at(4, 59, 59), False),  # before its time: the cron runs it at 05:00
        (at(0), False),
    ],
)
def test_a_day_with_no_run_is_due_once_its_time_has_passed(now: dt.datetime, due: bool) -> None:
    assert run_is_due("0 5 * * *", now, None) is due


def test_a_finished_run_is_never_repeated_and_an_unfinished_one_is_resumed() -> None:
    for now in (at(4), at(5), at(9), at(23, 59)):
        assert run_is_due("0 5 * * *", now, run(finished=True)) is False
        assert run_is_due("*/2 * * * * *", now, run(finished=True)) is False
        # Its leader died mid-fan-out: the next leader resumes it, whatever the time.
        assert run_is_due("0 5 * * *", now, run(finished=False)) is True


def test_no_catch_up_on_a_day_the_cron_does_not_run() -> None:
    assert run_is_due("0 5 * * 1", at(9), None) is False


def test_the_leader_sleeps_to_the_next_fire_or_the_cap() -> None:
    assert seconds_to_next_fire("0 5 * * *", at(4, 59, 30), cap_s=60) == 30
    assert seconds_to_next_fire("0 5 * * *", at(9), cap_s=60) == 60
    assert seconds_to_next_fire("*/2 * * * * *", at(9, 0, 1), cap_s=60) == 1


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"deleted": True, "is_active": False, "credentials_invalid": True}, "account deleted"),
        ({"is_active": False, "credentials_invalid": True}, "account inactive"),
        ({"credentials_invalid": True}, "credentials invalid"),
        ({}, None),
    ],
)
def test_why_a_queued_job_can_never_run(flags: dict[str, bool], reason: str | None) -> None:
    assert unschedulable_reason(account(**flags)) == reason


def test_the_lock_holder_is_named_by_its_application_name() -> None:
    assert holder_name(application_name("host-1:4242")) == "host-1:4242"
    assert len(application_name("x" * 100)) == 63  # what PostgreSQL keeps of it
    assert holder_name(None) is None


def test_scheduler_name_and_lease_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@localhost/db")
    monkeypatch.setenv("NATS_URL", "nats://localhost:4222")
    monkeypatch.delenv("SCHEDULER_NAME", raising=False)
    monkeypatch.delenv("SCHEDULER_LEASE_S", raising=False)
    s = SchedulerSettings()
    assert s.scheduler_name.endswith(f":{os.getpid()}")
    assert s.scheduler_lease_s == 15
    monkeypatch.setenv("SCHEDULER_NAME", "sched-a")
    monkeypatch.setenv("SCHEDULER_LEASE_S", "3")
    assert (SchedulerSettings().scheduler_name, SchedulerSettings().scheduler_lease_s) == (
        "sched-a",
        3,
    )
    monkeypatch.setenv("SCHEDULER_LEASE_S", "0.5")
    with pytest.raises(ValidationError, match="SCHEDULER_LEASE_S"):
        SchedulerSettings()
