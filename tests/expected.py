"""What the database must hold after a sync, computed from the simulator's ground truth.

Independent of the fetcher's flatteners and pivots: the numbers come straight
from ``services.simulator.data``, the slicing from the window rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from services.simulator import data as sim
from shared.airbnb.payloads import DEFAULT_POLL_SET
from shared.airbnb.windows import DateRange, slice_window
from shared.metric_tables import CHART_QUERY_METRICS, SUMMARY_METRICS

# The numeric columns compared per table (strings are checked by the flattener tests).
Key = tuple[Any, ...]


def _slice_days(operation_name: str) -> int:
    return next(
        s.slice_days for s in DEFAULT_POLL_SET if s.operation.operation_name == operation_name
    )


def _close(a: float | int | None, b: float | int | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


def expected_tables(
    seed: int,
    account_id: str,
    listing_ids: Iterable[str],
    scrape_day: dt.date,
    window: DateRange,
) -> dict[str, dict[Key, dict[str, float | int | None]]]:
    """table -> row key -> {numeric column: value} for one account's sync."""
    scraped = dt.datetime(scrape_day.year, scrape_day.month, scrape_day.day, tzinfo=dt.UTC)
    chart_query: dict[Key, dict[str, float | int | None]] = {}
    chart_summary: dict[Key, dict[str, float | int | None]] = {}
    list_of_metrics: dict[Key, dict[str, float | int | None]] = {}
    for listing_id in listing_ids:
        for sl in slice_window(window, _slice_days("ChartQuery")):
            for day in sim.window_truth(seed, [listing_id], sl.start, sl.end, scrape_day):
                row: dict[str, float | int] = {}
                for m in CHART_QUERY_METRICS:
                    row[f"{m}_your_value"] = day.your.value(m)
                    row[f"{m}_similar_value"] = day.similar.value(m)
                chart_query[(account_id, listing_id, day.day, scraped)] = row
            your, similar = sim.window_totals(seed, [listing_id], sl.start, sl.end, scrape_day)
            summary: dict[str, float | int | None] = {
                f"{m}_value": your.value(m) for m in SUMMARY_METRICS
            }
            for primary in ("p3_impressions", "conversion_rate"):
                # Airbnb compares with similar listings only where both sides have a value.
                comparable = your.has_value(primary) and similar.has_value(primary)
                summary[f"{primary}_value_change"] = (
                    float(your.value(primary)) - float(similar.value(primary))
                    if comparable
                    else None
                )
            chart_summary[(account_id, listing_id, sl.start, scraped)] = summary
        for sl in slice_window(window, _slice_days("ListOfMetricsQuery")):
            your, _ = sim.window_totals(seed, [listing_id], sl.start, sl.end, scrape_day)
            list_of_metrics[(account_id, listing_id, sl.start, scraped)] = {
                f"{m}_value": your.value(m) for m in SUMMARY_METRICS
            }
    return {
        "chart_query": chart_query,
        "chart_summary": chart_summary,
        "list_of_metrics": list_of_metrics,
    }


def differences(
    expected: dict[Key, dict[str, float | int | None]], actual: dict[Key, dict[str, Any]]
) -> list[str]:
    """Human-readable mismatches between expected rows and rows read from the database."""
    problems: list[str] = []
    missing = expected.keys() - actual.keys()
    extra = actual.keys() - expected.keys()
    if missing:
        problems.append(f"{len(missing)} rows missing, e.g. {sorted(missing)[:2]}")
    if extra:
        problems.append(f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:2]}")
    for key in expected.keys() & actual.keys():
        for column, value in expected[key].items():
            if not _close(actual[key][column], value):
                problems.append(f"{key} {column}: expected {value}, got {actual[key][column]}")
                if len(problems) > 10:
                    return problems
    return problems
