"""The fetcher's functional core: Airbnb responses -> table rows -> RowBatch chunks.

Everything here is pure (no I/O, no clock), so the path from one listing's responses
to the messages the writer receives is tested without NATS or HTTP:

1. :func:`flatten_response` reads one Airbnb answer as soon as it arrives, so a
   malformed listing stops after its first bad response, with a reason that names
   the request and the JSON path.
2. :func:`pivot_listing` turns all flattened responses of one listing into the rows
   of the three tables: one ``chart_query`` row per day, one ``chart_summary`` and
   one ``list_of_metrics`` row per slice (the two metrics of a slice merged).
3. :func:`row_batches` cuts each table's rows into ``RowBatch`` chunks that encode to
   at most ``max_bytes``. The cut depends only on the rows, so a listing fetched
   again after a crash produces the same chunks, hence the same ``Nats-Msg-Id``\\ s,
   and JetStream drops the copies.
"""

from __future__ import annotations

import datetime as dt
import pickle
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypedDict

from shared.airbnb.errors import MalformedResponseError
from shared.airbnb.flatteners import (
    ChartPoint,
    Listing,
    ListingsPage,
    MetricValue,
    flatten_chart_points,
    flatten_metric_units,
)
from shared.airbnb.operations import CHART, LIST_OF_METRICS, PersistedQuery
from shared.airbnb.payloads import PlannedRequest
from shared.airbnb.pivots import (
    Row,
    pivot_chart_query,
    pivot_chart_summary,
    pivot_list_of_metrics,
    scrape_time,
)
from shared.airbnb.windows import DateRange
from shared.messages import ListingResult, RowBatch, encode, to_json
from shared.metric_tables import EXTRA_METRICS_COLUMN, TABLE_NAMES, TableName

# Error texts travel in ListingResult/JobEvent and end up in the API; keep them readable.
MAX_REASON_CHARS = 1_000
# Used to size the RowBatch envelope: more digits than any real chunk number.
_CHUNK_NO_BOUND = 999_999


class ListingDataError(Exception):
    """One listing's data cannot be turned into rows; the message says which request and why."""


class ChunkTooLargeError(ListingDataError):
    """A single row is larger than a whole chunk may be."""


def describe(request: PlannedRequest) -> str:
    """``ChartQuery conversion_rate 2025-06-29..2025-07-26``: a request, for error texts."""
    return f"{request.query.operation_name} {request.group_by_value} {request.slice}"


