"""What the admin answers for a durable sync trigger (services/admin/syncs.py): pure."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from services.admin.syncs import handled_trigger, pending_trigger, trigger_links
from shared import topology, wire
from shared.messages import SyncTriggered, encode

TID = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
JOB = uuid.UUID("00000000-0000-4000-8000-0000000000bb")
AT = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
TRIGGER = SyncTriggered(trigger_id=TID, account_id="42", full=True, requested_at=AT)


def row(**over: Any) -> Any:
    # asyncpg's Record reads by key like a dict
    base = {
        "trigger_id": TID,
        "account_id": "42",
        "full_sync": True,
        "requested_at": AT,
        "handled_at": AT + dt.timedelta(seconds=20),
        "job_id": JOB,
        "error": None,
        "detail": None,
        "job_status": "running",
    }
    return {**base, **over}


def test_a_pending_trigger_links_to_itself_only() -> None:
    out = pending_trigger(TRIGGER)
    assert (out.status, out.job_id, out.handled_at) == ("pending", None, None)
    assert (out.account_id, out.full, out.requested_at) == ("42", True, AT)
    assert out.links == trigger_links(TID, None)
    assert out.links.trigger == f"/api/v1/triggers/{TID}" and out.links.job is None


def test_a_handled_trigger_shows_its_jobs_status_now() -> None:
    out = handled_trigger(row())
    assert (out.status, out.job_id, out.error) == ("running", JOB, None)
    assert out.links.job == f"/api/v1/syncs/{JOB}"
    # the job row not there (yet): the scheduler queued it
    assert handled_trigger(row(job_status=None)).status == "queued"


def test_a_refused_trigger_says_why_and_has_no_job() -> None:
    out = handled_trigger(row(job_id=None, job_status=None, error="inactive", detail="off."))
    assert (out.status, out.error, out.detail, out.job_id) == ("refused", "inactive", "off.", None)
    assert out.links.job is None


def test_a_trigger_travels_on_its_own_subject() -> None:
    subject = topology.sync_trigger_subject(TID)
    assert wire.decode_on(subject, encode(TRIGGER)) == TRIGGER
    assert topology.sync_trigger_msg_id(TID) == f"trigger:{TID}"
    assert topology.SCHEDULER_TRIGGERS in topology.CONSUMERS
    assert topology.SYNC_TRIGGERS_STREAM in topology.STREAMS
