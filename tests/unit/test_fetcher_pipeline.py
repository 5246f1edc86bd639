"""The fetcher's pure core: responses -> rows -> chunks, checked against the simulator's truth.

Responses come from the simulator's own pure builders (the same code that answers
over HTTP), fed with the exact bodies the fetcher's poll plan sends.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic_core import to_jsonable_python

from services.fetcher import announced, pipeline
from services.fetcher.app import HEADER_ROOM_BYTES, chunk_limit, redelivery_delay
from services.fetcher.settings import FetcherSettings
from services.simulator.data import (
    Account,
    airbnb_days,
    build_world,
    expected_metric_values,
    expected_value_change,
    observed_metrics,
)
from services.simulator.protocol import parse_request
from services.simulator.responses import build_response, malformed_component
from shared.airbnb.flatteners import Listing, ListingsPage, flatten_listings_page
from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION
from shared.airbnb.payloads import PlannedRequest, listings_section_payload, plan_listing_requests
from shared.airbnb.pivots import Row, scrape_time
from shared.airbnb.windows import DateRange, sync_window
from shared.messages import RowBatch, decode, encode
from shared.metric_tables import METRIC_TABLES, SUMMARY_METRICS, TABLE_NAMES, TableName

SEED = 11
TODAY = date(2025, 7, 11)
JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")
WORLD = build_world(1, 3, SEED)
ACCOUNT = WORLD.accounts[0]


def listing_of(account: Account, index: int) -> Listing:
    sim = account.listings[index]
    return Listing(sim.listing_id, sim.internal_name, sim.listing_name)


def answer(request: PlannedRequest, account: Account = ACCOUNT) -> dict[str, Any]:
    parsed = parse_request(request.query.operation_name, orjson.dumps(request.body))
    return build_response(SEED, account, parsed, TODAY, "trace")


def listing_tables(
    listing: Listing,
    window: DateRange,
    respond: Callable[[PlannedRequest], dict[str, Any]] = answer,
) -> tuple[list[PlannedRequest], dict[TableName, list[Row]]]:
    plan = plan_listing_requests(listing.listing_id, window, TODAY)
    flattened = [pipeline.flatten_response(r, respond(r)) for r in plan]
    tables = pipeline.pivot_listing(
        flattened, account_id=ACCOUNT.account_id, listing=listing, scrape_day=TODAY
    )
    return plan, tables


def slices(plan: list[PlannedRequest], query: object) -> list[DateRange]:
    return list(dict.fromkeys(r.slice for r in plan if r.query == query))


@pytest.mark.parametrize("first_run", [False, True])
def test_rows_equal_the_simulator_truth(first_run: bool) -> None:
    window = sync_window(TODAY, first_run=first_run)
    listing = listing_of(ACCOUNT, 0)
    plan, tables = listing_tables(listing, window)
    chart_slices = slices(plan, CHART)
    lom_slices = slices(plan, LIST_OF_METRICS)

    # Row counts: one chart_query row per day Airbnb returns, one summary row per slice.
    days = sorted({d for s in chart_slices for d in airbnb_days(s.start, s.end, TODAY)})
    assert [r["metric_date"] for r in tables["chart_query"]] == days
    assert len(tables["chart_summary"]) == len(chart_slices)
    assert len(tables["list_of_metrics"]) == len(lom_slices)

    for table in TABLE_NAMES:
        for row in tables[table]:
            assert set(row) == set(METRIC_TABLES[table].column_names)
            assert row["time"] == scrape_time(TODAY)
            assert row["account_id"] == ACCOUNT.account_id
            assert row["airbnb_listing_id"] == listing.listing_id
            assert row["airbnb_internal_name"] == listing.internal_name
            assert row["extra_metrics"] == {}
        keys = [tuple(row[k] for k in METRIC_TABLES[table].key) for row in tables[table]]
        assert len(keys) == len(set(keys)), f"{table} repeats a key"

    for row in tables["chart_query"][::5]:
        # A future stay date carries its counts as built up by the scrape day.
        truth = observed_metrics(SEED, listing.listing_id, row["metric_date"], TODAY)
        assert row["p3_impressions_your_value"] == truth.your.p3_impressions
        assert row["p3_impressions_similar_value"] == truth.similar.p3_impressions
        assert row["p3_impressions_your_value_string"] == str(truth.your.p3_impressions)
        assert row["conversion_rate_your_value"] == pytest.approx(
            truth.your.value("conversion_rate")
        )
        assert row["conversion_rate_similar_value"] == pytest.approx(
            truth.similar.value("conversion_rate")
        )

    for part, row in zip(chart_slices, tables["chart_summary"], strict=True):
        assert (row["window_start"], row["window_end"]) == (part.start, part.end)
        expected = expected_metric_values(
            SEED, listing.listing_id, SUMMARY_METRICS, part.start, part.end, TODAY
        )
        for metric, value in expected.items():
            assert row[f"{metric}_value"] == pytest.approx(value), metric
        for primary in ("conversion_rate", "p3_impressions"):
            change = expected_value_change(
                SEED, listing.listing_id, primary, part.start, part.end, TODAY
            )
            if row[f"{primary}_value_change"] is not None:
                assert row[f"{primary}_value_change"] == pytest.approx(change)
        assert row["p3_impressions_value_change"] is not None

    for part, row in zip(lom_slices, tables["list_of_metrics"], strict=True):
        assert (row["window_start"], row["window_end"]) == (part.start, part.end)
        expected = expected_metric_values(
            SEED, listing.listing_id, SUMMARY_METRICS, part.start, part.end, TODAY
        )
        for metric, value in expected.items():
            assert row[f"{metric}_value"] == pytest.approx(value), metric


def test_incremental_window_has_the_expected_plan_and_row_counts() -> None:
    # Pinned numbers for the window the integration tests use (a Friday).
    window = sync_window(TODAY, first_run=False)
    assert window == DateRange(date(2025, 6, 29), date(2025, 8, 16))
    plan, tables = listing_tables(listing_of(ACCOUNT, 1), window)
    assert len(plan) == 2 * 2 + 7 * 2
    # Every day of the window, dated a day later by Airbnb: 06-30 .. 08-17, the 37 days
    # after today included (Airbnb answers future stay dates with data).
    dates = [r["metric_date"] for r in tables["chart_query"]]
    assert (dates[0], dates[-1], len(dates)) == (date(2025, 6, 30), date(2025, 8, 17), 49)
    assert len(tables["chart_summary"]) == 2
    assert len(tables["list_of_metrics"]) == 7


def batches_of(
    listing: Listing, tables: dict[TableName, list[Row]], max_bytes: int
) -> list[RowBatch]:
    """One listing's tables cut into RowBatches, as the fetcher does for ACCOUNT."""
    return pipeline.row_batches(
        job_id=JOB,
        account_id=ACCOUNT.account_id,
        listing_id=listing.listing_id,
        scrape_day=TODAY,
        tables=tables,
        max_bytes=max_bytes,
    )


