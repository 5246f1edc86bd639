"""Airbnb-shaped response bodies, built from the truth in :mod:`services.simulator.data` (pure).

The shapes copy the captured responses key for key, in the same order, with the
same quirks: counts as ``longValue`` JSON strings, rates as ``doubleValue``
floats, ``__typename`` on every object, ``extensions.traceId`` on every body,
"-" as the text of a rate that has no value, and points dated one day after the
requested day. The trace id is a parameter so that these functions stay pure.

Every builder returns a :class:`Reply` (status, content type, headers, bytes);
the app only copies it into an ``aiohttp`` response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import orjson

from services.simulator.data import (
    COUNT_METRICS,
    Account,
    Counts,
    DailyTruth,
    Listing,
    listing_occupancy,
    requested_window,
    sum_counts,
    window_truth,
)
from services.simulator.faults import AuthForm
from services.simulator.protocol import LISTINGS_SECTION_METRIC, GraphQLRequest

JSON = "application/json"
HTML = "text/html"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    label: str
    value_type: str  # "NUMBER" or "PERCENTAGE", Airbnb's valueType


METRIC_SPECS: dict[str, MetricSpec] = {
    "p3_impressions": MetricSpec("Total page views", "NUMBER"),
    "p2_impressions": MetricSpec("Total first-page search impressions", "NUMBER"),
    "conversion_rate": MetricSpec("Overall conversion rate", "PERCENTAGE"),
    "p2_impressions_first_page_rate": MetricSpec("First-page search impression rate", "PERCENTAGE"),
    "search_conversion_rate": MetricSpec("Search-to-listing conversion", "PERCENTAGE"),
    "listing_conversion_rate": MetricSpec("Listing-to-booking conversion", "PERCENTAGE"),
}

# The metric asked for comes first, then the rest of its family, in the captures' order.
_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("p3_impressions", "p2_impressions"),
    (
        "conversion_rate",
        "p2_impressions_first_page_rate",
        "search_conversion_rate",
        "listing_conversion_rate",
    ),
)

YOUR_CHART_LABEL = "Your performance"
SIMILAR_CHART_LABEL = "Similar listings"
YOUR_POINT_LABEL = "Your listings"
SIMILAR_POINT_LABEL = "Similar listings"
HELP_URL = "https://www.airbnb.com/help/article/2652?locale=en"


def metric_family(metric: str) -> tuple[str, ...]:
    """``(primary, *secondaries)`` for a requested metric, as Airbnb groups them."""
    for family in _FAMILIES:
        if metric in family:
            return (metric, *(m for m in family if m != metric))
    raise KeyError(metric)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(payload), JSON, headers or {})


# -- value formatting -------------------------------------------------------------------------


def format_percent(rate: float) -> str:
    """Airbnb's UI text for a rate: "0.11%", "5.63%", but "69.9%" from 10% up."""
    pct = rate * 100
    return f"{pct:.2f}%" if abs(pct) < 10 else f"{pct:.1f}%"


def value_string(metric: str, counts: Counts) -> str:
    if metric in COUNT_METRICS:
        return str(counts.value(metric))
    if not counts.has_value(metric):
        return "-"
    return format_percent(float(counts.value(metric)))


def wrap(metric: str, value: int | float) -> dict[str, Any]:
    if metric in COUNT_METRICS:
        return {"__typename": "porygonLongWrapper", "longValue": str(int(value))}
    return {"__typename": "porygonDoubleWrapper", "doubleValue": float(value)}


def double_wrapper(value: float) -> dict[str, Any]:
    return {"__typename": "porygonDoubleWrapper", "doubleValue": float(value)}


def change_string(metric: str, change: float) -> str:
    return f"{change:.0f}" if metric in COUNT_METRICS else format_percent(change)


# -- bodies ---------------------------------------------------------------------------------


def envelope(component: dict[str, Any], trace_id: str) -> dict[str, Any]:
    return {
        "data": {
            "porygon": {
                "__typename": "porygonQuery",
                "getPerformanceComponents": {
                    "__typename": "porygonGetPerformanceComponentsResponse",
                    "components": [component],
                },
            }
        },
        "extensions": {"traceId": trace_id},
    }


