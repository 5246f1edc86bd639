"""Flatten + pivot throughput against ``orjson.loads`` on the same response bodies.

Run ``python -m benchmarks.bench_flatten [--repeat N]``. It prints one JSON line; ``ratio``
is the cost of flatten+pivot divided by the cost of parsing the same bytes, and the
target is to stay under 3x so that flattening never dominates a fetcher's CPU.

Bodies come from ``<repo>/../shared/airbnb-captures`` when present; otherwise
same-shaped ChartQuery and ListOfMetricsQuery bodies are synthesised here.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from services.simulator.responses import envelope
from shared.airbnb.flatteners import flatten_chart_points, flatten_metric_units
from shared.airbnb.pivots import (
    pivot_chart_query,
    pivot_chart_summary,
    pivot_list_of_metrics,
    scrape_time,
)
from shared.airbnb.windows import DateRange

CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "airbnb-captures"
CAPTURE_FILES = (
    "ChartQuery_CONVERSION_conversion_rate.json",
    "ChartQuery_CONVERSION_p3_impressions.json",
    "ListOfMetricsQuery_CONVERSION_conversion_rate.json",
    "ListOfMetricsQuery_CONVERSION_p3_impressions.json",
)
TARGET_RATIO = 3.0
SCRAPED_AT = scrape_time(date(2025, 7, 11))
SLICE = DateRange(date(2025, 1, 11), date(2025, 2, 7))
IDENTITY: dict[str, Any] = {"account_id": "1", "listing_id": "2", "internal_name": "bench"}


def _unit(metric: str, value: float | int, change: float | None) -> dict[str, Any]:
    wrapped = (
        {"__typename": "porygonLongWrapper", "longValue": str(value)}
        if isinstance(value, int)
        else {"__typename": "porygonDoubleWrapper", "doubleValue": value}
    )
    return {
        "__typename": "porygonPMetricUnit",
        "value": wrapped,
        "valueType": "NUMBER" if isinstance(value, int) else "PERCENTAGE",
        "valueChange": None
        if change is None
        else {"__typename": "porygonDoubleWrapper", "doubleValue": change},
        "valueChangeType": "NUMBER",
        "valueString": str(value),
        "currency": None,
        "label": metric,
        "valueChangeString": None if change is None else str(change),
        "metricName": metric,
    }


def _envelope(component: dict[str, Any]) -> bytes:
    return orjson.dumps(envelope(component, "synthetic"))


def _synthetic_chart(metric: str, secondary: tuple[str, ...], counts: bool) -> bytes:
    def point(day: date, i: int, label: str) -> dict[str, Any]:
        value: dict[str, Any] = (
            {"__typename": "porygonLongWrapper", "longValue": str(i * 3)}
            if counts
            else {"__typename": "porygonDoubleWrapper", "doubleValue": i / 997}
        )
        return {
            "__typename": "porygonPDataPoint",
            "ds": day.isoformat(),
            "value": value,
            "valueType": "NUMBER" if counts else "PERCENTAGE",
            "valueString": str(i),
            "label": label,
        }

    days = [date(2025, 1, 12) + timedelta(days=i) for i in range(28)]
    charts = [
        {
            "__typename": "porygonPMetricLineChart",
            "label": chart_label,
            "granularity": "DAY",
            "dataPoints": [point(d, i, point_label) for i, d in enumerate(days)],
        }
        for chart_label, point_label in (
            ("Your performance", "Your listings"),
            ("Similar listings", "Similar listings"),
        )
    ]
    return _envelope(
        {
            "__typename": "porygonPPivotChartSection",
            "title": metric,
            "metricLineCharts": charts,
            "componentName": "PIVOT_CHART_SECTION",
            "primaryMetric": _unit(metric, 460 if counts else 0.0011, 222.0),
            "secondaryMetrics": [_unit(m, 8166 if counts else 0.5, None) for m in secondary],
        }
    )


def _synthetic_list(metrics: tuple[str, ...], counts: bool) -> bytes:
    return _envelope(
        {
            "__typename": "porygonPListOfMetricsSection",
            "metrics": [_unit(m, 460 if counts else 0.0011, None) for m in metrics],
            "componentName": "LIST_OF_METRICS_SECTION",
        }
    )


def load_bodies() -> tuple[str, list[bytes]]:
    """The four metric bodies, and where they came from."""
    if all((CAPTURES / name).is_file() for name in CAPTURE_FILES):
        return "captures", [(CAPTURES / name).read_bytes() for name in CAPTURE_FILES]
    rates = ("p2_impressions_first_page_rate", "search_conversion_rate", "listing_conversion_rate")
    return "synthetic", [
        _synthetic_chart("conversion_rate", rates, counts=False),
        _synthetic_chart("p3_impressions", ("p2_impressions",), counts=True),
        _synthetic_list(("conversion_rate", *rates), counts=False),
        _synthetic_list(("p3_impressions", "p2_impressions"), counts=True),
    ]


def flatten_and_pivot(resp: dict[str, Any], is_chart: bool) -> None:
    """What the fetcher does with one parsed metric response."""
    units = flatten_metric_units(resp)
    if is_chart:
        pivot_chart_query(flatten_chart_points(resp), scraped_at=SCRAPED_AT, **IDENTITY)
        pivot_chart_summary(units, slice=SLICE, scraped_at=SCRAPED_AT, **IDENTITY)
    else:
        pivot_list_of_metrics(units, slice=SLICE, scraped_at=SCRAPED_AT, **IDENTITY)


def _best_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Best per-call time: the least disturbed run is the closest to the true cost."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats (best of N)")
    args = parser.parse_args(argv)

    source, bodies = load_bodies()
    # Bodies are in CAPTURE_FILES order: two ChartQuery, then two ListOfMetricsQuery.
    parsed = [(orjson.loads(body), i < 2) for i, body in enumerate(bodies)]

    def parse_all() -> None:
        for body in bodies:
            orjson.loads(body)

    def flatten_all() -> None:
        for resp, is_chart in parsed:
            flatten_and_pivot(resp, is_chart)

    loads_s = _best_seconds(parse_all, args.repeat)
    flatten_s = _best_seconds(flatten_all, args.repeat)
    ratio = flatten_s / loads_s
    result = {
        "benchmark": "flatten_pivot",
        "source": source,
        "responses": len(bodies),
        "responses_per_s": round(len(bodies) / flatten_s, 1),
        "orjson_loads_per_s": round(len(bodies) / loads_s, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "ok": ratio <= TARGET_RATIO,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
