"""The three metrics tables: their keys and the column rule of DESIGN.md, in one place.

The pivots build rows with exactly these columns, the writer upserts them, the
export reads them, and a test checks that the migrations created them. Airbnb
metrics that are not listed here land in the row's ``extra_metrics`` JSONB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TableName = Literal["chart_query", "chart_summary", "list_of_metrics"]
TABLE_NAMES: tuple[TableName, ...] = ("chart_query", "chart_summary", "list_of_metrics")

SCHEMA = "airbnb"

CHART_QUERY_METRICS: tuple[str, ...] = ("conversion_rate", "p3_impressions")
SUMMARY_METRICS: tuple[str, ...] = (
    "conversion_rate",
    "search_conversion_rate",
    "listing_conversion_rate",
    "p2_impressions_first_page_rate",
    "p3_impressions",
    "p2_impressions",
)
# Airbnb sends these as longValue (integer counts); every other metric is a ratio.
COUNT_METRICS: frozenset[str] = frozenset({"p3_impressions", "p2_impressions"})

EXTRA_METRICS_COLUMN = "extra_metrics"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    sql_type: str


@dataclass(frozen=True, slots=True)
class MetricTable:
    name: TableName
    key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def metric_columns(self) -> tuple[str, ...]:
        fixed = {*self.key, "window_end", "airbnb_internal_name", EXTRA_METRICS_COLUMN}
        return tuple(c.name for c in self.columns if c.name not in fixed)

    @property
    def qualified_name(self) -> str:
        return f"{SCHEMA}.{self.name}"


def _value_type(metric: str) -> str:
    return "bigint" if metric in COUNT_METRICS else "double precision"


def _chart_query_columns() -> list[ColumnSpec]:
    cols: list[ColumnSpec] = []
    for m in CHART_QUERY_METRICS:
        for side in ("your", "similar"):
            cols.append(ColumnSpec(f"{m}_{side}_value", _value_type(m)))
            cols.append(ColumnSpec(f"{m}_{side}_value_string", "text"))
    return cols


def _summary_columns(with_change: bool) -> list[ColumnSpec]:
    cols: list[ColumnSpec] = []
    for m in SUMMARY_METRICS:
        cols.append(ColumnSpec(f"{m}_value", _value_type(m)))
        cols.append(ColumnSpec(f"{m}_value_string", "text"))
        if with_change:
            cols.append(ColumnSpec(f"{m}_value_change", "double precision"))
            cols.append(ColumnSpec(f"{m}_value_change_string", "text"))
    return cols


_IDENTITY = [
    ColumnSpec("account_id", "text"),
    ColumnSpec("airbnb_listing_id", "text"),
]
_TIME = ColumnSpec("time", "timestamptz")
_NAME = ColumnSpec("airbnb_internal_name", "text")
_EXTRA = ColumnSpec(EXTRA_METRICS_COLUMN, "jsonb")
_WINDOW = [ColumnSpec("window_start", "date"), _TIME, ColumnSpec("window_end", "date")]

CHART_QUERY = MetricTable(
    name="chart_query",
    key=("account_id", "airbnb_listing_id", "metric_date", "time"),
    columns=(
        *_IDENTITY,
        ColumnSpec("metric_date", "date"),
        _TIME,
        _NAME,
        *_chart_query_columns(),
        _EXTRA,
    ),
)
CHART_SUMMARY = MetricTable(
    name="chart_summary",
    key=("account_id", "airbnb_listing_id", "window_start", "time"),
    columns=(*_IDENTITY, *_WINDOW, _NAME, *_summary_columns(with_change=True), _EXTRA),
)
LIST_OF_METRICS = MetricTable(
    name="list_of_metrics",
    key=("account_id", "airbnb_listing_id", "window_start", "time"),
    columns=(*_IDENTITY, *_WINDOW, _NAME, *_summary_columns(with_change=False), _EXTRA),
)

METRIC_TABLES: dict[TableName, MetricTable] = {
    t.name: t for t in (CHART_QUERY, CHART_SUMMARY, LIST_OF_METRICS)
}
