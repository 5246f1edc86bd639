"""Retention's plan (services/scheduler/plan.py) and its settings: which tables, what cutoff."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from services.scheduler.plan import (
    metrics_pass_due,
    parse_interval,
    retention_plan,
    subtract_interval,
)
from services.scheduler.settings import SchedulerSettings

NOW = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
ENV = {"DATABASE_URL": "postgresql://u@localhost/db", "NATS_URL": "nats://localhost:4222"}


def settings(**env: str) -> SchedulerSettings:
    return SchedulerSettings(**{**ENV, **env})  # type: ignore[arg-type]


def test_the_bookkeeping_always_and_the_plain_metrics_tables_given() -> None:
    targets = retention_plan(
        NOW,
        jobs_days=400,
        ledger_days=30,
        metrics_retention="5 years",
        batch=5_000,
        metrics_tables=["airbnb.list_of_metrics", "airbnb.chart_query"],
    )
    got = [(t.table, t.cutoff, t.batch, t.final_jobs_only) for t in targets]
    assert got == [
        ("airbnb.sync_committed_chunks", NOW - dt.timedelta(days=30), 5_000, False),
        ("airbnb.sync_jobs", NOW - dt.timedelta(days=400), 500, True),
        ("airbnb.chart_query", NOW.replace(year=2021), 5_000, False),
        ("airbnb.list_of_metrics", NOW.replace(year=2021), 5_000, False),
    ]


def test_no_metrics_table_where_timescaledb_has_them_all() -> None:
    targets = retention_plan(
        NOW, jobs_days=400, ledger_days=30, metrics_retention="5 years", batch=1
    )
    assert [t.table for t in targets] == ["airbnb.sync_committed_chunks", "airbnb.sync_jobs"]
    assert targets[1].batch == 1  # never a batch of none


@pytest.mark.parametrize(
    ("text", "cutoff"),
    [
        ("5 years", dt.datetime(2021, 12, 1, 18, tzinfo=dt.UTC)),
        ("1 year", dt.datetime(2025, 12, 1, 18, tzinfo=dt.UTC)),
        ("18 months", dt.datetime(2025, 6, 1, 18, tzinfo=dt.UTC)),
        ("11 months", dt.datetime(2026, 1, 1, 18, tzinfo=dt.UTC)),
        ("2 weeks", dt.datetime(2026, 11, 17, 18, tzinfo=dt.UTC)),
        (" 90 DAYS ", dt.datetime(2026, 9, 2, 18, tzinfo=dt.UTC)),
    ],
)
def test_intervals_as_postgresql_counts_them(text: str, cutoff: dt.datetime) -> None:
    assert subtract_interval(NOW, text) == cutoff


def test_month_ends_and_leap_days_clamp() -> None:
    assert subtract_interval(dt.datetime(2028, 2, 29, tzinfo=dt.UTC), "1 year") == dt.datetime(
        2027, 2, 28, tzinfo=dt.UTC
    )
    assert subtract_interval(dt.datetime(2026, 3, 31, tzinfo=dt.UTC), "1 month") == dt.datetime(
        2026, 2, 28, tzinfo=dt.UTC
    )
    assert subtract_interval(dt.datetime(2026, 1, 15, tzinfo=dt.UTC), "1 month") == dt.datetime(
        2025, 12, 15, tzinfo=dt.UTC
    )


@pytest.mark.parametrize("text", ["forever", "0 days", "5", "years", "1 decade", "-1 year", ""])
def test_intervals_that_are_not_one(text: str) -> None:
    with pytest.raises(ValueError, match="not a retention interval"):
        parse_interval(text)


def test_the_metrics_pass_runs_once_a_day() -> None:
    assert metrics_pass_due(None, NOW)
    assert not metrics_pass_due(NOW - dt.timedelta(hours=23), NOW)
    assert metrics_pass_due(NOW - dt.timedelta(days=1), NOW)


def test_settings_defaults() -> None:
    s = settings()
    assert (s.retention_jobs_days, s.retention_ledger_days, s.retention_metrics) == (
        400,
        30,
        "5 years",
    )
    assert (s.retention_batch_size, s.retention_interval_s) == (5_000, 3600.0)


def test_the_metrics_window_follows_timescaledb_unless_given() -> None:
    assert settings(TIMESCALE_RETENTION="3 years").retention_metrics == "3 years"
    given = settings(TIMESCALE_RETENTION="3 years", RETENTION_METRICS="2 years")
    assert given.retention_metrics == "2 years"


@pytest.mark.parametrize("days", ["1", "7"])
def test_a_ledger_no_longer_than_the_results_stream_is_refused(days: str) -> None:
    with pytest.raises(ValidationError, match="AIRBNB_SYNC_RESULTS stream's max_age"):
        settings(RETENTION_LEDGER_DAYS=days)
    assert settings(RETENTION_LEDGER_DAYS="8").retention_ledger_days == 8


def test_a_bad_metrics_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a retention interval"):
        settings(RETENTION_METRICS="forever")