def metric_unit(
    metric: str, counts: Counts, change: float | None = None, label: str | None = None
) -> dict[str, Any]:
    spec = METRIC_SPECS[metric]
    return {
        "__typename": "porygonPMetricUnit",
        "value": wrap(metric, counts.value(metric)),
        "valueType": spec.value_type,
        "valueChange": None if change is None else double_wrapper(change),
        "valueChangeType": spec.value_type,
        "valueString": value_string(metric, counts),
        "currency": None,
        "label": label or spec.label,
        "valueChangeString": None if change is None else change_string(metric, change),
        "metricName": metric,
    }


def data_point(metric: str, ds: date, counts: Counts, label: str | None) -> dict[str, Any]:
    return {
        "__typename": "porygonPDataPoint",
        "ds": ds.isoformat(),
        "value": wrap(metric, counts.value(metric)),
        "valueType": METRIC_SPECS[metric].value_type,
        "valueString": value_string(metric, counts),
        "label": label,
    }


def market_change(metric: str, your: Counts, similar: Counts) -> float | None:
    """Yours minus similar listings'; None when either rate has no value."""
    if not (your.has_value(metric) and similar.has_value(metric)):
        return None
    return float(your.value(metric)) - float(similar.value(metric))


def _description(metric: str, change: float | None) -> str:
    subject = f"The {METRIC_SPECS[metric].label.lower()} for selected listings"
    if change is None:
        return f"{subject} can't be compared with similar listings in the area yet."
    text = change_string(metric, abs(change))
    if text in {"0", "0.00%"}:
        return f"{subject} is the same as similar listings in the area."
    direction = "higher" if change > 0 else "lower"
    return f"{subject} is {text} {direction} than similar listings in the area."


def _extreme_point(
    metric: str,
    days: Sequence[DailyTruth],
    today: date,
    pick: Callable[..., DailyTruth],
) -> dict[str, Any]:
    # Airbnb dates both extremes the day before today whatever the window; copied as seen.
    counts = pick(days, key=lambda d: d.your.value(metric)).your if days else Counts()
    return data_point(metric, today - timedelta(days=1), counts, None)


def chart_component(metric: str, days: Sequence[DailyTruth], today: date) -> dict[str, Any]:
    """A MARKET-comparison PIVOT_CHART_SECTION over the given (already shifted) days."""
    primary, *secondaries = metric_family(metric)
    your = sum_counts(d.your for d in days)
    similar = sum_counts(d.similar for d in days)
    change = market_change(primary, your, similar)
    label = METRIC_SPECS[primary].label
    return {
        "__typename": "porygonPPivotChartSection",
        "title": label,
        "subtitle": "Compare",
        "comparisonTypeSelectors": [
            {
                "__typename": "porygonPComparisonTypeSelector",
                "label": "Over time",
                "type": "YOY",
                "isActive": False,
            },
            {
                "__typename": "porygonPComparisonTypeSelector",
                "label": "Similar listings",
                "type": "MARKET",
                "isActive": True,
            },
        ],
        "metricLineCharts": [
            {
                "__typename": "porygonPMetricLineChart",
                "dataPoints": [data_point(primary, d.day, d.your, YOUR_POINT_LABEL) for d in days],
                "label": YOUR_CHART_LABEL,
                "granularity": "DAY",
            },
            {
                "__typename": "porygonPMetricLineChart",
                "dataPoints": [
                    data_point(primary, d.day, d.similar, SIMILAR_POINT_LABEL) for d in days
                ],
                "label": SIMILAR_CHART_LABEL,
                "granularity": "DAY",
            },
        ],
        "description": _description(primary, change),
        "link": {
            "__typename": "porygonPLink",
            "url": HELP_URL,
            "label": "Learn how we compare listings",
        },
        "componentName": "PIVOT_CHART_SECTION",
        "primaryMetric": metric_unit(primary, your, change),
        "secondaryMetrics": [metric_unit(m, your) for m in secondaries],
        "minPoint": _extreme_point(primary, days, today, min),
        "maxPoint": _extreme_point(primary, days, today, max),
        "emptyState": {
            "__typename": "porygonPEmptyState",
            "actionUrl": None,
            "message": (
                f"Your {label.lower()} will show here within 48 hours of your first booking."
            ),
        },
    }