def test_chunks_stay_under_the_limit_and_are_deterministic() -> None:
    listing = listing_of(ACCOUNT, 2)
    _, tables = listing_tables(listing, sync_window(TODAY, first_run=True))
    limit = 6 * 1024

    def cut() -> list[RowBatch]:
        return batches_of(listing, tables, limit)

    batches = cut()
    assert cut() == batches  # the same rows always give the same chunks (and msg ids)
    for table in TABLE_NAMES:
        mine = [b for b in batches if b.table == table]
        assert [b.chunk_no for b in mine] == list(range(len(mine)))
        assert len(mine) > 1, f"{table}: the limit should force several chunks"
        # Every row, once, in order: the chunks carry the pivots' rows themselves.
        assert [r for b in mine for r in b.rows] == tables[table]
    for b in batches:
        data = encode(b)
        assert len(data) <= limit
        # The writer receives the rows as pydantic converts them (dates as ISO strings).
        assert decode(RowBatch, data) == b.model_copy(update={"rows": to_jsonable_python(b.rows)})
        # the one encoder's fast path is the model's own encoding, byte for byte
        assert data == orjson.dumps(b.model_dump(mode="json"))
    # A chunk is filled before the next starts: adding the next row would break the limit.
    for first, second in itertools.pairwise(batches):
        if first.table == second.table:
            grown = first.model_copy(update={"rows": [*first.rows, second.rows[0]]})
            assert len(encode(grown)) > limit

    one_each = batches_of(listing, tables, 512 * 1024)
    assert [(b.table, b.chunk_no) for b in one_each] == [(t, 0) for t in TABLE_NAMES]

    result = pipeline.published_result(
        job_id=JOB, account_id=ACCOUNT.account_id, listing=listing, tables=tables, batches=batches
    )
    assert result.status == "published"
    assert result.internal_name == listing.internal_name
    assert result.listing_name == listing.listing_name
    for table in TABLE_NAMES:
        assert result.chunks[table] == sum(b.table == table for b in batches)
        assert result.rows[table] == len(tables[table])


