"""Pivots: exact table columns, the Must-show numbers of the captures, extra_metrics."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.airbnb.flatteners import (
    ChartPoint,
    MetricValue,
    flatten_chart_points,
    flatten_metric_units,
)
from shared.airbnb.pivots import (
    count_extra_metrics,
    pivot_chart_query,
    pivot_chart_summary,
    pivot_list_of_metrics,
    scrape_time,
)
from shared.airbnb.windows import DateRange
from shared.metric_tables import CHART_QUERY, CHART_SUMMARY, LIST_OF_METRICS, SUMMARY_METRICS

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "airbnb-captures"
SCRAPED_AT = datetime(2025, 7, 11, tzinfo=UTC)
SLICE = DateRange(date(2025, 1, 11), date(2025, 2, 7))
WHO: dict[str, Any] = {"account_id": "42", "listing_id": "1001", "internal_name": "Loft"}
D1, D2 = date(2025, 1, 12), date(2025, 1, 13)


@pytest.fixture
def capture() -> Callable[[str], Any]:
    def load(name: str) -> Any:
        path = CAPTURES / f"{name}.json"
        if not path.is_file():
            pytest.skip(f"real Airbnb capture {path} is absent (captures live outside the repo)")
        return orjson.loads(path.read_bytes())

    return load


def _rename_component_metric(resp: Any, key: str, index: int | None, name: str) -> Any:
    resp = copy.deepcopy(resp)
    component = resp["data"]["porygon"]["getPerformanceComponents"]["components"][0]
    unit = component[key] if index is None else component[key][index]
    unit["metricName"] = name
    return resp


# --- chart_query -------------------------------------------------------------------


def test_chart_query_rows_have_exactly_the_table_columns() -> None:
    points: list[ChartPoint] = [
        ("conversion_rate", "your", D2, 0.5, "50%"),
        ("conversion_rate", "your", D1, None, "-"),
        ("p3_impressions", "similar", D1, 7, "7"),
    ]
    rows = pivot_chart_query(points, scraped_at=SCRAPED_AT, **WHO)
    assert [r["metric_date"] for r in rows] == [D1, D2]
    for row in rows:
        assert tuple(row) == CHART_QUERY.column_names
        assert row["account_id"] == "42" and row["airbnb_listing_id"] == "1001"
        assert row["airbnb_internal_name"] == "Loft" and row["time"] == SCRAPED_AT
        assert row["extra_metrics"] == {}
    first, second = rows
    assert (first["conversion_rate_your_value"], first["conversion_rate_your_value_string"]) == (
        None,
        "-",
    )
    assert first["p3_impressions_similar_value"] == 7
    assert first["p3_impressions_your_value"] is None
    assert first["conversion_rate_similar_value_string"] is None
    assert second["conversion_rate_your_value"] == 0.5
    assert second["p3_impressions_similar_value"] is None


def test_chart_query_extra_metrics_are_kept_per_row() -> None:
    points: list[ChartPoint] = [
        ("mystery", "your", D1, 1.5, "1.5"),
        ("mystery", "similar", D1, 2.5, "2.5"),
        ("p3_impressions", "your", D2, 3, "3"),
    ]
    rows = pivot_chart_query(points, scraped_at=SCRAPED_AT, **WHO)
    assert rows[0]["extra_metrics"] == {
        "mystery": {
            "your_value": 1.5,
            "your_value_string": "1.5",
            "similar_value": 2.5,
            "similar_value_string": "2.5",
        }
    }
    # Each row owns its dict: filling one must not leak into the next.
    assert rows[1]["extra_metrics"] == {}
    assert count_extra_metrics(rows) == 1
    orjson.dumps(rows[0]["extra_metrics"])


def test_integral_doubles_of_count_metrics_become_ints() -> None:
    points: list[ChartPoint] = [
        ("p3_impressions", "your", D1, 460.0, "460"),
        ("conversion_rate", "your", D1, 1.0, "100%"),
    ]
    (row,) = pivot_chart_query(points, scraped_at=SCRAPED_AT, **WHO)
    assert type(row["p3_impressions_your_value"]) is int
    assert type(row["conversion_rate_your_value"]) is float


def test_no_points_no_rows() -> None:
    assert pivot_chart_query([], scraped_at=SCRAPED_AT, **WHO) == []


@pytest.mark.parametrize(
    "bad",
    [
        datetime(2025, 7, 11),  # naive
        datetime(2025, 7, 11, 5, tzinfo=UTC),  # not midnight
        datetime(2025, 7, 11, tzinfo=timezone(timedelta(hours=2))),  # local midnight
    ],
)
def test_scraped_at_must_be_midnight_utc(bad: datetime) -> None:
    with pytest.raises(ValueError, match="midnight UTC"):
        pivot_chart_query([], scraped_at=bad, **WHO)
    with pytest.raises(ValueError, match="midnight UTC"):
        pivot_chart_summary([], slice=SLICE, scraped_at=bad, **WHO)
    with pytest.raises(ValueError, match="midnight UTC"):
        pivot_list_of_metrics([], slice=SLICE, scraped_at=bad, **WHO)


def test_scrape_time() -> None:
    assert scrape_time(date(2024, 2, 29)) == datetime(2024, 2, 29, tzinfo=UTC)
    assert scrape_time(date(2024, 2, 29)).utcoffset() == timedelta(0)


# --- chart_summary and list_of_metrics -----------------------------------------------


def test_chart_summary_row() -> None:
    values: list[MetricValue] = [
        ("p3_impressions", 460, "460", 222.0, "222"),
        ("search_conversion_rate", None, "-", None, None),
        ("occupancy_rate", 0.5, "50%", 0.1, "+10%"),
    ]
    row = pivot_chart_summary(values, slice=SLICE, scraped_at=SCRAPED_AT, **WHO)
    assert tuple(row) == CHART_SUMMARY.column_names
    assert (row["window_start"], row["window_end"]) == (SLICE.start, SLICE.end)
    assert row["p3_impressions_value"] == 460 and row["p3_impressions_value_change"] == 222.0
    assert row["p3_impressions_value_change_string"] == "222"
    assert row["search_conversion_rate_value"] is None
    assert row["search_conversion_rate_value_string"] == "-"
    assert row["p2_impressions_value"] is None
    assert row["extra_metrics"] == {
        "occupancy_rate": {
            "value": 0.5,
            "value_string": "50%",
            "value_change": 0.1,
            "value_change_string": "+10%",
        }
    }
    assert count_extra_metrics([row]) == 1


def test_list_of_metrics_row() -> None:
    values: list[MetricValue] = [
        ("conversion_rate", 0.25, "25%", None, None),
        ("p2_impressions", 8166.0, "8166", None, None),
        ("brand_new", 3, "3", None, None),
    ]
    row = pivot_list_of_metrics(values, slice=SLICE, scraped_at=SCRAPED_AT, **WHO)
    assert tuple(row) == LIST_OF_METRICS.column_names
    assert row["conversion_rate_value"] == 0.25 and row["conversion_rate_value_string"] == "25%"
    assert row["p2_impressions_value"] == 8166 and type(row["p2_impressions_value"]) is int
    assert row["p3_impressions_value"] is None
    assert set(row["extra_metrics"]) == {"brand_new"}
    empty = pivot_list_of_metrics([], slice=SLICE, scraped_at=SCRAPED_AT, **WHO)
    assert empty["extra_metrics"] == {} and empty["extra_metrics"] is not row["extra_metrics"]
    assert count_extra_metrics([row, empty]) == 1


# --- the Must-show numbers on the real captures ------------------------------------


def test_chart_query_rows_from_the_capture(capture: Callable[[str], Any]) -> None:
    points = flatten_chart_points(capture("ChartQuery_CONVERSION_p3_impressions"))
    rows = pivot_chart_query(points, scraped_at=SCRAPED_AT, **WHO)
    assert len(rows) == 28
    assert rows[0]["metric_date"] == date(2025, 1, 12)
    assert rows[-1]["metric_date"] == date(2025, 2, 8)
    assert rows[0]["p3_impressions_your_value"] == 15
    assert rows[0]["p3_impressions_your_value_string"] == "15"
    assert all(r["p3_impressions_similar_value"] is not None for r in rows)
    assert all(r["conversion_rate_your_value"] is None for r in rows)
    assert count_extra_metrics(rows) == 0


def test_both_charts_of_a_slice_merge_into_one_row_per_day(capture: Callable[[str], Any]) -> None:
    points = [
        *flatten_chart_points(capture("ChartQuery_CONVERSION_conversion_rate")),
        *flatten_chart_points(capture("ChartQuery_CONVERSION_p3_impressions")),
    ]
    rows = pivot_chart_query(points, scraped_at=SCRAPED_AT, **WHO)
    assert len(rows) == 28
    assert all(v is not None for r in rows for k, v in r.items() if k != "extra_metrics")


def test_chart_summary_from_the_capture(capture: Callable[[str], Any]) -> None:
    values = [
        *flatten_metric_units(capture("ChartQuery_CONVERSION_conversion_rate")),
        *flatten_metric_units(capture("ChartQuery_CONVERSION_p3_impressions")),
    ]
    row = pivot_chart_summary(values, slice=SLICE, scraped_at=SCRAPED_AT, **WHO)
    assert row["p3_impressions_value"] == 460
    assert row["p3_impressions_value_change"] == 222
    assert row["conversion_rate_value"] == 0.0011021307861866275
    # All six metrics of the table come from the two ChartQuery requests of a slice.
    assert all(row[f"{m}_value"] is not None for m in SUMMARY_METRICS)
    assert row["extra_metrics"] == {}


def test_list_of_metrics_from_the_capture(capture: Callable[[str], Any]) -> None:
    values = [
        *flatten_metric_units(capture("ListOfMetricsQuery_CONVERSION_conversion_rate")),
        *flatten_metric_units(capture("ListOfMetricsQuery_CONVERSION_p3_impressions")),
    ]
    row = pivot_list_of_metrics(values, slice=SLICE, scraped_at=SCRAPED_AT, **WHO)
    assert row["conversion_rate_value"] == 0.0011021307861866275
    assert row["conversion_rate_value_string"] == "0.11%"
    assert row["p3_impressions_value"] == 460
    assert all(row[f"{m}_value"] is not None for m in SUMMARY_METRICS)


def test_unknown_metrics_from_the_capture_land_in_extra_metrics(
    capture: Callable[[str], Any],
) -> None:
    chart = capture("ChartQuery_CONVERSION_p3_impressions")
    renamed = _rename_component_metric(chart, "secondaryMetrics", 0, "p9_mystery")
    row = pivot_chart_summary(
        flatten_metric_units(renamed), slice=SLICE, scraped_at=SCRAPED_AT, **WHO
    )
    assert row["p2_impressions_value"] is None
    mystery = row["extra_metrics"]["p9_mystery"]
    assert type(mystery["value"]) is int and mystery["value_string"] == str(mystery["value"])
    assert count_extra_metrics([row]) == 1

    primary = _rename_component_metric(chart, "primaryMetric", None, "p9_mystery")
    rows = pivot_chart_query(flatten_chart_points(primary), scraped_at=SCRAPED_AT, **WHO)
    assert len(rows) == 28
    assert rows[0]["p3_impressions_your_value"] is None
    assert rows[0]["extra_metrics"]["p9_mystery"]["your_value"] == 15
    assert count_extra_metrics(rows) == 28

    metrics = capture("ListOfMetricsQuery_CONVERSION_conversion_rate")
    renamed_list = _rename_component_metric(metrics, "metrics", 0, "p9_mystery")
    row = pivot_list_of_metrics(
        flatten_metric_units(renamed_list), slice=SLICE, scraped_at=SCRAPED_AT, **WHO
    )
    assert row["conversion_rate_value"] is None
    assert row["extra_metrics"]["p9_mystery"]["value_string"] == "0.11%"