def list_of_metrics_component(metric: str, days: Sequence[DailyTruth]) -> dict[str, Any]:
    your = sum_counts(d.your for d in days)
    return {
        "__typename": "porygonPListOfMetricsSection",
        "metrics": [metric_unit(m, your) for m in metric_family(metric)],
        "componentName": "LIST_OF_METRICS_SECTION",
    }


def _listing_row(seed: int, listing: Listing, metric: str, today: date) -> dict[str, Any]:
    occupancy = listing_occupancy(seed, listing.listing_id, today)
    change = occupancy.change if occupancy is not None else None
    return {
        "__typename": "porygonPListingMetric",
        "id": listing.listing_id,
        "thumbnailUrl": (
            f"https://a0.muscache.com/im/pictures/miso/Hosting-{listing.listing_id}"
            "/original/simulated.jpeg?aki_policy=small"
        ),
        "metricUnit": {
            "__typename": "porygonPMetricUnit",
            "value": double_wrapper(occupancy.rate if occupancy else 0.0),
            "valueType": "PERCENTAGE",
            "valueChange": None if change is None else double_wrapper(change),
            "valueChangeType": None if change is None else "PERCENTAGE",
            "valueString": format_percent(occupancy.rate) if occupancy else "-",
            "currency": None,
            "label": None,
            "valueChangeString": None if change is None else format_percent(change),
            "metricName": metric,
        },
        "listingName": listing.listing_name,
        "internalName": listing.internal_name,
        "summary": f"{listing.listing_name}: a simulated listing at {listing.internal_name}.",
    }


def listings_section_component(
    seed: int, account: Account, metric: str, today: date, page_size: int | None = None
) -> dict[str, Any]:
    """The listings table; ``page_size`` cuts it to its first rows (faults.listings_page_size)
    while ``totalCount`` still counts every listing of the host."""
    rows = [_listing_row(seed, listing, metric, today) for listing in account.listings]
    # "Lowest" is the active sort, so listings without a figure ("-", 0.0) come first.
    rows.sort(key=lambda row: row["metricUnit"]["value"]["doubleValue"])
    total = len(rows)
    if page_size is not None:
        rows = rows[:page_size]
    return {
        "__typename": "porygonPPivotListingsSection",
        "title": "Listing overview",
        "subtitle": (
            "Compare 5-star ratings by listing, and we\u2019ll show you if ratings have "
            "changed since the previous month."
        ),
        "ratingSortBySelectors": [
            {
                "__typename": "porygonPRatingSortBySelector",
                "label": "Lowest",
                "sortOrder": "ASC",
                "isActive": True,
            },
            {
                "__typename": "porygonPRatingSortBySelector",
                "label": "Highest",
                "sortOrder": "DESC",
                "isActive": False,
            },
        ],
        "tableHeaders": ["Listing name", "Change", "Rate"],
        "tableRows": rows,
        "totalCount": total,
        "resultsCount": len(rows),
        "componentName": "PIVOT_LISTINGS_SECTION",
    }


def build_response(
    seed: int,
    account: Account,
    request: GraphQLRequest,
    today: date,
    trace_id: str,
    *,
    listings_page_size: int | None = None,
) -> dict[str, Any]:
    """The body Airbnb answers ``request`` of ``account`` with, on ``today``.

    ``request.listing_ids`` must already be checked to belong to ``account``;
    ``listings_page_size`` cuts a ListingsSectionQuery answer short (see
    :func:`listings_section_component`).
    """
    if request.relative_ds_start is None or request.relative_ds_end is None:
        metric = request.group_by_values[0] if request.group_by_values else None
        component = listings_section_component(
            seed, account, metric or LISTINGS_SECTION_METRIC, today, listings_page_size
        )
        return envelope(component, trace_id)
    start, end = requested_window(request.relative_ds_start, request.relative_ds_end, today)
    listing_ids = request.listing_ids or account.listing_ids
    days = window_truth(seed, listing_ids, start, end, today)
    metric = request.group_by_values[0]
    if request.comparison is not None:
        return envelope(chart_component(metric, days, today), trace_id)
    return envelope(list_of_metrics_component(metric, days), trace_id)