def test_rows_travel_as_json_types() -> None:
    listing = listing_of(ACCOUNT, 0)
    _, tables = listing_tables(listing, sync_window(TODAY, first_run=False))
    batches = batches_of(listing, tables, 512 * 1024)
    summary = next(b for b in batches if b.table == "chart_summary")
    wire = orjson.loads(encode(summary))["rows"][0]
    assert wire["window_start"] == "2025-06-29"
    assert wire["time"] == "2025-07-11T00:00:00Z"
    assert isinstance(wire["p3_impressions_value"], int)

    # What orjson cannot write itself is written as pydantic would, byte for byte.
    odd = RowBatch.model_construct(
        job_id=JOB,
        account_id="1",
        listing_id="2",
        table="chart_query",
        chunk_no=0,
        scrape_day=TODAY,
        rows=[{"x": Decimal("1.50"), "day": TODAY, "at": scrape_time(TODAY)}],
    )
    assert encode(odd) == orjson.dumps(odd.model_dump(mode="json"))
    assert pipeline.chunk_rows(odd.rows, 100) == [odd.rows]


def test_chunk_rows_edges() -> None:
    assert pipeline.chunk_rows([], 100) == []
    rows = [{"a": "x" * 10}] * 5  # 18 bytes each
    size = len(orjson.dumps(rows[0]))
    assert pipeline.chunk_rows(rows, size) == [[r] for r in rows]
    assert pipeline.chunk_rows(rows, 2 * size + 1) == [rows[:2], rows[2:4], rows[4:]]
    assert pipeline.chunk_rows(rows, 2 * size) == [[r] for r in rows]  # no room for the comma
    # All rows in one chunk exactly when their array body fits, commas included.
    assert pipeline.chunk_rows(rows, 5 * size + 4) == [rows]
    assert pipeline.chunk_rows(rows, 5 * size + 3) == [rows[:4], rows[4:]]
    with pytest.raises(pipeline.ChunkTooLargeError, match="more than a whole chunk"):
        pipeline.chunk_rows(rows, size - 1)
    with pytest.raises(pipeline.ChunkTooLargeError):
        pipeline.row_batches(
            job_id=JOB,
            account_id="1",
            listing_id="2",
            scrape_day=TODAY,
            tables={"chart_query": [{"x": 1}]},
            max_bytes=100,
        )


def test_a_malformed_response_names_the_request_and_the_path() -> None:
    listing = listing_of(ACCOUNT, 0)
    plan = plan_listing_requests(listing.listing_id, sync_window(TODAY, first_run=False), TODAY)
    chart = plan[0]
    with pytest.raises(pipeline.ListingDataError) as err:
        pipeline.flatten_response(chart, malformed_component(answer(chart)))
    text = str(err.value)
    assert text.startswith(f"ChartQuery conversion_rate {chart.slice}: malformed Airbnb response")
    assert "components[0].metricLineCharts: missing" in text

    lom = next(r for r in plan if r.query == LIST_OF_METRICS)
    with pytest.raises(pipeline.ListingDataError, match="ListOfMetricsQuery"):
        pipeline.flatten_response(lom, malformed_component(answer(lom)))


def test_metrics_without_a_column_are_kept_and_counted() -> None:
    def renamed(request: PlannedRequest) -> dict[str, Any]:
        body = copy.deepcopy(answer(request))
        component = body["data"]["porygon"]["getPerformanceComponents"]["components"][0]
        if request.query == LIST_OF_METRICS:
            component["metrics"][-1]["metricName"] = f"new_{request.group_by_value}"
        return body

    _, tables = listing_tables(listing_of(ACCOUNT, 0), sync_window(TODAY, first_run=False), renamed)
    names = pipeline.extra_metric_names(tables)
    assert set(names) == {"list_of_metrics"}
    # Both ListOfMetricsQuery requests of each of the 7 slices renamed one metric.
    assert names["list_of_metrics"] == {"new_conversion_rate": 7, "new_p3_impressions": 7}
    extra = tables["list_of_metrics"][0]["extra_metrics"]
    assert set(extra) == {"new_conversion_rate", "new_p3_impressions"}
    assert extra["new_p3_impressions"]["value"] is not None


def test_failed_result_and_reasons_are_bounded() -> None:
    listing = Listing("9", "Loft", "Sunny Loft")
    result = pipeline.failed_result(job_id=JOB, account_id="1", listing=listing, reason="x" * 5000)
    assert result.status == "failed"
    assert result.chunks == {} and result.rows == {}
    assert result.error is not None and len(result.error) == pipeline.MAX_REASON_CHARS


