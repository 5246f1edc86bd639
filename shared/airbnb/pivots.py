"""Long records -> wide rows with exactly the columns of :mod:`shared.metric_tables`.

Every row carries every column of its table (``None`` where Airbnb gave no value) so
the writer can COPY rows without looking at them. A metric that has no column is
never dropped: it goes into the row's ``extra_metrics`` dict keyed by metric name,
and :func:`count_extra_metrics` counts such entries for the caller's metrics.

If the same metric arrives twice for one row (it should not), the last one wins.

These run on the fetcher's hot path, so each row starts as a copy of a prebuilt
all-``None`` template, column names come from lookup tables built at import, and the
long records (plain tuples, see :mod:`shared.airbnb.flatteners`) are unpacked, never
copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from shared.airbnb.flatteners import ChartPoint, MetricValue, Number
from shared.airbnb.windows import DateRange
from shared.metric_tables import (
    CHART_QUERY,
    CHART_QUERY_METRICS,
    CHART_SUMMARY,
    COUNT_METRICS,
    EXTRA_METRICS_COLUMN,
    LIST_OF_METRICS,
    SUMMARY_METRICS,
    MetricTable,
)

Row = dict[str, Any]


def _columns_exist(table: MetricTable, names: Iterable[str]) -> None:
    # Fails at import if metric_tables and these lookups ever disagree.
    missing = set(names) - set(table.column_names)
    if missing:
        raise RuntimeError(f"{table.name} has no columns {sorted(missing)}")


def _template(table: MetricTable) -> Row:
    return dict.fromkeys(table.column_names)


_CHART_QUERY_TEMPLATE = _template(CHART_QUERY)
_CHART_SUMMARY_TEMPLATE = _template(CHART_SUMMARY)
_LIST_OF_METRICS_TEMPLATE = _template(LIST_OF_METRICS)

# (metric, side) -> (value column, value_string column)
_CHART_QUERY_COLUMNS: dict[tuple[str, str], tuple[str, str]] = {
    (m, side): (f"{m}_{side}_value", f"{m}_{side}_value_string")
    for m in CHART_QUERY_METRICS
    for side in ("your", "similar")
}
# metric -> (value, value_string, value_change, value_change_string) columns
_SUMMARY_COLUMNS: dict[str, tuple[str, str, str, str]] = {
    m: (f"{m}_value", f"{m}_value_string", f"{m}_value_change", f"{m}_value_change_string")
    for m in SUMMARY_METRICS
}
_LIST_COLUMNS: dict[str, tuple[str, str]] = {
    m: (f"{m}_value", f"{m}_value_string") for m in SUMMARY_METRICS
}

_columns_exist(CHART_QUERY, (c for pair in _CHART_QUERY_COLUMNS.values() for c in pair))
_columns_exist(CHART_SUMMARY, (c for cols in _SUMMARY_COLUMNS.values() for c in cols))
_columns_exist(LIST_OF_METRICS, (c for pair in _LIST_COLUMNS.values() for c in pair))


def scrape_time(day: date) -> datetime:
    """The ``time`` of every row scraped on ``day``: midnight UTC (row identity, DESIGN.md)."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def _check_scraped_at(scraped_at: datetime) -> None:
    # ``time`` is part of the row key: a local or non-midnight value would make a
    # re-run write new rows instead of overwriting the old ones.
    if scraped_at.tzinfo is None or scraped_at != scrape_time(scraped_at.date()):
        raise ValueError(f"scraped_at must be midnight UTC, got {scraped_at.isoformat()}")


def _count_value(metric: str, value: Number | None) -> Number | None:
    # Count columns are bigint; an integral double (e.g. 460.0) would fail the COPY.
    if type(value) is float and metric in COUNT_METRICS and value.is_integer():
        return int(value)
    return value


def _add_chart_extra(
    row: Row, metric: str, side: str, value: Number | None, value_string: str | None
) -> None:
    extra = row[EXTRA_METRICS_COLUMN].setdefault(
        metric,
        {
            "your_value": None,
            "your_value_string": None,
            "similar_value": None,
            "similar_value_string": None,
        },
    )
    extra[f"{side}_value"] = value
    extra[f"{side}_value_string"] = value_string


