"""Request bodies match the captured envelope; the poll plan covers every slice and metric."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

import orjson
import pytest

from shared.airbnb.errors import WindowError
from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION
from shared.airbnb.payloads import (
    DEFAULT_POLL_SET,
    PlannedRequest,
    PollSpec,
    chart_payload,
    list_of_metrics_payload,
    listings_section_payload,
    plan_listing_requests,
)
from shared.airbnb.windows import DateRange, sync_window

TODAY = date(2025, 7, 11)
CAPTURED_SLICE = DateRange(date(2025, 1, 11), date(2025, 2, 7))
LISTING = "123456789012345678"


def _envelope(operation: str, client: str, sha: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationName": operation,
        "locale": "en",
        "currency": "USD",
        "variables": {
            "request": {"clientName": client, "arguments": arguments, "useStubbedData": False}
        },
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}},
    }


def test_chart_payload_is_the_captured_request() -> None:
    # The example request of the captures README, key for key and in the same order.
    expected = _envelope(
        "ChartQuery",
        "web-performance-dash-chart",
        "aa6e318cc066bbf19511b86acdce32fc59219d8596448b861d794491f46631c5",
        {
            "relativeDsStart": -178,
            "relativeDsEnd": -151,
            "filters": {"listingIds": [LISTING]},
            "metricType": "CONVERSION",
            "groupBys": ["RATING_CATEGORY"],
            "groupByValues": ["p3_impressions"],
            "metricComparisonType": "MARKET",
        },
    )
    body = chart_payload(LISTING, CAPTURED_SLICE, TODAY, "p3_impressions")
    assert body == expected
    assert orjson.dumps(body) == orjson.dumps(expected)


def test_list_of_metrics_payload_has_no_comparison() -> None:
    body = list_of_metrics_payload(LISTING, CAPTURED_SLICE, TODAY, "conversion_rate")
    assert body == _envelope(
        "ListOfMetricsQuery",
        "web-performance-dash-metrics",
        "b22a5ded5e6c6d168f1d224b78f34182e7366e5cc65203ec04f1e718286a09e1",
        {
            "relativeDsStart": -178,
            "relativeDsEnd": -151,
            "filters": {"listingIds": [LISTING]},
            "metricType": "CONVERSION",
            "groupBys": ["RATING_CATEGORY"],
            "groupByValues": ["conversion_rate"],
        },
    )


def test_listings_section_payload_has_no_window_and_no_filters() -> None:
    assert listings_section_payload() == _envelope(
        "ListingsSectionQuery",
        "web-performance-dash-listings",
        "7a646c07b45ad35335b2cde4842e5c5bf69ccebde508b2ba60276832bfb1816b",
        {
            "metricType": "CONVERSION",
            "groupBys": ["RATING_CATEGORY"],
            "groupByValues": ["occupancy_rate"],
        },
    )


def test_payload_options_and_int_listing_ids() -> None:
    body = chart_payload(123, CAPTURED_SLICE, TODAY, "conversion_rate", "REVENUE", "YOY")  # type: ignore[arg-type]
    arguments = body["variables"]["request"]["arguments"]
    assert arguments["filters"] == {"listingIds": ["123"]}
    assert arguments["metricType"] == "REVENUE"
    assert arguments["metricComparisonType"] == "YOY"


def test_payloads_are_fresh_objects() -> None:
    # The client may mutate a body (e.g. add a header-derived field); nothing may leak.
    first = chart_payload(LISTING, CAPTURED_SLICE, TODAY, "p3_impressions")
    first["variables"]["request"]["arguments"]["groupBys"].append("X")
    second = chart_payload(LISTING, CAPTURED_SLICE, TODAY, "p3_impressions")
    assert second["variables"]["request"]["arguments"]["groupBys"] == ["RATING_CATEGORY"]


def test_payloads_refuse_slices_past_the_horizon() -> None:
    past = DateRange(date(2026, 1, 1), date(2026, 1, 10))  # today + 183
    with pytest.raises(WindowError, match="2026-01-10"):
        chart_payload(LISTING, past, TODAY, "p3_impressions")
    with pytest.raises(WindowError):
        list_of_metrics_payload(LISTING, past, TODAY, "p3_impressions")
    edge = DateRange(date(2026, 1, 1), date(2026, 1, 9))
    arguments = chart_payload(LISTING, edge, TODAY, "p3_impressions")["variables"]["request"][
        "arguments"
    ]
    assert arguments["relativeDsEnd"] == 185
    with pytest.raises(WindowError):
        chart_payload(LISTING, edge, TODAY, "p3_impressions", max_days_ahead=100)


def test_default_poll_set() -> None:
    chart, metrics = DEFAULT_POLL_SET
    assert (chart.operation, chart.slice_days, chart.comparison) == (CHART, 28, "MARKET")
    assert (metrics.operation, metrics.slice_days) == (LIST_OF_METRICS, 7)
    for spec in DEFAULT_POLL_SET:
        assert spec.group_by_values == ("conversion_rate", "p3_impressions")
        assert spec.metric_type == "CONVERSION"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operation": LISTINGS_SECTION, "slice_days": 7, "group_by_values": ("x",)},
        {"operation": CHART, "slice_days": 0, "group_by_values": ("x",)},
        {"operation": CHART, "slice_days": 7, "group_by_values": ()},
    ],
)
def test_poll_spec_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PollSpec(**kwargs)


def test_plan_listing_requests_first_run() -> None:
    window = sync_window(TODAY, first_run=True)  # 217 days: 8 chart slices, 31 weeks
    plan = plan_listing_requests(LISTING, window, TODAY)
    assert all(isinstance(p, PlannedRequest) for p in plan)
    per_query = Counter(p.query.operation_name for p in plan)
    assert per_query == {"ChartQuery": 8 * 2, "ListOfMetricsQuery": 31 * 2}

    chart = [p for p in plan if p.query == CHART]
    # Both metrics of one slice are adjacent, so the caller can pivot slice by slice.
    assert [(p.slice.start, p.group_by_value) for p in chart[:4]] == [
        (window.start, "conversion_rate"),
        (window.start, "p3_impressions"),
        (date(2025, 2, 9), "conversion_rate"),
        (date(2025, 2, 9), "p3_impressions"),
    ]
    assert chart[-1].slice.end == window.end and chart[-1].slice.days == 21
    for p in plan:
        arguments = p.body["variables"]["request"]["arguments"]
        assert p.body["operationName"] == p.query.operation_name
        assert arguments["groupByValues"] == [p.group_by_value]
        assert arguments["relativeDsStart"] == (p.slice.start - TODAY).days + 3
        assert arguments["relativeDsEnd"] == (p.slice.end - TODAY).days + 3
        assert ("metricComparisonType" in arguments) == (p.query == CHART)
    covered = sorted({p.slice for p in plan if p.query == LIST_OF_METRICS}, key=lambda s: s.start)
    assert covered[0].start == window.start and covered[-1].end == window.end


def test_plan_with_a_custom_poll_set() -> None:
    window = DateRange(date(2025, 7, 6), date(2025, 7, 19))
    spec = PollSpec(LIST_OF_METRICS, 14, ("p2_impressions",), metric_type="REVENUE")
    (only,) = plan_listing_requests(LISTING, window, TODAY, (spec,))
    assert only.slice == window and only.group_by_value == "p2_impressions"
    assert only.body["variables"]["request"]["arguments"]["metricType"] == "REVENUE"


def test_plan_refuses_a_window_past_the_horizon() -> None:
    window = DateRange(date(2025, 12, 1), date(2026, 2, 1))
    with pytest.raises(WindowError):
        plan_listing_requests(LISTING, window, TODAY)


def test_a_planned_request_builds_the_same_body_each_time_it_is_asked() -> None:
    """Bodies are built when sent (PlannedRequest.body), not held from the plan on."""
    today = date(2026, 3, 1)
    plan = plan_listing_requests("42", DateRange(date(2026, 1, 1), date(2026, 2, 27)), today)
    first = plan[0]
    assert first.body == first.body and first.body is not first.body
    assert first.body == chart_payload(
        "42", first.slice, today, first.group_by_value, first.metric_type, first.comparison
    )
    assert not hasattr(first, "__dict__")  # slots: a few fields, no body kept
