"""Reading a persisted-query request the way Airbnb's GraphQL gateway does (pure).

Only what the three performance-dashboard queries use is understood; anything
else is a :class:`BadRequest`, answered with HTTP 400 and a GraphQL error body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from services.simulator.data import ALL_METRICS
from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION

SUPPORTED_METRIC_TYPES = frozenset({"CONVERSION"})
# YOY would need a second truth ("last year") that nothing in the project asks for.
SUPPORTED_COMPARISONS = frozenset({"MARKET"})
LISTINGS_SECTION_METRIC = "occupancy_rate"


class BadRequest(ValueError):
    """The body is not a request Airbnb would accept; the message is what the gateway says."""


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    operation_name: str
    group_by_values: tuple[str, ...]
    metric_type: str
    # None where the request names no listing: the dashboard then means all of them.
    listing_ids: tuple[str, ...] | None = None
    relative_ds_start: int | None = None
    relative_ds_end: int | None = None
    comparison: str | None = None


def _object(node: Any, path: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise BadRequest(f'Variable "{path}" of required type object was not provided.')
    return node


def _int(arguments: dict[str, Any], key: str) -> int:
    value = arguments.get(key)
    # bool is an int in Python but not in GraphQL.
    if type(value) is not int:
        raise BadRequest(
            f'Variable "$request.arguments.{key}" of required type Int! was not provided.'
        )
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f'Variable "{path}" got invalid value; expected [String!]!.')
    return tuple(value)


def parse_request(operation_name: str, raw: bytes) -> GraphQLRequest:
    """The request a body asks for, for the operation named in the URL."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Unable to parse request body as JSON.") from None
    body = _object(body, "$body")
    if body.get("operationName", operation_name) != operation_name:
        raise BadRequest("operationName in the body does not match the persisted query.")
    request = _object(_object(body.get("variables"), "$variables").get("request"), "$request")
    arguments = _object(request.get("arguments"), "$request.arguments")

    metric_type = arguments.get("metricType")
    if metric_type not in SUPPORTED_METRIC_TYPES:
        raise BadRequest(
            f'Variable "$request.arguments.metricType" got invalid value {metric_type!r}.'
        )
    group_by_values = _strings(arguments.get("groupByValues"), "$request.arguments.groupByValues")
    if len(group_by_values) != 1:
        raise BadRequest("groupByValues must name exactly one metric.")

    if operation_name == LISTINGS_SECTION.operation_name:
        return GraphQLRequest(operation_name, group_by_values, metric_type)

    if group_by_values[0] not in ALL_METRICS:
        raise BadRequest(f"Unknown metric {group_by_values[0]!r} in groupByValues.")
    start = _int(arguments, "relativeDsStart")
    end = _int(arguments, "relativeDsEnd")
    if end < start:
        raise BadRequest("relativeDsEnd must not be before relativeDsStart.")
    filters = arguments.get("filters")
    listing_ids = None
    if filters is not None:
        raw_ids = _object(filters, "$request.arguments.filters").get("listingIds")
        if raw_ids is not None:
            listing_ids = _strings(raw_ids, "$request.arguments.filters.listingIds") or None

    comparison = None
    if operation_name == CHART.operation_name:
        comparison = arguments.get("metricComparisonType", "MARKET")
        if comparison not in SUPPORTED_COMPARISONS:
            raise BadRequest(f"Unsupported metricComparisonType {comparison!r}.")
    else:
        assert operation_name == LIST_OF_METRICS.operation_name
    return GraphQLRequest(
        operation_name, group_by_values, metric_type, listing_ids, start, end, comparison
    )
