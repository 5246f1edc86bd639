"""Settings of ``sync-airbnb scheduler``."""

from __future__ import annotations

import datetime as dt
import os
import socket

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator

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
