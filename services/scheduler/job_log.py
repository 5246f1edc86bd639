"""The log lines of the jobs the scheduler creates: one per job, or one per chunk of a
daily fan-out (a line per job was a third of a large run's CPU)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.scheduler.plan import (
    JobPlan,
)

log = logging.getLogger("sync_airbnb.scheduler")


def log_job_queued(plan: JobPlan, level: int = logging.INFO) -> None:
    """The one log line of a job's creation (it is born queued)."""
    log.log(
        level,
        "sync job queued",
        extra={
            "job_id": str(plan.job_id),
            "account_id": plan.account_id,
            "status": "queued",
            "kind": plan.kind,
            "trigger": plan.trigger,
            "scrape_day": plan.scrape_day.isoformat(),
            "window_start": plan.window_start.isoformat(),
            "window_end": plan.window_end.isoformat(),
            "dedup_key": plan.dedup_key,
        },
    )


def log_jobs_queued(plans: Sequence[JobPlan]) -> None:
    """A fan-out's jobs: one INFO line per chunk, the line of each job at DEBUG.

    A line per job was over a third of a 100,000-account daily run's CPU (py-spy,
    benchmarks/bench_scheduler.py); the jobs themselves are rows in ``sync_jobs``.
    """
    if not plans:
        return
    if log.isEnabledFor(logging.DEBUG):
        for plan in plans:
            log_job_queued(plan, logging.DEBUG)
    first = plans[0]
    kinds: dict[str, int] = {}
    for plan in plans:
        kinds[plan.kind] = kinds.get(plan.kind, 0) + 1
    log.info(
        "sync jobs queued",
        extra={
            "jobs": len(plans),
            "kinds": kinds,
            "status": "queued",
            "trigger": first.trigger,
            "scrape_day": first.scrape_day.isoformat(),
            "first_account_id": first.account_id,
            "last_account_id": plans[-1].account_id,
        },
    )