def clip_reason(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


# --- the listings query ----------------------------------------------------------------------


def listings_reported(page: ListingsPage) -> int | None:
    """How many listings Airbnb said the host has, when that is more than it returned.

    ListingsSectionQuery takes no paging argument that anyone has seen (neither the
    request the captures answer nor the public client of this query sends one, and the
    answer carries no cursor; docs/data-path.md), so the listings it left out cannot be
    asked for: the job goes on with those returned and ends ``partial``. The larger of
    ``totalCount`` and ``resultsCount`` counts, so an answer that claims rows it does
    not carry is caught too. None: nothing is missing, or Airbnb gave no count.
    """
    counts = [c for c in (page.total_count, page.results_count) if c is not None]
    reported = max(counts, default=0)
    return reported if reported > len(page.listings) else None


# --- responses -> flat records -------------------------------------------------------------


# A NamedTuple rather than a frozen dataclass: as immutable, and built in half the time
# (one per response; a frozen dataclass's __init__ sets each field via object.__setattr__).
class Flattened(NamedTuple):
    """One answered request: its chart points (ChartQuery only) and its metric units."""

    request: PlannedRequest
    points: tuple[ChartPoint, ...]
    units: tuple[MetricValue, ...]


def _is_chart(query: PersistedQuery) -> bool:
    # ``is`` first, for both constants: the planned requests hold them, and a frozen
    # dataclass's == compares field tuples (~0.2 us each, twice per response).
    return query is CHART or (query is not LIST_OF_METRICS and query == CHART)


def flatten_response(request: PlannedRequest, body: Any) -> Flattened:
    """Flatten one answer to ``request``; raises :class:`ListingDataError` naming both."""
    query = request.query
    try:
        if _is_chart(query):
            points = tuple(flatten_chart_points(body))
        elif query is LIST_OF_METRICS or query == LIST_OF_METRICS:
            points = ()
        else:
            raise ListingDataError(f"{describe(request)}: not a per-listing query")
        units = tuple(flatten_metric_units(body))
    except MalformedResponseError as exc:
        raise ListingDataError(f"{describe(request)}: {exc}") from None
    return Flattened(request, points, units)


class Packed(NamedTuple):
    """A :class:`Flattened` answer held until its listing is pivoted: the request, and its
    points and units pickled into one bytes object.

    A first-run listing's 78 answers flatten to ~1,100 small tuples, floats and strings,
    ~225 KiB per listing in flight; pickled they are ~35 KiB (one allocation per answer
    instead of thousands), for ~6 us per answer each way against ~20 us for the
    ``orjson.loads`` of the body. A fetcher holds one listing in flight per account, so at
    1,000 accounts that was ~190 MiB of its RSS (bench_fleet, issue 17). The bytes never
    leave the process that pickled them.
    """

    request: PlannedRequest
    data: bytes


def pack(flattened: Flattened) -> Packed:
    return Packed(
        flattened.request,
        pickle.dumps((flattened.points, flattened.units), protocol=pickle.HIGHEST_PROTOCOL),
    )


def unpack(packed: Packed) -> Flattened:
    points, units = pickle.loads(packed.data)
    return Flattened(packed.request, points, units)


# --- flat records -> table rows ------------------------------------------------------------


class _Who(TypedDict):
    """The identifying columns every pivot of one listing takes as keyword arguments."""

    account_id: str
    listing_id: str
    internal_name: str | None


def pivot_listing(
    flattened: Iterable[Flattened],
    *,
    account_id: str,
    listing: Listing,
    scrape_day: dt.date,
) -> dict[TableName, list[Row]]:
    """The rows of every table for one listing, in a stable order.

    ``chart_query`` rows come from every ChartQuery point at once (one row per day,
    sorted), so that the rows of a listing never repeat a key; summaries keep the
    order of the slices in the poll plan.
    """
    scraped_at = scrape_time(scrape_day)
    who: _Who = {
        "account_id": account_id,
        "listing_id": listing.listing_id,
        "internal_name": listing.internal_name,
    }
    points: list[ChartPoint] = []
    chart_units: dict[DateRange, list[MetricValue]] = {}
    list_units: dict[DateRange, list[MetricValue]] = {}
    for f in flattened:
        if _is_chart(f.request.query):
            points.extend(f.points)
            chart_units.setdefault(f.request.slice, []).extend(f.units)
        else:
            list_units.setdefault(f.request.slice, []).extend(f.units)
    return {
        "chart_query": pivot_chart_query(points, scraped_at=scraped_at, **who),
        "chart_summary": [
            pivot_chart_summary(units, slice=part, scraped_at=scraped_at, **who)
            for part, units in chart_units.items()
        ],
        "list_of_metrics": [
            pivot_list_of_metrics(units, slice=part, scraped_at=scraped_at, **who)
            for part, units in list_units.items()
        ],
    }


def extra_metric_names(tables: Mapping[TableName, Sequence[Row]]) -> dict[TableName, Counter[str]]:
    """Per table, how often each metric without a column was kept in ``extra_metrics``."""
    found: dict[TableName, Counter[str]] = {}
    for table, rows in tables.items():
        names: Counter[str] = Counter()
        for row in rows:
            names.update(row[EXTRA_METRICS_COLUMN].keys())
        if names:
            found[table] = names
    return found


# --- rows -> chunks -> messages ------------------------------------------------------------


def chunk_rows(rows: Sequence[Row], budget: int) -> list[list[Row]]:
    """Greedy, order-keeping cut of ``rows`` into lists whose JSON array body (rows and
    the commas between them) takes at most ``budget`` bytes.

    No rows give no chunks. A single row over ``budget`` raises :class:`ChunkTooLargeError`.
    """
    if not rows:
        return []
    # Usually a listing's whole table fits in one chunk: one encoding of all rows (the
    # body is the array less its brackets) then decides, with the greedy cut's answer.
    if len(to_json(rows)) - 2 <= budget:
        return [list(rows)]
    chunks: list[list[Row]] = []
    current: list[Row] = []
    used = 0
    for row in rows:
        size = len(to_json(row))
        if size > budget:
            raise ChunkTooLargeError(
                f"one row takes {size} bytes, more than a whole chunk ({budget} bytes of rows)"
            )
        # A comma separates this row from the previous one in the same chunk.
        needed = size + (1 if current else 0)
        if current and used + needed > budget:
            chunks.append(current)
            current, used, needed = [], 0, size
        current.append(row)
        used += needed
    if current:
        chunks.append(current)
    return chunks


def row_batches(
    *,
    job_id: uuid.UUID,
    account_id: str,
    listing_id: str,
    scrape_day: dt.date,
    tables: Mapping[TableName, Sequence[Row]],
    max_bytes: int,
) -> list[RowBatch]:
    """Every RowBatch of one listing, table by table, each encoding to <= ``max_bytes``."""
    batches: list[RowBatch] = []
    for table in TABLE_NAMES:
        rows = tables.get(table, ())
        if not rows:
            continue

        def batch(chunk_no: int, chunk: list[Row], table: TableName = table) -> RowBatch:
            # Not validated again: every field is typed here and the rows are the pivots'
            # (validating ~1,000 rows per chunk was a tenth of the fetcher's CPU per
            # response, benchmarks/bench_fetcher.py). They keep their dates as the
            # pivots made them; only the encoding (``shared.messages.encode``) turns them
            # into text.
            return RowBatch.model_construct(
                job_id=job_id,
                account_id=account_id,
                listing_id=listing_id,
                table=table,
                chunk_no=chunk_no,
                scrape_day=scrape_day,
                rows=chunk,
            )

        envelope = len(encode(batch(_CHUNK_NO_BOUND, [])))
        budget = max_bytes - envelope
        if budget <= 0:
            raise ChunkTooLargeError(f"a chunk limit of {max_bytes} bytes leaves no room for rows")
        for chunk_no, chunk in enumerate(chunk_rows(rows, budget)):
            batches.append(batch(chunk_no, chunk))
    return batches


def published_result(
    *,
    job_id: uuid.UUID,
    account_id: str,
    listing: Listing,
    tables: Mapping[TableName, Sequence[Row]],
    batches: Sequence[RowBatch],
) -> ListingResult:
    """The ListingResult announcing every chunk (and row) of every table, zeros included."""
    chunks = dict.fromkeys(TABLE_NAMES, 0)
    for b in batches:
        chunks[b.table] += 1
    return ListingResult(
        job_id=job_id,
        account_id=account_id,
        listing_id=listing.listing_id,
        internal_name=listing.internal_name,
        listing_name=listing.listing_name,
        status="published",
        chunks=chunks,
        rows={table: len(tables.get(table, ())) for table in TABLE_NAMES},
    )


def failed_result(
    *, job_id: uuid.UUID, account_id: str, listing: Listing, reason: str
) -> ListingResult:
    return ListingResult(
        job_id=job_id,
        account_id=account_id,
        listing_id=listing.listing_id,
        internal_name=listing.internal_name,
        listing_name=listing.listing_name,
        status="failed",
        error=clip_reason(reason),
    )
