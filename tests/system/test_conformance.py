"""The simulator answers the five captured requests in the captured shape.

Each capture's request is rebuilt per the captures README (same operation and
groupByValues, relativeDs for the window 2025-01-11..2025-02-07 on a pinned
today of 2025-07-11) against a simulated listing, sent to the simulator app,
and the answer compared with the capture: same keys and ``__typename`` at every
level, same value wrappers (``longValue`` strings, ``doubleValue`` floats), same
list nesting. The captures are read from ``tests.infra.CAPTURES_DIR`` at test
time and never copied into the repository.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.simulator.app import create_app
from services.simulator.data import World, build_world
from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION, PersistedQuery
from shared.airbnb.payloads import chart_payload, list_of_metrics_payload, listings_section_payload
from shared.airbnb.windows import DateRange
from tests.infra import CAPTURES_DIR

TODAY = date(2025, 7, 11)
WINDOW = DateRange(date(2025, 1, 11), date(2025, 2, 7))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_mismatches(actual: Any, expected: Any, path: str = "$") -> list[str]:
    """Every place where ``actual`` is not shaped like ``expected``; [] when they agree.

    Objects need the same keys and the same ``__typename``; scalars the same JSON
    kind (a ``longValue`` string is not a number, ``0.0`` is not ``0``). A list may
    have any length, but not be empty where the other is not, and each of its
    items must be shaped like one of the expected items: the captures mix, e.g.,
    listing rows with and without a ``valueChange``.
    """
    kind = _kind(expected)
    if _kind(actual) != kind:
        return [f"{path}: expected {kind}, got {_kind(actual)}"]
    if kind == "object":
        problems: list[str] = []
        missing, extra = expected.keys() - actual.keys(), actual.keys() - expected.keys()
        if missing or extra:
            problems.append(
                f"{path}: keys differ, missing {sorted(missing)}, extra {sorted(extra)}"
            )
        if expected.get("__typename") != actual.get("__typename"):
            problems.append(
                f"{path}.__typename: expected {expected.get('__typename')!r}, "
                f"got {actual.get('__typename')!r}"
            )
        for key in sorted(expected.keys() & actual.keys()):
            problems += shape_mismatches(actual[key], expected[key], f"{path}.{key}")
        return problems
    if kind == "array":
        if bool(actual) != bool(expected):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}"]
        problems = []
        for i, item in enumerate(actual):
            tries = [shape_mismatches(item, variant, f"{path}[{i}]") for variant in expected]
            if all(tries):
                problems += min(tries, key=len)
        return problems
    return []


def test_shape_mismatches_sees_every_kind_of_difference() -> None:
    point = {"__typename": "porygonPDataPoint", "value": {"longValue": "3"}, "label": None}
    doc = {"__typename": "root", "points": [point], "rate": {"doubleValue": 0.5}}
    assert shape_mismatches(json.loads(json.dumps(doc)), doc) == []

    def changed(**overrides: Any) -> dict[str, Any]:
        return {**json.loads(json.dumps(doc)), **overrides}

    assert shape_mismatches(changed(rate={"doubleValue": 1}), doc) == [
        "$.rate.doubleValue: expected float, got integer"
    ]
    assert shape_mismatches(changed(points=[{**point, "value": {"longValue": 3}}]), doc)
    assert shape_mismatches(changed(points=[{**point, "__typename": "other"}]), doc)
    assert shape_mismatches(changed(points=[{**point, "label": "x"}]), doc)
    assert shape_mismatches(changed(points=[]), doc)
    assert shape_mismatches(changed(points=[[point]]), doc)
    assert shape_mismatches(changed(extra=1), doc) == [
        "$: keys differ, missing [], extra ['extra']"
    ]
    # More items than the capture is fine; it is the shape of each that counts.
    assert shape_mismatches(changed(points=[point, point, point]), doc) == []


def _capture(name: str) -> dict[str, Any]:
    path: Path = CAPTURES_DIR / name
    if not path.is_file():
        pytest.skip(f"capture {name} not available in {CAPTURES_DIR}")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2, 3, seed=11)


@pytest.fixture
async def sim(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    # The shape of the answers is the subject here, not the session rules.
    app = create_app(world, today=lambda: TODAY, lifecycle=False)
    async with TestClient(TestServer(app)) as client:
        yield client


CASES: list[tuple[str, PersistedQuery, str | None]] = [
    ("ListingsSectionQuery.json", LISTINGS_SECTION, None),
    ("ChartQuery_CONVERSION_p3_impressions.json", CHART, "p3_impressions"),
    ("ChartQuery_CONVERSION_conversion_rate.json", CHART, "conversion_rate"),
    ("ListOfMetricsQuery_CONVERSION_conversion_rate.json", LIST_OF_METRICS, "conversion_rate"),
    ("ListOfMetricsQuery_CONVERSION_p3_impressions.json", LIST_OF_METRICS, "p3_impressions"),
]


def _body(query: PersistedQuery, listing_id: str, metric: str | None) -> dict[str, Any]:
    if query is LISTINGS_SECTION:
        return listings_section_payload()
    assert metric is not None
    if query is CHART:
        return chart_payload(listing_id, WINDOW, TODAY, metric)
    return list_of_metrics_payload(listing_id, WINDOW, TODAY, metric)


@pytest.mark.parametrize(("capture", "query", "metric"), CASES, ids=[c[0] for c in CASES])
async def test_simulator_answers_in_the_captured_shape(
    sim: TestClient[Any, Any],
    world: World,
    capture: str,
    query: PersistedQuery,
    metric: str | None,
) -> None:
    expected = _capture(capture)
    account = world.accounts[0]
    body = _body(query, account.listings[0].listing_id, metric)
    if query is not LISTINGS_SECTION:
        arguments = body["variables"]["request"]["arguments"]
        # The README's numbers for this window: the +3 rule.
        assert (arguments["relativeDsStart"], arguments["relativeDsEnd"]) == (-178, -151)

    response = await sim.post(query.path, json=body, headers={"Cookie": account.cookie})
    assert response.status == 200
    actual = await response.json()

    assert shape_mismatches(actual, expected) == []


async def test_points_come_back_dated_as_in_the_capture(
    sim: TestClient[Any, Any], world: World
) -> None:
    expected = _capture("ChartQuery_CONVERSION_p3_impressions.json")
    account = world.accounts[1]
    body = chart_payload(account.listings[2].listing_id, WINDOW, TODAY, "p3_impressions")
    response = await sim.post(CHART.path, json=body, headers={"Cookie": account.cookie})
    actual = await response.json()

    def dates(doc: dict[str, Any]) -> list[list[str]]:
        component = doc["data"]["porygon"]["getPerformanceComponents"]["components"][0]
        return [[p["ds"] for p in chart["dataPoints"]] for chart in component["metricLineCharts"]]

    def labels(doc: dict[str, Any]) -> list[tuple[str, set[str]]]:
        component = doc["data"]["porygon"]["getPerformanceComponents"]["components"][0]
        return [
            (chart["label"], {p["label"] for p in chart["dataPoints"]})
            for chart in component["metricLineCharts"]
        ]

    # 2025-01-11..2025-02-07 came back as 2025-01-12..2025-02-08.
    assert dates(actual) == dates(expected)
    assert labels(actual) == labels(expected)
