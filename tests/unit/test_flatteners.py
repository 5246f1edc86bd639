"""Flatteners on the real captures and on hand-built responses, including malformed ones."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.airbnb.errors import MalformedResponseError
from shared.airbnb.flatteners import (
    ChartPoint,
    Listing,
    ListingsPage,
    flatten_chart_points,
    flatten_listings,
    flatten_listings_page,
    flatten_metric_units,
)

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "airbnb-captures"
COMPONENT = "data.porygon.getPerformanceComponents.components[0]"


@pytest.fixture
def capture() -> Callable[[str], Any]:
    def load(name: str) -> Any:
        path = CAPTURES / f"{name}.json"
        if not path.is_file():
            pytest.skip(f"real Airbnb capture {path} is absent (captures live outside the repo)")
        return orjson.loads(path.read_bytes())

    return load


def _unit(metric: str, wrapper: Any, string: str | None, **extra: Any) -> dict[str, Any]:
    return {"metricName": metric, "value": wrapper, "valueString": string, **extra}


def _response(component: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"porygon": {"getPerformanceComponents": {"components": [component]}}}}


def _chart_response(days: int = 3) -> dict[str, Any]:
    start = date(2025, 1, 12)

    def points(offset: int) -> list[dict[str, Any]]:
        return [
            {
                "ds": (start + timedelta(days=i)).isoformat(),
                "value": {"longValue": str(i + offset)},
                "valueString": str(i + offset),
            }
            for i in range(days)
        ]

    return _response(
        {
            "metricLineCharts": [
                {"label": "Your performance", "dataPoints": points(0)},
                {"label": "Similar listings", "dataPoints": points(100)},
            ],
            "primaryMetric": _unit(
                "p3_impressions", {"longValue": "3"}, "3", valueChange=None, valueChangeString=None
            ),
            "secondaryMetrics": [_unit("p2_impressions", {"longValue": "9"}, "9")],
        }
    )


# --- the real captures -------------------------------------------------------------


def test_listings_from_the_capture(capture: Callable[[str], Any]) -> None:
    resp = capture("ListingsSectionQuery")
    listings = flatten_listings(resp)
    assert len(listings) == 7
    # Compared with the capture read at test time: its ids and names stay out of the repo.
    rows = resp["data"]["porygon"]["getPerformanceComponents"]["components"][0]["tableRows"]
    assert listings == [Listing(r["id"], r["internalName"], r["listingName"]) for r in rows]
    assert all(listing.listing_id.isdigit() for listing in listings)
    assert len({listing.listing_id for listing in listings}) == 7


def test_the_capture_reports_as_many_listings_as_it_returns(
    capture: Callable[[str], Any],
) -> None:
    page = flatten_listings_page(capture("ListingsSectionQuery"))
    assert (len(page.listings), page.total_count, page.results_count) == (7, 7, 7)
    assert page.listings == flatten_listings(capture("ListingsSectionQuery"))


def test_listing_counts_are_read_and_may_be_absent_or_null() -> None:
    row = {"id": "1", "internalName": "a", "listingName": "A"}
    cut = flatten_listings_page(_response({"tableRows": [row], "totalCount": 9, "resultsCount": 1}))
    assert cut == ListingsPage([Listing("1", "a", "A")], 9, 1)
    bare = flatten_listings_page(_response({"tableRows": [row]}))
    assert (bare.total_count, bare.results_count) == (None, None)
    null = flatten_listings_page(_response({"tableRows": [], "totalCount": None}))
    assert null == ListingsPage([], None, None)


@pytest.mark.parametrize("bad", ["7", 7.0, True, -1, {"longValue": "7"}])
def test_a_count_that_is_not_a_plain_integer_names_the_path(bad: Any) -> None:
    with pytest.raises(MalformedResponseError) as err:
        flatten_listings_page(_response({"tableRows": [], "resultsCount": 0, "totalCount": bad}))
    assert err.value.path == f"{COMPONENT}.totalCount"
    assert repr(bad) in err.value.detail


def test_p3_impressions_chart_points(capture: Callable[[str], Any]) -> None:
    points = flatten_chart_points(capture("ChartQuery_CONVERSION_p3_impressions"))
    your = [p for p in points if p[1] == "your"]
    similar = [p for p in points if p[1] == "similar"]
    assert len(your) == len(similar) == 28
    assert {metric for metric, *_ in points} == {"p3_impressions"}
    # Airbnb's days are one off the requested 2025-01-11..2025-02-07; they are kept as sent.
    assert [ds for _, _, ds, _, _ in your] == [
        date(2025, 1, 12) + timedelta(days=i) for i in range(28)
    ]
    assert your[0] == ("p3_impressions", "your", date(2025, 1, 12), 15, "15")
    assert similar[0] == ("p3_impressions", "similar", date(2025, 1, 12), 6, "6")
    assert your[-1][2] == date(2025, 2, 8)
    assert all(type(value) is int for _, _, _, value, _ in points)


def test_conversion_rate_chart_points(capture: Callable[[str], Any]) -> None:
    points = flatten_chart_points(capture("ChartQuery_CONVERSION_conversion_rate"))
    assert len(points) == 56
    assert {metric for metric, *_ in points} == {"conversion_rate"}
    assert all(type(value) is float for _, _, _, value, _ in points)
    resp = capture("ChartQuery_CONVERSION_conversion_rate")
    raw = resp["data"]["porygon"]["getPerformanceComponents"]["components"][0]
    first_similar = raw["metricLineCharts"][1]["dataPoints"][0]
    _, _, _, value, value_string = next(p for p in points if p[1] == "similar")
    assert value == first_similar["value"]["doubleValue"]
    assert value_string == first_similar["valueString"]


def test_chart_metric_units(capture: Callable[[str], Any]) -> None:
    units = flatten_metric_units(capture("ChartQuery_CONVERSION_p3_impressions"))
    assert len(units) == 2
    assert units[0] == ("p3_impressions", 460, "460", 222.0, "222")
    metric, value, _, change, _ = units[1]
    assert metric == "p2_impressions" and type(value) is int
    assert change is None
    rates = flatten_metric_units(capture("ChartQuery_CONVERSION_conversion_rate"))
    assert [metric for metric, *_ in rates] == [
        "conversion_rate",
        "p2_impressions_first_page_rate",
        "search_conversion_rate",
        "listing_conversion_rate",
    ]
    _, value, value_string, change, change_string = rates[0]
    assert value == 0.0011021307861866275 and value_string == "0.11%"
    assert type(change) is float and change < 0
    assert change_string is not None


def test_list_of_metrics_units(capture: Callable[[str], Any]) -> None:
    units = flatten_metric_units(capture("ListOfMetricsQuery_CONVERSION_conversion_rate"))
    assert units[0] == ("conversion_rate", 0.0011021307861866275, "0.11%", None, None)
    assert len(units) == 4
    counts = flatten_metric_units(capture("ListOfMetricsQuery_CONVERSION_p3_impressions"))
    assert [(metric, value) for metric, value, *_ in counts] == [
        ("p3_impressions", 460),
        ("p2_impressions", 8166),
    ]


# --- hand-built responses ----------------------------------------------------------


def test_null_values_stay_none_with_their_string() -> None:
    resp = _chart_response()
    points = resp["data"]["porygon"]["getPerformanceComponents"]["components"][0][
        "metricLineCharts"
    ][0]["dataPoints"]
    points[0]["value"] = None
    points[0]["valueString"] = "-"
    points[1]["value"] = {"__typename": "porygonLongWrapper", "longValue": None}
    points[2]["value"] = {"doubleValue": 2}  # an integral JSON number is still a double
    flat = flatten_chart_points(resp)
    assert flat[0][3:] == (None, "-")
    assert flat[1][3] is None
    assert flat[2][3] == 2.0 and type(flat[2][3]) is float


def test_value_change_may_be_absent() -> None:
    resp = _response({"metrics": [_unit("conversion_rate", {"doubleValue": 0.5}, "50%")]})
    assert flatten_metric_units(resp) == [("conversion_rate", 0.5, "50%", None, None)]


def test_empty_charts_and_lists_flatten_to_nothing() -> None:
    resp = _chart_response(days=0)
    assert flatten_chart_points(resp) == []
    assert flatten_metric_units(_response({"metrics": []})) == []
    assert flatten_listings(_response({"tableRows": []})) == []


def test_chart_order_is_read_from_labels() -> None:
    resp = _chart_response()
    charts = resp["data"]["porygon"]["getPerformanceComponents"]["components"][0][
        "metricLineCharts"
    ]
    charts.reverse()
    flat = flatten_chart_points(resp)
    assert flat[0][1] == "similar" and flat[0][3] == 100


def test_numeric_listing_ids_become_strings() -> None:
    resp = _response({"tableRows": [{"id": 42, "internalName": None, "listingName": "x"}]})
    assert flatten_listings(resp) == [Listing("42", None, "x")]


def test_records_are_immutable_tuples_that_compare_by_value() -> None:
    (point, *_) = flatten_chart_points(_chart_response())
    built: ChartPoint = ("p3_impressions", "your", date(2025, 1, 12), 0, "0")
    assert type(point) is tuple
    assert point == built and hash(point) == hash(built) and repr(point) == repr(built)
    (unit, *_) = flatten_metric_units(_chart_response())
    assert type(unit) is tuple and unit == ("p3_impressions", 3, "3", None, None)


# --- malformed responses -----------------------------------------------------------


def _set(path: list[str | int], value: Any) -> Callable[[Any], None]:
    def mutate(resp: Any) -> None:
        node = resp
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return mutate


def _delete(path: list[str | int]) -> Callable[[Any], None]:
    def mutate(resp: Any) -> None:
        node = resp
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return mutate


_C: list[str | int] = ["data", "porygon", "getPerformanceComponents", "components", 0]

CHART_CASES = [
    (
        _delete([*_C, "metricLineCharts", 1, "dataPoints", 3, "ds"]),
        f"{COMPONENT}.metricLineCharts[1].dataPoints[3].ds",
        "missing",
    ),
    (
        _delete([*_C, "metricLineCharts", 0, "dataPoints", 0, "value"]),
        f"{COMPONENT}.metricLineCharts[0].dataPoints[0].value",
        "missing",
    ),
    (
        _delete([*_C, "metricLineCharts", 1, "dataPoints", 27, "valueString"]),
        f"{COMPONENT}.metricLineCharts[1].dataPoints[27].valueString",
        "missing",
    ),
    (
        _set([*_C, "metricLineCharts", 0, "dataPoints", 5, "ds"], "2025-13-01"),
        f"{COMPONENT}.metricLineCharts[0].dataPoints[5].ds",
        "not an ISO date",
    ),
    (
        _set([*_C, "metricLineCharts", 0, "dataPoints", 5, "ds"], None),
        f"{COMPONENT}.metricLineCharts[0].dataPoints[5].ds",
        "not an ISO date",
    ),
    (
        _set([*_C, "metricLineCharts", 0, "dataPoints", 2, "value", "longValue"], "1.5"),
        f"{COMPONENT}.metricLineCharts[0].dataPoints[2].value.longValue",
        "not an integer",
    ),
    (
        _set([*_C, "metricLineCharts", 0, "dataPoints", 2, "value"], {"__typename": "x"}),
        f"{COMPONENT}.metricLineCharts[0].dataPoints[2].value",
        "neither longValue nor doubleValue",
    ),
    (
        _set([*_C, "metricLineCharts", 0, "dataPoints", 2, "value"], "15"),
        f"{COMPONENT}.metricLineCharts[0].dataPoints[2].value",
        "got string",
    ),
    (
        _set([*_C, "metricLineCharts", 1, "dataPoints", 4], None),
        f"{COMPONENT}.metricLineCharts[1].dataPoints[4]",
        "expected an object, got null",
    ),
    (
        _set([*_C, "metricLineCharts", 1, "label"], "Over time"),
        f"{COMPONENT}.metricLineCharts[1].label",
        "unknown chart label 'Over time'",
    ),
    (
        _delete([*_C, "metricLineCharts", 1, "dataPoints"]),
        f"{COMPONENT}.metricLineCharts[1].dataPoints",
        "missing",
    ),
    (
        _set([*_C, "metricLineCharts"], {}),
        f"{COMPONENT}.metricLineCharts",
        "expected an array, got object",
    ),
    (_delete([*_C, "primaryMetric", "metricName"]), f"{COMPONENT}.primaryMetric.metricName", ""),
    (_set([*_C[:-1]], []), COMPONENT, "missing"),
    (
        _set(["data", "porygon", "getPerformanceComponents"], None),
        "data.porygon.getPerformanceComponents",
        "expected an object, got null",
    ),
    (_delete(["data"]), "data", "missing"),
]


@pytest.mark.parametrize(("mutate", "path", "detail"), CHART_CASES)
def test_malformed_chart_points_name_the_path(
    capture: Callable[[str], Any], mutate: Callable[[Any], None], path: str, detail: str
) -> None:
    resp = copy.deepcopy(capture("ChartQuery_CONVERSION_p3_impressions"))
    mutate(resp)
    with pytest.raises(MalformedResponseError) as err:
        flatten_chart_points(resp)
    assert err.value.path == path
    assert detail in err.value.detail
    assert path in str(err.value)


UNIT_CASES = [
    (
        "ChartQuery_CONVERSION_conversion_rate",
        _delete([*_C, "secondaryMetrics", 2, "valueString"]),
        f"{COMPONENT}.secondaryMetrics[2].valueString",
    ),
    (
        "ChartQuery_CONVERSION_p3_impressions",
        _set([*_C, "primaryMetric", "valueChange", "doubleValue"], "lots"),
        f"{COMPONENT}.primaryMetric.valueChange.doubleValue",
    ),
    (
        "ChartQuery_CONVERSION_p3_impressions",
        _delete([*_C, "secondaryMetrics"]),
        f"{COMPONENT}.secondaryMetrics",
    ),
    (
        "ChartQuery_CONVERSION_p3_impressions",
        _delete([*_C, "primaryMetric"]),
        f"{COMPONENT}.primaryMetric",
    ),
    (
        "ListOfMetricsQuery_CONVERSION_conversion_rate",
        _delete([*_C, "metrics", 1, "value"]),
        f"{COMPONENT}.metrics[1].value",
    ),
    (
        "ListOfMetricsQuery_CONVERSION_p3_impressions",
        _delete([*_C, "metrics", 0, "metricName"]),
        f"{COMPONENT}.metrics[0].metricName",
    ),
    (
        "ListOfMetricsQuery_CONVERSION_p3_impressions",
        _set([*_C, "metrics", 1, "value", "longValue"], True),
        f"{COMPONENT}.metrics[1].value.longValue",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "path"), UNIT_CASES)
def test_malformed_metric_units_name_the_path(
    capture: Callable[[str], Any], name: str, mutate: Callable[[Any], None], path: str
) -> None:
    resp = copy.deepcopy(capture(name))
    mutate(resp)
    with pytest.raises(MalformedResponseError) as err:
        flatten_metric_units(resp)
    assert err.value.path == path


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (_delete([*_C, "tableRows", 2, "id"]), f"{COMPONENT}.tableRows[2].id"),
        (_delete([*_C, "tableRows", 6, "internalName"]), f"{COMPONENT}.tableRows[6].internalName"),
        (_set([*_C, "tableRows", 0, "id"], None), f"{COMPONENT}.tableRows[0].id"),
        (_delete([*_C, "tableRows"]), f"{COMPONENT}.tableRows"),
    ],
)
def test_malformed_listings_name_the_path(
    capture: Callable[[str], Any], mutate: Callable[[Any], None], path: str
) -> None:
    resp = copy.deepcopy(capture("ListingsSectionQuery"))
    mutate(resp)
    with pytest.raises(MalformedResponseError) as err:
        flatten_listings(resp)
    assert err.value.path == path


def test_not_an_object_at_all() -> None:
    with pytest.raises(MalformedResponseError) as err:
        flatten_metric_units([])
    assert err.value.path == "<response>"
    assert "array" in err.value.detail
