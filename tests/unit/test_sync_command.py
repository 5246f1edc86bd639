"""``sync-airbnb sync``: merging job snapshots and the lines it prints. The command
against a running stack is in tests/system/test_sync_command.py."""

from __future__ import annotations

import uuid

from services.launcher.sync_command import JobState, merge, outcome_line, refusal_line
from shared.messages import SyncTriggerReply


def test_merge_keeps_a_final_state_and_never_goes_back() -> None:
    s = merge(JobState(), {"status": "running", "listings_total": 4, "listings_succeeded": 2})
    assert (s.status, s.listings_total, s.listings_done) == ("running", 4, 2)
    # An older snapshot (another writer's, or the database a moment behind) changes nothing.
    stale = merge(s, {"status": "queued", "listings_total": None, "listings_succeeded": 1})
    assert stale == s
    done = merge(s, {"status": "succeeded", "listings_succeeded": 4, "rows_written": 880})
    assert done.final and done.rows_written == 880
    assert merge(done, {"status": "running", "rows_written": 1}) == done


def test_lines_say_what_happened() -> None:
    job = uuid.UUID(int=1)
    failed = JobState("failed", 3, 0, 0, 0, "authentication failed: http_401")
    assert outcome_line(job, failed).endswith("; authentication failed: http_401")
    ok = JobState("succeeded", 3, 3, 0, 660)
    assert outcome_line(job, ok) == f"job {job} succeeded: 3 of 3 listings, 660 rows written"
    assert refusal_line("42", SyncTriggerReply(error="not_found")) == (
        "sync-airbnb sync: refused (not_found): account 42 does not exist"
    )
    assert "Ask again" in refusal_line("42", SyncTriggerReply(error="internal", detail="Ask again"))