def pivot_chart_query(
    points: Iterable[ChartPoint],
    *,
    account_id: str,
    listing_id: str,
    internal_name: str | None,
    scraped_at: datetime,
) -> list[Row]:
    """``chart_query`` rows, one per ``ds``, merging every chart of one listing and slice.

    Pass the points of both ChartQuery requests of a slice (conversion_rate and
    p3_impressions) together so each day becomes one row. Rows come sorted by date.
    """
    _check_scraped_at(scraped_at)
    base = _CHART_QUERY_TEMPLATE.copy()
    base["account_id"] = account_id
    base["airbnb_listing_id"] = listing_id
    base["time"] = scraped_at
    base["airbnb_internal_name"] = internal_name
    copy = base.copy
    rows: dict[date, Row] = {}
    # Points arrive chart by chart, so the column lookup is redone only when the
    # (metric, side) changes; identity checks suffice since it is only a cache.
    last_metric: str | None = None
    last_side: str | None = None
    cols: tuple[str, str] | None = None
    is_count = False
    for metric, side, ds, value, value_string in points:
        row = rows.get(ds)
        if row is None:
            row = rows[ds] = copy()
            row["metric_date"] = ds
            row[EXTRA_METRICS_COLUMN] = {}
        if metric is not last_metric or side is not last_side:
            last_metric, last_side = metric, side
            cols = _CHART_QUERY_COLUMNS.get((metric, side))
            is_count = metric in COUNT_METRICS
        if cols is None:
            _add_chart_extra(row, metric, side, value, value_string)
            continue
        if is_count and type(value) is float and value.is_integer():
            value = int(value)
        row[cols[0]] = value
        row[cols[1]] = value_string
    return [rows[ds] for ds in sorted(rows)]


def _window_row(
    template: Row,
    account_id: str,
    listing_id: str,
    internal_name: str | None,
    slice: DateRange,
    scraped_at: datetime,
) -> Row:
    _check_scraped_at(scraped_at)
    row = template.copy()
    row["account_id"] = account_id
    row["airbnb_listing_id"] = listing_id
    row["window_start"] = slice.start
    row["window_end"] = slice.end
    row["time"] = scraped_at
    row["airbnb_internal_name"] = internal_name
    row[EXTRA_METRICS_COLUMN] = {}
    return row


def _fill_metric_units(
    row: Row, metric_values: Iterable[MetricValue], columns: Mapping[str, tuple[str, ...]]
) -> Row:
    """Set each known metric's columns (value, string[, change, change string]) in order;
    a table without change columns (two columns per metric) drops the change."""
    extra = row[EXTRA_METRICS_COLUMN]
    for metric, value, value_string, change, change_string in metric_values:
        cols = columns.get(metric)
        if cols is None:
            extra[metric] = {
                "value": value,
                "value_string": value_string,
                "value_change": change,
                "value_change_string": change_string,
            }
            continue
        row[cols[0]] = _count_value(metric, value)
        row[cols[1]] = value_string
        if len(cols) == 4:
            row[cols[2]] = change
            row[cols[3]] = change_string
    return row


def pivot_chart_summary(
    metric_values: Iterable[MetricValue],
    *,
    account_id: str,
    listing_id: str,
    internal_name: str | None,
    slice: DateRange,
    scraped_at: datetime,
) -> Row:
    """The ``chart_summary`` row of one listing and slice.

    Pass the primary and secondary metrics of both ChartQuery requests of the slice;
    ``window_start``/``window_end`` are the slice that was requested.
    """
    row = _window_row(
        _CHART_SUMMARY_TEMPLATE, account_id, listing_id, internal_name, slice, scraped_at
    )
    return _fill_metric_units(row, metric_values, _SUMMARY_COLUMNS)


def pivot_list_of_metrics(
    metric_values: Iterable[MetricValue],
    *,
    account_id: str,
    listing_id: str,
    internal_name: str | None,
    slice: DateRange,
    scraped_at: datetime,
) -> Row:
    """The ``list_of_metrics`` row of one listing and slice, from both ListOfMetricsQuery requests.

    The table has no change columns: a known metric's ``valueChange`` (null in every
    capture) is not kept, while an unknown metric keeps all four fields in extra_metrics.
    """
    row = _window_row(
        _LIST_OF_METRICS_TEMPLATE, account_id, listing_id, internal_name, slice, scraped_at
    )
    return _fill_metric_units(row, metric_values, _LIST_COLUMNS)


def count_extra_metrics(rows: Iterable[Mapping[str, Any]]) -> int:
    """How many (row, metric) values landed in ``extra_metrics`` instead of a column."""
    return sum(len(row[EXTRA_METRICS_COLUMN]) for row in rows)
