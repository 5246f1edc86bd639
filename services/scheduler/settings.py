"""Settings of ``sync-airbnb scheduler``."""

from __future__ import annotations

import datetime as dt
import os
import socket

from cronsim import CronSim, CronSimError
from pydantic import AliasChoices, Field, field_validator

from services.scheduler.plan import parse_interval
from shared import topology
from shared.airbnb.windows import WindowSettings
from shared.settings import (
    DatabaseSettings,
    HttpListenerSettings,
    NatsSettings,
    WindowSettingsMixin,
)


def validate_cron(expr: str) -> str:
    """Raise ValueError unless ``expr`` is a cron expression the scheduler can follow.

    The leader's loop asks cronsim for the next fire only when it first sleeps, so a
    typo would surface late and in the leader alone; one tick here is the same check.
    """
    try:
        next(CronSim(expr, dt.datetime.now(dt.UTC)))
    except (CronSimError, ValueError, StopIteration) as exc:
        raise ValueError(
            f"is not a valid cron expression ({exc}); expected 5 fields "
            "'min hour day month weekday' (or 6 with seconds first), e.g. '0 5 * * *'"
        ) from None
    return expr


class SchedulerSettings(DatabaseSettings, NatsSettings, HttpListenerSettings, WindowSettingsMixin):
    # Evaluated in UTC, whatever the host's time zone.
    schedule_cron: str = Field(default="0 5 * * *", validation_alias="SCHEDULE_CRON")
    # Accounts per INSERT and per publish batch in a fan-out: big enough to amortise a
    # round trip, small enough that a chunk's publishes overlap the next chunk's INSERT.
    scheduler_chunk_size: int = Field(
        default=5_000, ge=1, le=50_000, validation_alias="SCHEDULER_CHUNK_SIZE"
    )
    # How long to wait for JetStream to acknowledge the publishes of one fan-out.
    scheduler_publish_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="SCHEDULER_PUBLISH_TIMEOUT_S"
    )

    # Logged by the leader and kept in airbnb.scheduler_runs: which replica ran a day.
    scheduler_name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        min_length=1,
        max_length=200,
        validation_alias="SCHEDULER_NAME",
    )
    # One replica leads the daily run, holding a PostgreSQL advisory lock on a connection
    # of its own. A standby tries for it every third of this, and the leader checks it
    # still holds it as often; PostgreSQL ends a leader's session that is silent for
    # this long (hung, cut off), which frees the lock. A leader killed outright frees
    # it at once (its connection closes), so a standby leads within a third of this.
    scheduler_lease_s: float = Field(
        default=15.0, ge=1, le=600, validation_alias="SCHEDULER_LEASE_S"
    )

    # Retention, applied by the leader (services/scheduler/retention.py) in small batches.
    # Final jobs with their listings, after this many days (queued/running ones never).
    retention_jobs_days: int = Field(default=400, ge=1, validation_alias="RETENTION_JOBS_DAYS")
    # The exactly-once ledger: it must outlive the results stream's max_age, or a replay
    # of the stream would write batches a second time.
    retention_ledger_days: int = Field(default=30, ge=1, validation_alias="RETENTION_LEDGER_DAYS")
    # The metrics on plain PostgreSQL, as TimescaleDB's retention policy does it (one
    # setting for both unless RETENTION_METRICS is given).
    retention_metrics: str = Field(
        default="5 years",
        validation_alias=AliasChoices(
            "RETENTION_METRICS", "TIMESCALE_RETENTION", "TIMESCALE_DROP_AFTER"
        ),
    )
    retention_batch_size: int = Field(
        default=5_000, ge=1, le=100_000, validation_alias="RETENTION_BATCH_SIZE"
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, validation_alias="RETENTION_INTERVAL_S"
    )

    @field_validator("retention_ledger_days")
    @classmethod
    def _ledger_outlives_stream(cls, v: int) -> int:
        stream_days = (topology.SYNC_RESULTS_STREAM.max_age or 0) / 86_400
        if v <= stream_days:
            raise ValueError(
                f"must be more than the {topology.SYNC_RESULTS_STREAM.name} stream's max_age "
                f"({stream_days:g} days): a replay of the stream would otherwise write "
                "batches whose ledger rows are gone a second time"
            )
        return v

    @field_validator("retention_metrics")
    @classmethod
    def _interval(cls, v: str) -> str:
        parse_interval(v)
        return v.strip()

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return validate_cron(v.strip())

    def window_settings(self) -> WindowSettings:
        return WindowSettings(
            first_run_weeks_back=self.first_run_weeks_back,
            incremental_weeks_back=self.incremental_weeks_back,
            weeks_ahead=self.weeks_ahead,
        )