def test_listings_round_trip_and_deduplicate() -> None:
    listings = [Listing("1", "a", "A"), Listing("2", None, None), Listing("1", "dup", "dup")]
    unique = announced.unique_listings(listings)
    assert unique == listings[:2]
    assert announced.decode_listings(announced.encode_listings(unique)) == (unique, None)
    # The common value stays the plain array the fetcher before this one wrote and reads.
    assert orjson.loads(announced.encode_listings(unique))[0]["listing_id"] == "1"
    kept = announced.decode_listings(announced.encode_listings(unique, 9))
    assert kept == announced.Announced(unique, 9)


def _listings_answer(page_size: int | None) -> dict[str, Any]:
    body = orjson.dumps(listings_section_payload())
    parsed = parse_request(LISTINGS_SECTION.operation_name, body)
    return build_response(SEED, ACCOUNT, parsed, TODAY, "trace", listings_page_size=page_size)


def test_a_complete_listings_answer_reports_nothing_missing() -> None:
    page = flatten_listings_page(_listings_answer(None))
    assert (len(page.listings), page.total_count, page.results_count) == (3, 3, 3)
    assert pipeline.listings_reported(page) is None


@pytest.mark.parametrize("page_size", [0, 1, 2])
def test_the_simulator_can_cut_the_listings_short_and_the_fetcher_sees_it(page_size: int) -> None:
    page = flatten_listings_page(_listings_answer(page_size))
    assert (len(page.listings), page.total_count, page.results_count) == (page_size, 3, page_size)
    # The first rows of the full answer, in its order (the active sort).
    full = flatten_listings_page(_listings_answer(None)).listings
    assert page.listings == full[:page_size]
    assert pipeline.listings_reported(page) == 3


@pytest.mark.parametrize(
    ("total", "results", "reported"),
    [
        (2, 2, None),  # all there
        (None, None, None),  # no count: nothing to compare with
        (5, 2, 5),  # more exist than were returned
        (None, 4, 4),  # the answer claims rows it does not carry
        (2, None, None),
        (1, 1, None),  # fewer claimed than carried: nothing missing
    ],
)
def test_listings_reported_is_the_larger_count_when_it_exceeds_the_rows(
    total: int | None, results: int | None, reported: int | None
) -> None:
    page = ListingsPage([Listing("1", None, None), Listing("2", None, None)], total, results)
    assert pipeline.listings_reported(page) == reported


def test_retry_delay_backs_off_and_is_capped() -> None:
    settings = FetcherSettings.model_construct(fetcher_retry_base_s=5, fetcher_retry_cap_s=300)
    delays = [redelivery_delay(settings, n) for n in range(1, 11)]
    assert delays[:4] == [5, 10, 20, 40]
    assert max(delays) == 300
    assert redelivery_delay(settings, 0) == 5


def test_chunk_limit_respects_the_server() -> None:
    assert chunk_limit(512 * 1024, 1024 * 1024) == 512 * 1024
    assert chunk_limit(512 * 1024, 64 * 1024) == 64 * 1024 - HEADER_ROOM_BYTES


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("SECRET_KEYS", Fernet.generate_key().decode())
    s = FetcherSettings()
    assert s.fetcher_concurrency == 1000
    assert s.fetcher_chunk_max_bytes == 512 * 1024
    assert s.fetcher_heartbeat_s < 60
    monkeypatch.setenv("FETCHER_RETRY_BASE_S", "10")
    monkeypatch.setenv("FETCHER_RETRY_CAP_S", "1")
    with pytest.raises(ValueError, match="FETCHER_RETRY_BASE_S"):
        FetcherSettings()


def test_window_is_a_days_range() -> None:
    # Guard for the integration tests' arithmetic: the scrape day is a Friday.
    assert TODAY.weekday() == 4
    assert TODAY + timedelta(days=1) == date(2025, 7, 12)


def test_packed_answers_unpack_equal_and_pivot_to_the_same_rows() -> None:
    """The fetcher holds a listing's flattened answers packed until the pivot."""
    window = sync_window(TODAY, first_run=True)
    listing = listing_of(ACCOUNT, 0)
    plan = plan_listing_requests(listing.listing_id, window, TODAY)
    flattened = [pipeline.flatten_response(r, answer(r)) for r in plan]
    packed = [pipeline.pack(f) for f in flattened]
    assert [pipeline.unpack(p) for p in packed] == flattened
    assert all(p.request is f.request for p, f in zip(packed, flattened, strict=True))
    who = {"account_id": ACCOUNT.account_id, "listing": listing, "scrape_day": TODAY}
    assert pipeline.pivot_listing(
        (pipeline.unpack(p) for p in packed), **who
    ) == pipeline.pivot_listing(flattened, **who)
    # one bytes object an answer, a few KiB: what is held per listing in flight
    assert sum(len(p.data) for p in packed) < 64 * 1024
