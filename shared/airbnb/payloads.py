"""JSON request bodies for Airbnb's persisted queries, and the per-listing poll plan.

The envelope copies what Airbnb's own dashboard sends (see the captures README):
changing a key or its shape risks a 400 or, worse, a silently different answer.
Bodies are plain dicts so the client can serialise them with orjson as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION, PersistedQuery
from shared.airbnb.windows import (
    DEFAULT_MAX_DAYS_AHEAD,
    DateRange,
    check_servable,
    relative_ds,
    slice_window,
)

LOCALE = "en"
CURRENCY = "USD"
GROUP_BYS: tuple[str, ...] = ("RATING_CATEGORY",)
DEFAULT_METRIC_TYPE = "CONVERSION"
DEFAULT_COMPARISON = "MARKET"
# The listings query is only used to enumerate listings; the metric it carries is irrelevant.
LISTINGS_GROUP_BY_VALUE = "occupancy_rate"


def _envelope(query: PersistedQuery, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationName": query.operation_name,
        "locale": LOCALE,
        "currency": CURRENCY,
        "variables": {
            "request": {
                "clientName": query.client_name,
                "arguments": arguments,
                "useStubbedData": False,
            }
        },
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": query.sha256_hash}},
    }


def _metric_arguments(
    listing_id: str,
    slice: DateRange,
    today: date,
    group_by_value: str,
    metric_type: str,
    max_days_ahead: int,
) -> dict[str, Any]:
    check_servable(slice, today, max_days_ahead)
    # Key order follows the captured request, so a byte diff against it stays readable.
    return {
        "relativeDsStart": relative_ds(slice.start, today),
        "relativeDsEnd": relative_ds(slice.end, today),
        "filters": {"listingIds": [str(listing_id)]},
        "metricType": metric_type,
        "groupBys": list(GROUP_BYS),
        "groupByValues": [group_by_value],
    }


def listings_section_payload() -> dict[str, Any]:
    """ListingsSectionQuery: every listing of the account (no window, no filters)."""
    return _envelope(
        LISTINGS_SECTION,
        {
            "metricType": DEFAULT_METRIC_TYPE,
            "groupBys": list(GROUP_BYS),
            "groupByValues": [LISTINGS_GROUP_BY_VALUE],
        },
    )


def chart_payload(
    listing_id: str,
    slice: DateRange,
    today: date,
    group_by_value: str,
    metric_type: str = DEFAULT_METRIC_TYPE,
    comparison: str = DEFAULT_COMPARISON,
    *,
    max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD,
) -> dict[str, Any]:
    """ChartQuery for one listing, one slice and one metric, compared with ``comparison``.

    Raises :class:`~shared.airbnb.errors.WindowError` if the slice ends past the horizon.
    """
    arguments = _metric_arguments(
        listing_id, slice, today, group_by_value, metric_type, max_days_ahead
    )
    arguments["metricComparisonType"] = comparison
    return _envelope(CHART, arguments)


def list_of_metrics_payload(
    listing_id: str,
    slice: DateRange,
    today: date,
    group_by_value: str,
    metric_type: str = DEFAULT_METRIC_TYPE,
    *,
    max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD,
) -> dict[str, Any]:
    """ListOfMetricsQuery for one listing, one slice and one metric (no comparison).

    Raises :class:`~shared.airbnb.errors.WindowError` if the slice ends past the horizon.
    """
    return _envelope(
        LIST_OF_METRICS,
        _metric_arguments(listing_id, slice, today, group_by_value, metric_type, max_days_ahead),
    )


@dataclass(frozen=True, slots=True)
class PollSpec:
    """One persisted query polled per listing: its slice length and the metrics asked for.

    ``comparison`` is only sent with ChartQuery; ListOfMetricsQuery takes none.
    """

    operation: PersistedQuery
    slice_days: int
    group_by_values: tuple[str, ...]
    metric_type: str = DEFAULT_METRIC_TYPE
    comparison: str = DEFAULT_COMPARISON

    def __post_init__(self) -> None:
        if self.operation not in (CHART, LIST_OF_METRICS):
            raise ValueError(
                f"cannot poll {self.operation.operation_name} per listing; "
                f"only {CHART.operation_name} and {LIST_OF_METRICS.operation_name}"
            )
        if self.slice_days < 1:
            raise ValueError(f"PollSpec.slice_days must be >= 1, got {self.slice_days}")
        if not self.group_by_values:
            raise ValueError("PollSpec.group_by_values must not be empty")


DEFAULT_GROUP_BY_VALUES: tuple[str, ...] = ("conversion_rate", "p3_impressions")
DEFAULT_POLL_SET: tuple[PollSpec, ...] = (
    PollSpec(CHART, 28, DEFAULT_GROUP_BY_VALUES),
    PollSpec(LIST_OF_METRICS, 7, DEFAULT_GROUP_BY_VALUES),
)


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One HTTP request the fetcher will make: ``POST {base}{query.path}`` with ``body``."""

    query: PersistedQuery
    slice: DateRange
    group_by_value: str
    listing_id: str
    today: date
    metric_type: str = DEFAULT_METRIC_TYPE
    comparison: str = DEFAULT_COMPARISON
    max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body, built when it is sent.

        A first run plans about 150 requests a listing; holding their bodies from the
        start was ~140 KiB of dicts per account in flight (memray of bench_fleet,
        issue 17), where these fields are a few hundred bytes.
        """
        if self.query == CHART:
            return chart_payload(
                self.listing_id,
                self.slice,
                self.today,
                self.group_by_value,
                self.metric_type,
                self.comparison,
                max_days_ahead=self.max_days_ahead,
            )
        return list_of_metrics_payload(
            self.listing_id,
            self.slice,
            self.today,
            self.group_by_value,
            self.metric_type,
            max_days_ahead=self.max_days_ahead,
        )


def plan_listing_requests(
    listing_id: str,
    window: DateRange,
    today: date,
    poll_set: tuple[PollSpec, ...] = DEFAULT_POLL_SET,
    *,
    max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD,
) -> list[PlannedRequest]:
    """Every request for one listing over ``window``: each spec x slice x metric.

    Requests of one slice sit next to each other (both metrics of a ChartQuery
    slice are adjacent) because the pivots merge them per slice. The whole plan
    is checked against the horizon before anything is returned, so a bad window
    fails before the first request rather than midway.
    """
    planned: list[PlannedRequest] = []
    for spec in poll_set:
        for part in slice_window(window, spec.slice_days):
            check_servable(part, today, max_days_ahead)
            for value in spec.group_by_values:
                planned.append(
                    PlannedRequest(
                        spec.operation,
                        part,
                        value,
                        str(listing_id),
                        today,
                        spec.metric_type,
                        spec.comparison,
                        max_days_ahead,
                    )
                )
    return planned
