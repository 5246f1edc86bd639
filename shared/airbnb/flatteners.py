"""Nested Airbnb GraphQL responses -> flat, typed long records.

Everything the flatteners need is read through one small walker (:func:`_field`,
:func:`_array`, :func:`_number`) that knows where it is, so any missing or mistyped
piece raises :class:`MalformedResponseError` with the exact JSON path, e.g.
``data.porygon.getPerformanceComponents.components[0].metricLineCharts[1].dataPoints[3].ds``.
The path is kept as a linked tuple and only rendered to text when something is
wrong, because these functions run once per response on the fetcher's hot path;
for the same reason the per-point and per-unit loops index directly and only call
the walker once something fails, and the records are plain tuples
(:data:`ChartPoint`, :data:`MetricValue`): building a dataclass per point was the
largest single cost of the fetcher (benchmarks/bench_fetcher.py).

What is required: every key the records are built from. What is nullable: a
metric's ``value`` (kept as ``None`` next to its ``valueString``), ``valueString``,
``valueChange`` and ``valueChangeString``. ``valueChange``/``valueChangeString``
may also be absent: they are null in most responses and identify nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, NoReturn, TypeAlias

from shared.airbnb.errors import MalformedResponseError

Side = Literal["your", "similar"]
Number = int | float

# (parent, step) pairs, rendered only on error; None is the response root.
_Path = tuple[Any, str | int] | None

# Airbnb labels the two charts of a MARKET comparison; the order is not a contract.
CHART_SIDES: dict[str, Side] = {"Your performance": "your", "Similar listings": "similar"}


@dataclass(frozen=True, slots=True)
class Listing:
    listing_id: str
    internal_name: str | None
    listing_name: str | None


# One day of one chart: (metric, side, ds, value, value_string). ``ds`` is Airbnb's
# own date (one day after the requested day).
ChartPoint: TypeAlias = tuple[str, Side, date, Number | None, str | None]

# One metric unit, a ChartQuery primary/secondary metric or a ListOfMetricsQuery entry:
# (metric, value, value_string, value_change, value_change_string).
MetricValue: TypeAlias = tuple[str, Number | None, str | None, Number | None, str | None]


def _render_path(path: _Path) -> str:
    steps: list[str | int] = []
    while path is not None:
        path, step = path
        steps.append(step)
    text = ""
    for step in reversed(steps):
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else step
    return text or "<response>"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _fail(path: _Path, detail: str) -> NoReturn:
    # from None: the KeyError/TypeError being handled adds nothing to the path.
    raise MalformedResponseError(_render_path(path), detail) from None


def _field(node: Any, key: str, at: _Path) -> Any:
    """``node[key]`` where ``node`` sits at path ``at``."""
    try:
        return node[key]
    except KeyError:
        _fail((at, key), "missing")
    except TypeError:
        # ``node`` is not an object (null, a list, a string...): blame ``node`` itself.
        _fail(at, f"expected an object, got {_kind(node)}")


def _array(node: Any, key: str, at: _Path) -> list[Any]:
    value = _field(node, key, at)
    if type(value) is not list:
        _fail((at, key), f"expected an array, got {_kind(value)}")
    return value


class _BadNumber(Exception):
    """Raised by :func:`_unwrap`, which has no path; callers turn it into a located error."""

    def __init__(self, detail: str, key: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.key = key


def _unwrap(wrapper: Any) -> Number | None:
    """``{"longValue": "460"}`` (JSON string) -> 460, ``{"doubleValue": x}`` -> x, null -> None."""
    if wrapper is None:
        return None
    if type(wrapper) is not dict:
        raise _BadNumber(f"expected a number wrapper object, got {_kind(wrapper)}")
    if "longValue" in wrapper:
        raw = wrapper["longValue"]
        # Exact type checks: int() would also truncate floats and accept booleans.
        if type(raw) is str or type(raw) is int:
            try:
                return int(raw)
            except ValueError:
                pass
        elif raw is None:
            return None
        raise _BadNumber(f"not an integer: {raw!r}", "longValue")
    if "doubleValue" in wrapper:
        raw = wrapper["doubleValue"]
        if type(raw) is float:
            return raw
        if type(raw) is int:
            return float(raw)
        if raw is None:
            return None
        raise _BadNumber(f"not a number: {raw!r}", "doubleValue")
    raise _BadNumber("neither longValue nor doubleValue")


def _number(node: Any, key: str, at: _Path) -> Number | None:
    try:
        return _unwrap(_field(node, key, at))
    except _BadNumber as bad:
        where: _Path = (at, key)
        _fail(where if bad.key is None else (where, bad.key), bad.detail)


def _date(node: Any, key: str, at: _Path) -> date:
    raw = _field(node, key, at)
    try:
        return date.fromisoformat(raw)
    except (TypeError, ValueError):
        _fail((at, key), f"not an ISO date: {raw!r}")


_COMPONENT_AT: _Path = ((((None, "data"), "porygon"), "getPerformanceComponents"), "components")


def _component(resp: Any) -> tuple[Any, _Path]:
    """``data.porygon.getPerformanceComponents.components[0]`` and its path."""
    try:
        components = resp["data"]["porygon"]["getPerformanceComponents"]["components"]
        if type(components) is list and components:
            return components[0], (_COMPONENT_AT, 0)
    except (KeyError, TypeError):
        pass
    return _component_walked(resp)


def _component_walked(resp: Any) -> tuple[Any, _Path]:
    at: _Path = None
    node = resp
    for key in ("data", "porygon", "getPerformanceComponents"):
        node = _field(node, key, at)
        at = (at, key)
    components = _array(node, "components", at)
    at = (at, "components")
    if not components:
        _fail((at, 0), "missing")
    return components[0], (at, 0)


def _metric_value(unit: Any, at: _Path) -> MetricValue:
    # Fast path: index directly and build no paths (this runs for every metric unit of
    # every response); anything unexpected goes to the walker below, which names the path.
    if type(unit) is dict:
        try:
            change = unit.get("valueChange")
            return (
                unit["metricName"],
                _unwrap(unit["value"]),
                unit["valueString"],
                None if change is None else _unwrap(change),
                unit.get("valueChangeString"),
            )
        except (KeyError, _BadNumber):
            pass
    return _metric_value_walked(unit, at)


def _metric_value_walked(unit: Any, at: _Path) -> MetricValue:
    metric = _field(unit, "metricName", at)
    value = _number(unit, "value", at)
    value_string = _field(unit, "valueString", at)
    change = _number(unit, "valueChange", at) if "valueChange" in unit else None
    return (metric, value, value_string, change, unit.get("valueChangeString"))


@dataclass(frozen=True, slots=True)
class ListingsPage:
    """A ListingsSectionQuery answer: its ``tableRows`` as listings, and Airbnb's two counts.

    ``total_count`` is how many listings Airbnb says the host has, ``results_count`` how
    many it says this answer holds (7 and 7 in the capture). Either is None when the
    answer leaves it out or null: the listings are still usable, only the check that
    none is missing cannot be made.
    """

    listings: list[Listing]
    total_count: int | None
    results_count: int | None


def _count(component: dict[str, Any], key: str, at: _Path) -> int | None:
    """An optional plain-integer count; present but not an integer is malformed."""
    value = component.get(key)
    if value is None:
        return None
    # Exact type: a bool is an int to Python, and a float count would be a new format.
    if type(value) is not int or value < 0:
        _fail((at, key), f"expected a count, got {value!r}")
    return value


def flatten_listings(resp: Any) -> list[Listing]:
    """The listings of a ListingsSectionQuery response, from its ``tableRows``."""
    return flatten_listings_page(resp).listings


def flatten_listings_page(resp: Any) -> ListingsPage:
    """The listings of a ListingsSectionQuery response with its ``totalCount`` and
    ``resultsCount``, so the caller can tell a complete answer from a cut one."""
    component, at = _component(resp)
    rows = _array(component, "tableRows", at)
    rows_at: _Path = (at, "tableRows")
    listings: list[Listing] = []
    for i, row in enumerate(rows):
        row_at: _Path = (rows_at, i)
        listing_id = _field(row, "id", row_at)
        if type(listing_id) is not str and type(listing_id) is not int:
            _fail((row_at, "id"), f"expected a listing id, got {_kind(listing_id)}")
        listings.append(
            Listing(
                str(listing_id),
                _field(row, "internalName", row_at),
                _field(row, "listingName", row_at),
            )
        )
    return ListingsPage(
        listings, _count(component, "totalCount", at), _count(component, "resultsCount", at)
    )


def _diagnose_point(point: Any, at: _Path) -> NoReturn:
    """Re-read a data point the fast path choked on through the walker, to name the path."""
    _date(point, "ds", at)
    _number(point, "value", at)
    _field(point, "valueString", at)
    _fail(at, "unreadable data point")


def flatten_chart_points(resp: Any) -> list[ChartPoint]:
    """Every data point of both charts of a ChartQuery response.

    The metric is the component's ``primaryMetric.metricName`` (the chart is of the
    metric that was asked for); the side comes from the chart's label.
    """
    component, at = _component(resp)
    metric = _field(_field(component, "primaryMetric", at), "metricName", (at, "primaryMetric"))
    charts = _array(component, "metricLineCharts", at)
    charts_at: _Path = (at, "metricLineCharts")
    points: list[ChartPoint] = []
    append = points.append
    unwrap = _unwrap
    # Both charts carry the same days; parse each ds string once.
    days: dict[str, date] = {}
    parse_day = date.fromisoformat
    for i, chart in enumerate(charts):
        chart_at: _Path = (charts_at, i)
        label = _field(chart, "label", chart_at)
        side = CHART_SIDES.get(label)
        if side is None:
            _fail((chart_at, "label"), f"unknown chart label {label!r}")
        # The hot loop indexes directly and builds no paths; the first failure hands
        # the point to the walker, which names the exact path.
        for j, point in enumerate(_array(chart, "dataPoints", chart_at)):
            try:
                raw_ds = point["ds"]
                ds = days.get(raw_ds)
                if ds is None:
                    ds = days[raw_ds] = parse_day(raw_ds)
                wrapper = point["value"]
                # _unwrap inlined for the two usual wrappers (a longValue string, a
                # doubleValue float), same checks in the same order; the rest calls it.
                value: Number | None
                if type(wrapper) is dict:
                    if "longValue" in wrapper:
                        raw = wrapper["longValue"]
                        value = int(raw) if type(raw) is str else unwrap(wrapper)
                    else:
                        raw = wrapper.get("doubleValue")
                        value = raw if type(raw) is float else unwrap(wrapper)
                else:
                    value = unwrap(wrapper)
                append((metric, side, ds, value, point["valueString"]))
            except (KeyError, TypeError, ValueError, _BadNumber):
                _diagnose_point(point, ((chart_at, "dataPoints"), j))
    return points


def flatten_metric_units(resp: Any) -> list[MetricValue]:
    """The metric units of a ChartQuery (primary then secondary) or ListOfMetricsQuery response.

    The component type decides: a ``metrics`` array is a ListOfMetricsQuery, otherwise
    ``primaryMetric`` and ``secondaryMetrics`` are required.
    """
    component, at = _component(resp)
    if type(component) is dict and "metrics" in component:
        units = _array(component, "metrics", at)
        units_at: _Path = (at, "metrics")
        return [_metric_value(unit, (units_at, i)) for i, unit in enumerate(units)]
    primary = _field(component, "primaryMetric", at)
    values = [_metric_value(primary, (at, "primaryMetric"))]
    secondary_at: _Path = (at, "secondaryMetrics")
    for i, unit in enumerate(_array(component, "secondaryMetrics", at)):
        values.append(_metric_value(unit, (secondary_at, i)))
    return values
