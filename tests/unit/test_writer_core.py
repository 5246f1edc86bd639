"""The writer's functional core (services/writer/bookkeeping.py, row_codecs.py, sql.py) and
error classification."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import orjson
import pytest

from services.writer import bookkeeping, row_codecs, sql
from services.writer.consumer import classify_error, heartbeat_interval, redelivery_delay
from services.writer.store import RowEncodeError
from shared import topology
from shared.messages import (
    CredentialsRotated,
    JobEvent,
    ListingResult,
    MessageDecodeError,
    RowBatch,
    encode,
)
from shared.metric_tables import METRIC_TABLES, TableName

DAY = dt.date(2025, 7, 11)
MIDNIGHT = dt.datetime(2025, 7, 11, tzinfo=dt.UTC)
JOB = uuid.UUID("00000000-0000-0000-0000-000000000001")


def make_row(table: TableName, n: int = 0, listing: str = "L1", **overrides: Any) -> dict[str, Any]:
    """A row as the pivots build it: every column, Python dates."""
    spec = METRIC_TABLES[table]
    row: dict[str, Any] = dict.fromkeys(spec.column_names)
    row.update(
        account_id="42",
        airbnb_listing_id=listing,
        time=MIDNIGHT,
        airbnb_internal_name="Loft",
        extra_metrics={},
    )
    if table == "chart_query":
        row["metric_date"] = dt.date(2025, 1, 1) + dt.timedelta(days=n)
    else:
        row["window_start"] = dt.date(2025, 1, 5) + dt.timedelta(weeks=n)
        row["window_end"] = row["window_start"] + dt.timedelta(days=6)
    for c in spec.columns:
        if c.name in spec.metric_columns:
            row[c.name] = {"bigint": 7 + n, "double precision": 0.25, "text": "25%"}[c.sql_type]
    row.update(overrides)
    return row


def wire(
    table: TableName, rows: list[dict[str, Any]], listing: str = "L1", chunk: int = 0
) -> RowBatch:
    """Through the real codec, so rows hold what the writer receives: ISO strings."""
    batch = RowBatch(
        job_id=JOB,
        account_id="42",
        listing_id=listing,
        table=table,
        chunk_no=chunk,
        scrape_day=DAY,
        rows=rows,
    )
    return bookkeeping.decode_result(topology.rows_subject(table), encode(batch))  # type: ignore[return-value]


def convert(table: TableName, rows: list[dict[str, Any]]) -> list[row_codecs.Row]:
    batch = wire(table, rows)
    return row_codecs.convert_rows(
        row_codecs.CODECS[table], batch.rows, account_id="42", listing_id="L1", scrape_day=DAY
    )


# --- decoding -----------------------------------------------------------------------------


def test_decode_picks_the_model_by_subject() -> None:
    event = JobEvent(job_id=JOB, account_id="42", event="started", listings_total=1, at=MIDNIGHT)
    result = ListingResult(job_id=JOB, account_id="42", listing_id="L1", status="failed")
    assert bookkeeping.decode_result(topology.SYNC_EVENTS, encode(event)) == event
    assert bookkeeping.decode_result(topology.SYNC_PROGRESS, encode(result)) == result
    assert isinstance(wire("chart_query", [make_row("chart_query")]), RowBatch)
    rotated = rotation()
    assert bookkeeping.decode_result(topology.SYNC_CREDENTIALS, encode(rotated)) == rotated
    # a rotation is no row batch: nothing to convert, no ledger chunk
    assert bookkeeping.plan_message(rotated) == bookkeeping.Planned(rotated)
    assert bookkeeping.plan_message(rotated).chunk is None


def rotation(
    job_id: uuid.UUID = JOB, account_id: str = "42", from_version: int = 1
) -> CredentialsRotated:
    return CredentialsRotated(
        job_id=job_id,
        account_id=account_id,
        from_version=from_version,
        cookie_token="gAAAA-rotated",
        changed=["_aaj"],
        rotated_at=MIDNIGHT,
    )


@pytest.mark.parametrize(
    ("subject", "data"),
    [
        (topology.SYNC_PROGRESS, b"not json"),
        (topology.SYNC_PROGRESS, b'{"job_id": "x"}'),
        (topology.SYNC_EVENTS, b"{}"),
        (topology.SYNC_CREDENTIALS, b"{}"),
        # a version below 1 is no version the accounts table can hold
        (
            topology.SYNC_CREDENTIALS,
            b'{"job_id": "00000000-0000-0000-0000-000000000001", "account_id": "42",'
            b' "from_version": 0, "cookie_token": "t", "rotated_at": "2025-07-11T00:00:00Z"}',
        ),
        ("airbnb.sync.elsewhere", b"{}"),
    ],
)
def test_undecodable_messages_raise(subject: str, data: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        bookkeeping.decode_result(subject, data)


def test_a_row_batch_on_another_tables_subject_is_refused() -> None:
    batch = RowBatch(
        job_id=JOB,
        account_id="42",
        listing_id="L1",
        table="chart_query",
        chunk_no=0,
        scrape_day=DAY,
        rows=[],
    )
    with pytest.raises(MessageDecodeError, match="chart_query"):
        bookkeeping.decode_result(topology.rows_subject("list_of_metrics"), encode(batch))


# --- row conversion -----------------------------------------------------------------------


@pytest.mark.parametrize("table", list(METRIC_TABLES))
def test_wire_rows_become_typed_values_in_column_order(table: TableName) -> None:
    row = make_row(table, extra_metrics={"views": {"value": 3}})
    [values] = convert(table, [row])
    columns = METRIC_TABLES[table].column_names
    as_dict = dict(zip(columns, values, strict=True))
    assert as_dict == row
    assert type(as_dict["time"]) is dt.datetime and as_dict["time"].utcoffset() == dt.timedelta(0)


def test_missing_columns_are_null_and_empty_extra_metrics_is_an_empty_object() -> None:
    row = make_row("chart_query")
    del row["conversion_rate_your_value"]
    row["extra_metrics"] = None
    [values] = convert("chart_query", [row])
    as_dict = dict(zip(METRIC_TABLES["chart_query"].column_names, values, strict=True))
    assert as_dict["conversion_rate_your_value"] is None
    assert as_dict["extra_metrics"] == {}


def test_integral_floats_in_count_columns_become_ints() -> None:
    [values] = convert("chart_query", [make_row("chart_query", p3_impressions_your_value=460.0)])
    i = METRIC_TABLES["chart_query"].column_names.index("p3_impressions_your_value")
    assert values[i] == 460 and type(values[i]) is int


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"nonsense_column": 1}, "no column"),
        ({"metric_date": "2025-13-45"}, "chart_query.metric_date"),
        ({"metric_date": None}, "key column"),
        ({"p3_impressions_your_value": 1.5}, "p3_impressions_your_value"),
        ({"p3_impressions_your_value": True}, "p3_impressions_your_value"),
        # bool is an int: asyncpg would store it as 1.0 in a double column
        ({"conversion_rate_your_value": True}, "conversion_rate_your_value: .* got True"),
        ({"conversion_rate_similar_value": False}, "conversion_rate_similar_value"),
        ({"p3_impressions_your_value": "7"}, "p3_impressions_your_value"),
        ({"extra_metrics": [1, 2]}, "extra_metrics"),
        ({"time": "2025-07-11T00:00:00"}, "no time zone"),
        ({"time": "2025-07-12T00:00:00Z"}, "does not match the chunk"),
        ({"account_id": "43"}, "does not match the chunk"),
        ({"airbnb_listing_id": "L2"}, "does not match the chunk"),
    ],
)
def test_rows_that_can_never_be_written_raise_row_error(
    override: dict[str, Any], message: str
) -> None:
    rows = [make_row("chart_query", 0), make_row("chart_query", 1, **override)]
    with pytest.raises(row_codecs.RowError, match=message) as info:
        convert("chart_query", rows)
    assert str(info.value).startswith("row 1:")


def test_python_dates_are_accepted_as_well_as_iso_strings() -> None:
    row = make_row("list_of_metrics")
    values = row_codecs.convert_rows(
        row_codecs.CODECS["list_of_metrics"],
        [row],
        account_id="42",
        listing_id="L1",
        scrape_day=DAY,
    )
    assert values[0][2] == row["window_start"]


def test_plan_message_converts_row_batches_only() -> None:
    event = JobEvent(job_id=JOB, account_id="42", event="failed", at=MIDNIGHT)
    assert bookkeeping.plan_message(event) == bookkeeping.Planned(event)
    planned = bookkeeping.plan_message(wire("chart_query", [make_row("chart_query")]))
    assert planned.chunk == (JOB, "L1", "chart_query", 0)
    assert planned.rows is not None and len(planned.rows) == 1


# --- ledger, dedupe, counters -------------------------------------------------------------


def planned(table: TableName, rows: list[dict[str, Any]], listing: str = "L1", chunk: int = 0):
    batch = RowBatch(
        job_id=JOB,
        account_id="42",
        listing_id=listing,
        table=table,
        chunk_no=chunk,
        scrape_day=DAY,
        rows=[],
    )
    converted = row_codecs.convert_rows(
        row_codecs.CODECS[table], rows, account_id="42", listing_id=listing, scrape_day=DAY
    )
    return bookkeeping.Planned(batch, converted)


def test_only_new_chunks_are_written_and_later_rows_win_on_the_key() -> None:
    a = planned("chart_query", [make_row("chart_query", 0), make_row("chart_query", 1)], chunk=0)
    later = make_row("chart_query", 1, conversion_rate_your_value=0.99)
    b = planned("chart_query", [later], chunk=1)
    old = planned("chart_query", [make_row("chart_query", 5)], chunk=2)
    summary = planned("chart_summary", [make_row("chart_summary")], chunk=0)
    batch = [a, b, old, summary, a]  # chunk 0 delivered twice
    entries = bookkeeping.ledger_entries(batch)
    assert [c for c, _ in entries] == [
        (JOB, "L1", "chart_query", 0),
        (JOB, "L1", "chart_query", 1),
        (JOB, "L1", "chart_query", 2),
        (JOB, "L1", "chart_summary", 0),
    ]
    assert [n for _, n in entries] == [2, 1, 1, 1]
    new = {c for c, _ in entries if c[3] != 2}  # chunk 2 was committed before
    out = bookkeeping.rows_to_write(batch, new)
    assert set(out) == {"chart_query", "chart_summary"}
    cq = out["chart_query"]
    assert len(cq) == 2
    i = METRIC_TABLES["chart_query"].column_names.index("conversion_rate_your_value")
    assert [r[i] for r in cq] == [0.25, 0.99]
    assert bookkeeping.rows_to_write(batch, set()) == {}


def test_rows_sharing_a_date_but_not_a_key_are_all_kept() -> None:
    # The same days for two listings, and for two tables: no key is shared, nothing goes.
    one = planned("list_of_metrics", [make_row("list_of_metrics", n) for n in range(3)])
    other = planned(
        "list_of_metrics",
        [make_row("list_of_metrics", n, listing="L2") for n in range(3)],
        listing="L2",
    )
    summary = planned("chart_summary", [make_row("chart_summary", n) for n in range(3)])
    batch = [one, other, summary]
    out = bookkeeping.rows_to_write(batch, {c for c, _ in bookkeeping.ledger_entries(batch)})
    assert out["list_of_metrics"] == [*one.rows, *other.rows]  # type: ignore[misc]
    assert out["chart_summary"] == summary.rows


def test_a_key_repeated_by_another_job_of_the_same_day_is_written_once() -> None:
    first = planned("chart_query", [make_row("chart_query", n) for n in range(3)])
    again = bookkeeping.Planned(
        first.message.model_copy(update={"job_id": uuid.uuid4()}),
        [list(r) for r in first.rows or []],
    )
    i = METRIC_TABLES["chart_query"].column_names.index("conversion_rate_your_value")
    again.rows[1][i] = 0.75  # type: ignore[index]
    batch = [first, again]
    out = bookkeeping.rows_to_write(batch, {c for c, _ in bookkeeping.ledger_entries(batch)})
    assert [r[i] for r in out["chart_query"]] == [0.25, 0.75, 0.25]  # the later message wins


def test_chunk_increments_sum_per_listing_and_job() -> None:
    other = uuid.uuid4()
    per_listing, per_job = bookkeeping.chunk_increments(
        [
            ((JOB, "L1", "chart_query", 0), 10),
            ((JOB, "L1", "chart_summary", 0), 2),
            ((JOB, "L2", "chart_query", 0), 5),
            ((other, "L1", "chart_query", 0), 1),
        ]
    )
    assert per_listing == {(JOB, "L1"): (2, 12), (JOB, "L2"): (1, 5), (other, "L1"): (1, 1)}
    assert per_job == {JOB: 17, other: 1}


def listing_result(status: str, listing: str = "L1", **kw: Any) -> ListingResult:
    return ListingResult(job_id=JOB, account_id="42", listing_id=listing, status=status, **kw)


def test_published_outranks_failed_and_otherwise_the_later_result_wins() -> None:
    pub = listing_result("published", chunks={"chart_query": 2, "chart_summary": 1})
    fail = listing_result("failed", error="boom")
    assert bookkeeping.merge_listing_results([pub, fail]) == [pub]
    assert bookkeeping.merge_listing_results([fail, pub]) == [pub]
    fail2 = listing_result("failed", error="again")
    assert bookkeeping.merge_listing_results([fail, fail2]) == [fail2]
    other = listing_result("failed", listing="L2")
    assert bookkeeping.merge_listing_results([fail, other]) == [fail, other]
    assert bookkeeping.chunks_expected(pub) == 3
    assert bookkeeping.chunks_expected(fail) is None


def test_listings_total_falls_back_to_the_listing_ids() -> None:
    e = JobEvent(job_id=JOB, account_id="42", event="started", listing_ids=["a", "b"], at=MIDNIGHT)
    assert bookkeeping.listings_total(e) == 2
    assert bookkeeping.listings_total(e.model_copy(update={"listings_total": 3})) == 3


def test_orphans_are_unknown_jobs_and_foreign_accounts() -> None:
    other = uuid.uuid4()
    batch = [
        bookkeeping.Planned(listing_result("failed")),
        bookkeeping.Planned(
            ListingResult(job_id=other, account_id="42", listing_id="x", status="failed")
        ),
        bookkeeping.Planned(
            ListingResult(job_id=JOB, account_id="7", listing_id="x", status="failed")
        ),
    ]
    bad = bookkeeping.orphans(batch, {JOB: bookkeeping.JobRef("42", "running")})
    assert set(bad) == {1, 2}
    assert "does not exist" in bad[1] and "belongs to account 42" in bad[2]


def test_a_rotation_of_an_unknown_job_is_an_orphan() -> None:
    batch = [
        bookkeeping.Planned(rotation(uuid.uuid4())),
        bookkeeping.Planned(rotation(JOB, account_id="7")),
    ]
    bad = bookkeeping.orphans(batch, {JOB: bookkeeping.JobRef("42", "failed")})
    assert set(bad) == {0, 1}
    assert "does not exist" in bad[0] and "belongs to account 42" in bad[1]


# --- rotated credentials ------------------------------------------------------------------


def test_rotations_keep_message_order() -> None:
    first, second = rotation(from_version=3), rotation(uuid.uuid4(), from_version=4)
    batch = [
        bookkeeping.Planned(second),
        bookkeeping.Planned(listing_result("failed")),
        bookkeeping.Planned(first),
    ]
    assert bookkeeping.rotations(batch) == [second, first]


@pytest.mark.parametrize(
    ("claimed", "applied_version", "outcome"),
    [
        (True, 2, "applied"),
        # the account no longer had from_version: the operator, another rotation, a delete
        (True, None, "dropped"),
        # the ledger holds it: a redelivery or a stream replay changes nothing
        (False, None, "already_handled"),
        (False, 3, "already_handled"),
    ],
)
def test_rotation_outcome(claimed: bool, applied_version: int | None, outcome: str) -> None:
    assert bookkeeping.rotation_outcome(claimed=claimed, applied_version=applied_version) == outcome


def test_rotation_sql_checks_the_version_and_leaves_the_mark() -> None:
    assert "credentials_version = $2" in sql.APPLY_ROTATION
    assert "deleted_at IS NULL" in sql.APPLY_ROTATION
    assert "credentials_invalid_at" not in sql.APPLY_ROTATION


# --- job completion -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tally", "outcome"),
    [
        (bookkeeping.ListingTally(None, 3, 3, 0), None),  # started not seen yet
        (bookkeeping.ListingTally(3, 2, 2, 0), None),  # a listing not even pending yet
        (bookkeeping.ListingTally(3, 3, 2, 0), None),  # one listing still pending
        (bookkeeping.ListingTally(3, 3, 3, 0), "succeeded"),
        (bookkeeping.ListingTally(3, 3, 2, 1), "partial"),
        (bookkeeping.ListingTally(3, 3, 0, 3), "failed"),
        (bookkeeping.ListingTally(0, 0, 0, 0), "succeeded"),  # an account without listings
        # Airbnb returned fewer listings than it reported: never a success.
        (bookkeeping.ListingTally(3, 3, 3, 0, truncated=True), "partial"),
        (bookkeeping.ListingTally(3, 3, 2, 1, truncated=True), "partial"),
        (bookkeeping.ListingTally(3, 3, 0, 3, truncated=True), "failed"),
        (bookkeeping.ListingTally(0, 0, 0, 0, truncated=True), "failed"),  # none returned
        (bookkeeping.ListingTally(3, 3, 2, 0, truncated=True), None),  # still pending
    ],
)
def test_job_outcome(tally: bookkeeping.ListingTally, outcome: str | None) -> None:
    assert bookkeeping.job_outcome(tally) == outcome


def test_job_error_names_the_failed_listings() -> None:
    assert bookkeeping.job_error([("111", "timeout"), ("222", None)], 2, 5) == (
        "2 of 5 listings failed: 111 (timeout); 222 (no reason given)"
    )
    assert bookkeeping.job_error([("111", "x")], 4, 9).endswith("; and 3 more")


def test_shortfall_note_and_final_error() -> None:
    assert bookkeeping.shortfall_note(7, 9) == "7 of 9 listings returned"
    assert bookkeeping.shortfall_note(7, 7) is None
    assert bookkeeping.shortfall_note(7, None) is None
    assert bookkeeping.shortfall_note(7, 5) is None  # fewer reported than kept: none missing
    failures = bookkeeping.job_error([("111", "timeout")], 1, 7)
    assert bookkeeping.final_error("7 of 9 listings returned", failures) == (
        "7 of 9 listings returned; 1 of 7 listings failed: 111 (timeout)"
    )
    assert bookkeeping.final_error("7 of 9 listings returned", None) == "7 of 9 listings returned"
    assert bookkeeping.final_error(None, failures) == failures
    assert bookkeeping.final_error(None, None) is None


def test_the_shortfall_note_is_kept_by_a_redelivered_start_and_read_at_completion() -> None:
    assert "error = COALESCE($4, error)" in sql.START_JOB
    assert "j.error AS shortfall" in sql.TALLY_JOBS


def test_only_jobs_that_synced_something_advance_last_sync() -> None:
    assert bookkeeping.advances_last_sync("succeeded")
    assert bookkeeping.advances_last_sync("partial")
    assert not bookkeeping.advances_last_sync("failed")


# --- SQL text -----------------------------------------------------------------------------


@pytest.mark.parametrize("table", list(METRIC_TABLES))
def test_upsert_sql_updates_every_non_key_column_only_when_distinct(table: TableName) -> None:
    spec = METRIC_TABLES[table]
    text = sql.upsert_sql(spec)
    assert text.startswith(f"INSERT INTO airbnb.{table} AS")
    assert f'FROM "writer_{table}"' in text
    assert "ON CONFLICT (" + ", ".join(f'"{k}"' for k in spec.key) + ")" in text
    for c in spec.column_names:
        if c not in spec.key:
            assert f'"{c}" = EXCLUDED."{c}"' in text
    assert "IS DISTINCT FROM" in text
    assert "ON COMMIT DROP" in sql.create_temp_table_sql(spec)


def test_copy_strategy_merges_for_a_while_after_a_conflict() -> None:
    strategy = row_codecs.CopyStrategy(cooldown=2)
    assert strategy.direct("chart_query")
    strategy.conflicted("chart_query")
    assert [strategy.direct("chart_query") for _ in range(3)] == [False, False, True]
    assert strategy.direct("chart_summary")


def test_find_type_error_names_the_column() -> None:
    [values] = convert("chart_summary", [make_row("chart_summary")])
    assert row_codecs.find_type_error("chart_summary", [values]) == "no single value to blame"
    i = METRIC_TABLES["chart_summary"].column_names.index("p2_impressions_value_string")
    values[i] = 5
    assert row_codecs.find_type_error("chart_summary", [values]) == (
        "row 0: chart_summary.p2_impressions_value_string is 5, expected text"
    )


# --- error classification -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(), "transient"),
        (TimeoutError(), "transient"),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), "transient"),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), "transient"),
        (asyncpg.exceptions.CannotConnectNowError("starting"), "transient"),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), "transient"),
        (asyncpg.exceptions.SerializationError("retry"), "transient"),
        (asyncpg.exceptions.TooManyConnectionsError("full"), "transient"),
        (asyncpg.InterfaceError("connection is closed"), "transient"),
        (asyncpg.exceptions.InvalidDatetimeFormatError("bad"), "permanent"),
        (asyncpg.exceptions.NumericValueOutOfRangeError("big"), "permanent"),
        (asyncpg.exceptions.NotNullViolationError("null"), "permanent"),
        (asyncpg.exceptions.ForeignKeyViolationError("fk"), "permanent"),
        (RowEncodeError("expected str, got int"), "permanent"),
        (row_codecs.RowError("row 0: bad"), "permanent"),
        (asyncpg.exceptions.UndefinedTableError("missing"), "unknown"),
        (KeyError("bug"), "unknown"),
    ],
)
def test_classify_error(exc: BaseException, kind: str) -> None:
    assert classify_error(exc) == kind


def test_redelivery_delay_backs_off_to_a_minute() -> None:
    assert [redelivery_delay(n) for n in (1, 2, 3, 7, 20)] == [1, 2, 4, 60, 60]


def test_in_progress_acks_come_well_inside_ack_wait() -> None:
    assert heartbeat_interval(60) == 15
    assert heartbeat_interval(0.5) == 0.25


def test_job_update_payload_is_json() -> None:
    # The notification body is plain JSON a progress display can read without our models.
    body = orjson.dumps({"job_id": JOB, "status": "running"}, default=str)
    assert json.loads(body) == {"job_id": str(JOB), "status": "running"}