def malformed_component(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the arrays the flatteners need: valid JSON, broken data."""
    component = body["data"]["porygon"]["getPerformanceComponents"]["components"][0]
    for key in ("metricLineCharts", "metrics", "tableRows"):
        component.pop(key, None)
    return body


# -- errors and faults ------------------------------------------------------------------------


def graphql_error(
    message: str, error_type: str, trace_id: str, **extensions: Any
) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": message,
                "locations": [],
                "path": ["porygon", "getPerformanceComponents"],
                "extensions": {"errorType": error_type, **extensions},
            }
        ],
        "data": None,
        "extensions": {"traceId": trace_id},
    }


def persisted_query_not_found(trace_id: str) -> Reply:
    body = graphql_error("PersistedQueryNotFound", "persisted_query_not_found", trace_id)
    body["errors"][0]["path"] = []
    return json_reply(400, body)


def bad_request(message: str, trace_id: str) -> Reply:
    body = graphql_error(message, "bad_request", trace_id, statusCode=400)
    body["errors"][0]["path"] = []
    return json_reply(400, body)


def forbidden_listing(trace_id: str) -> Reply:
    # A listing of another host: GraphQL-level, not an HTTP 403 (that means "log in again").
    return json_reply(200, graphql_error("Listing not found for this host", "not_found", trace_id))


def unknown_session(trace_id: str) -> Reply:
    body = graphql_error(
        "Authentication required", "authentication_required", trace_id, statusCode=401
    )
    return json_reply(401, body)


LOGIN_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Log in or sign up - Airbnb</title></head>
<body><main id="site-content"><h1>Log in or sign up</h1>
<form action="/login" method="post"><label for="email">Email</label>
<input id="email" name="email" type="email"><button type="submit">Continue</button></form>
</main></body></html>
"""


def expired_session(form: AuthForm, trace_id: str) -> Reply:
    """How Airbnb says "log in again", in each of the four forms seen in the wild."""
    match form:
        case AuthForm.HTTP_401 | AuthForm.HTTP_403:
            status = 401 if form is AuthForm.HTTP_401 else 403
            return json_reply(
                status,
                {
                    "error_code": status,
                    "error_type": "unauthorized" if status == 401 else "forbidden",
                    "error_message": "Please log in to continue.",
                },
            )
        case AuthForm.AUTHENTICATION_REQUIRED:
            return json_reply(
                200,
                graphql_error(
                    "Authentication required", "authentication_required", trace_id, statusCode=401
                ),
            )
        case AuthForm.NULL_COMPONENTS:
            return json_reply(
                200,
                {
                    "data": {
                        "porygon": {"__typename": "porygonQuery", "getPerformanceComponents": None}
                    },
                    "extensions": {"traceId": trace_id},
                },
            )
        case AuthForm.LOGIN_PAGE:
            return Reply(200, LOGIN_PAGE, HTML)


def rate_limited(retry_after_s: float | None) -> Reply:
    headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
    return json_reply(
        429,
        {
            "error_code": 429,
            "error_type": "too_many_requests",
            "error_message": "You have made too many requests. Please try again later.",
        },
        headers,
    )


def server_error(status: int) -> Reply:
    page = (
        f"<!DOCTYPE html><html><head><title>Airbnb: {status}</title></head>"
        "<body><h1>Something went wrong</h1><p>We're working on it.</p></body></html>"
    )
    return Reply(status, page.encode(), HTML)


def malformed_json(reply: Reply) -> Reply:
    """``reply`` cut in half: what a connection reset mid-body leaves a proxy to pass on."""
    return Reply(200, reply.body[: max(1, len(reply.body) // 2)], JSON)


def dashboard_page(account: Account) -> bytes:
    """The page a live preflight lands on (``/hosting/performance/...``): enough to be HTML."""
    listings = "".join(
        f"<li data-listing-id={listing.listing_id}>{listing.listing_name}</li>"
        for listing in account.listings
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<title>Performance - Airbnb</title></head>\n<body><main id="site-content">'
        f"<h1>Performance</h1><ul>{listings}</ul></main></body></html>\n"
    ).encode()
