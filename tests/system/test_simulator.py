"""The simulator's HTTP surface: the Airbnb endpoint, ``/_sim/*``, faults, and the process.

Most tests drive the app in-process (aiohttp's test server); the last ones run
``sync-airbnb simulator`` as a real process.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.simulator.app import create_app
from services.simulator.data import (
    Account,
    World,
    build_world,
    expected_chart_points,
    expected_metric_values,
    expected_value_change,
)
from services.simulator.faults import AuthForm, FaultConfig
from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION, PersistedQuery
from shared.airbnb.payloads import chart_payload, list_of_metrics_payload, listings_section_payload
from shared.airbnb.windows import DateRange
from tests.infra import ServiceLauncher
from tests.stack import StartSimulator

TODAY = date(2025, 7, 11)
SEED = 5
Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(3, 4, SEED)


@pytest.fixture
async def sim(world: World) -> AsyncIterator[Client]:
    # These tests are about data, protocol and faults; the session lifecycle has its own
    # (tests/test_simulator_sessions.py), so here any cookie with the right _aat will do.
    app = create_app(world, today=lambda: TODAY, lifecycle=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def post(
    sim: Client, account: Account, query: PersistedQuery, body: Any
) -> aiohttp.ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await sim.post(
        query.path,
        data=data,
        headers={"Cookie": account.cookie, "Content-Type": "application/json"},
    )


def component(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["data"]["porygon"]["getPerformanceComponents"]["components"][0]


def unwrap(wrapper: dict[str, Any]) -> int | float:
    return int(wrapper["longValue"]) if "longValue" in wrapper else wrapper["doubleValue"]


# -- accounts and sessions ------------------------------------------------------------------


async def test_accounts_lists_every_account_with_its_cookie_and_listings(sim: Client) -> None:
    accounts = await (await sim.get("/_sim/accounts")).json()

    assert len(accounts) == 3
    listing_ids = [lst["listing_id"] for a in accounts for lst in a["listings"]]
    assert len(listing_ids) == len(set(listing_ids)) == 12
    for account in accounts:
        assert account["account_id"].isdigit()
        assert "_user_attributes=" in account["cookie"]
        assert "_aat=" in account["cookie"]
        for listing in account["listings"]:
            assert re.fullmatch(r"\d{18,19}", listing["listing_id"])
            assert listing["internal_name"]
            assert listing["listing_name"]


def test_world_is_a_function_of_the_seed() -> None:
    assert build_world(2, 3, 9) == build_world(2, 3, 9)
    assert build_world(2, 3, 9).accounts != build_world(2, 3, 10).accounts


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "",
        "_aat=whatever",
        "_user_attributes=%7B%22id_str%22%3A%22123%22%7D; _aat=x",
    ],
)
async def test_unknown_session_is_an_authentication_failure(
    sim: Client, cookie: str | None
) -> None:
    headers = {} if cookie is None else {"Cookie": cookie}
    response = await sim.post(CHART.path, json={}, headers=headers)

    assert response.status == 401
    body = await response.json()
    assert body["errors"][0]["extensions"]["errorType"] == "authentication_required"
    assert body["extensions"]["traceId"]


async def test_right_user_but_wrong_session_token_is_rejected(sim: Client, world: World) -> None:
    account = world.accounts[0]
    forged = account.cookie.replace(account.session_token, "0" * len(account.session_token))
    response = await sim.post(CHART.path, json={}, headers={"Cookie": forged})
    assert response.status == 401


# -- protocol errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v3/ChartQuery/{'0' * 64}",
        f"/api/v3/NoSuchQuery/{CHART.sha256_hash}",
        f"/api/v3/ListOfMetricsQuery/{CHART.sha256_hash}",
    ],
)
async def test_unknown_persisted_query_is_a_graphql_error(
    sim: Client, world: World, path: str
) -> None:
    response = await sim.post(path, json={}, headers={"Cookie": world.accounts[0].cookie})

    assert response.status == 400
    body = await response.json()
    assert body["data"] is None
    assert body["errors"][0]["message"] == "PersistedQueryNotFound"
    assert body["errors"][0]["extensions"]["errorType"] == "persisted_query_not_found"
    assert body["extensions"]["traceId"]


def _without_arg(body: dict[str, Any], key: str) -> dict[str, Any]:
    del body["variables"]["request"]["arguments"][key]
    return body


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        {"operationName": "ChartQuery"},
        {"operationName": "ChartQuery", "variables": {"request": {}}},
        "missing relativeDsStart",
        "wrong operationName",
        "unknown metric",
    ],
)
async def test_bad_bodies_are_400_with_an_airbnb_error(
    sim: Client, world: World, body: Any
) -> None:
    account = world.accounts[0]
    window = DateRange(TODAY - timedelta(days=27), TODAY)
    good = chart_payload(account.listings[0].listing_id, window, TODAY, "p3_impressions")
    if body == "missing relativeDsStart":
        body = _without_arg(good, "relativeDsStart")
    elif body == "wrong operationName":
        body = {**good, "operationName": "ListOfMetricsQuery"}
    elif body == "unknown metric":
        good["variables"]["request"]["arguments"]["groupByValues"] = ["revenue"]
        body = good

    response = await post(sim, account, CHART, body)

    assert response.status == 400
    doc = await response.json()
    assert doc["data"] is None
    assert doc["errors"][0]["message"]
    assert doc["errors"][0]["extensions"]["errorType"] == "bad_request"


async def test_a_listing_of_another_host_is_not_served(sim: Client, world: World) -> None:
    window = DateRange(TODAY - timedelta(days=27), TODAY)
    other = world.accounts[1].listings[0].listing_id
    body = chart_payload(other, window, TODAY, "p3_impressions")
    response = await post(sim, world.accounts[0], CHART, body)

    assert response.status == 200
    doc = await response.json()
    assert doc["data"] is None
    assert doc["errors"][0]["extensions"]["errorType"] == "not_found"


# -- data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["p3_impressions", "conversion_rate"])
async def test_chart_carries_the_generated_numbers_shifted_by_one_day(
    sim: Client, world: World, metric: str
) -> None:
    account = world.accounts[2]
    listing_id = account.listings[1].listing_id
    window = DateRange(date(2025, 1, 11), date(2025, 2, 7))
    response = await post(sim, account, CHART, chart_payload(listing_id, window, TODAY, metric))
    chart = component(await response.json())

    expected = expected_chart_points(SEED, listing_id, metric, window.start, window.end, TODAY)
    your, similar = chart["metricLineCharts"]
    assert [p["ds"] for p in your["dataPoints"]] == [
        (window.start + timedelta(days=i + 1)).isoformat() for i in range(28)
    ]
    assert [unwrap(p["value"]) for p in your["dataPoints"]] == [e.your for e in expected]
    assert [unwrap(p["value"]) for p in similar["dataPoints"]] == [e.similar for e in expected]
    assert chart["primaryMetric"]["metricName"] == metric
    assert chart["primaryMetric"]["valueChange"]["doubleValue"] == pytest.approx(
        expected_value_change(SEED, listing_id, metric, window.start, window.end, TODAY)
    )
    units = [chart["primaryMetric"], *chart["secondaryMetrics"]]
    totals = expected_metric_values(
        SEED, listing_id, [u["metricName"] for u in units], window.start, window.end, TODAY
    )
    assert {u["metricName"]: unwrap(u["value"]) for u in units} == totals


async def test_a_window_straddling_today_has_every_point(sim: Client, world: World) -> None:
    account = world.accounts[0]
    listing_id = account.listings[0].listing_id
    window = DateRange(TODAY - timedelta(days=10), TODAY + timedelta(days=17))
    response = await post(
        sim, account, CHART, chart_payload(listing_id, window, TODAY, "p3_impressions")
    )
    chart = component(await response.json())

    dates = [p["ds"] for p in chart["metricLineCharts"][0]["dataPoints"]]
    assert dates == [(window.start + timedelta(days=i + 1)).isoformat() for i in range(28)]
    expected = expected_chart_points(
        SEED, listing_id, "p3_impressions", window.start, window.end, TODAY
    )
    values = [unwrap(p["value"]) for p in chart["metricLineCharts"][0]["dataPoints"]]
    assert values == [e.your for e in expected]


async def test_future_windows_are_full_and_built_up(sim: Client, world: World) -> None:
    """Up to half a year ahead, as the real scrape: all points, fewer views the further out."""
    account = world.accounts[0]
    listing_id = account.listings[0].listing_id
    similar_totals: list[int] = []
    for weeks_ahead in (1, 8, 22):
        start = TODAY + timedelta(weeks=weeks_ahead)
        window = DateRange(start, start + timedelta(days=27))
        response = await post(
            sim, account, CHART, chart_payload(listing_id, window, TODAY, "p3_impressions")
        )
        your, similar = component(await response.json())["metricLineCharts"]
        assert len(your["dataPoints"]) == len(similar["dataPoints"]) == 28
        similar_values = [unwrap(p["value"]) for p in similar["dataPoints"]]
        assert any(similar_values)
        expected = expected_chart_points(
            SEED, listing_id, "p3_impressions", window.start, window.end, TODAY
        )
        assert [unwrap(p["value"]) for p in your["dataPoints"]] == [e.your for e in expected]
        similar_totals.append(sum(similar_values))
    assert similar_totals[0] > similar_totals[1] > similar_totals[2]

    week = DateRange(TODAY + timedelta(days=7), TODAY + timedelta(days=13))
    response = await post(
        sim,
        account,
        LIST_OF_METRICS,
        list_of_metrics_payload(listing_id, week, TODAY, "p3_impressions"),
    )
    metrics = component(await response.json())["metrics"]
    values = {m["metricName"]: unwrap(m["value"]) for m in metrics}
    assert values == expected_metric_values(
        SEED, listing_id, list(values), week.start, week.end, TODAY
    )
    assert values["p2_impressions"] > 0


async def test_list_of_metrics_carries_window_totals(sim: Client, world: World) -> None:
    account = world.accounts[1]
    listing_id = account.listings[3].listing_id
    window = DateRange(date(2025, 6, 1), date(2025, 6, 7))
    for metric, names in [
        ("p3_impressions", ["p3_impressions", "p2_impressions"]),
        (
            "conversion_rate",
            [
                "conversion_rate",
                "p2_impressions_first_page_rate",
                "search_conversion_rate",
                "listing_conversion_rate",
            ],
        ),
    ]:
        response = await post(
            sim,
            account,
            LIST_OF_METRICS,
            list_of_metrics_payload(listing_id, window, TODAY, metric),
        )
        metrics = component(await response.json())["metrics"]
        assert [m["metricName"] for m in metrics] == names
        assert {m["metricName"]: unwrap(m["value"]) for m in metrics} == expected_metric_values(
            SEED, listing_id, names, window.start, window.end, TODAY
        )
        assert all(m["valueChange"] is None for m in metrics)


async def test_listings_section_lists_the_accounts_listings(sim: Client, world: World) -> None:
    account = world.accounts[1]
    response = await post(sim, account, LISTINGS_SECTION, listings_section_payload())
    rows = component(await response.json())["tableRows"]

    assert sorted(r["id"] for r in rows) == sorted(account.listing_ids)
    by_id = {lst.listing_id: lst for lst in account.listings}
    for row in rows:
        assert row["internalName"] == by_id[row["id"]].internal_name
        assert row["listingName"] == by_id[row["id"]].listing_name


# -- request counts -------------------------------------------------------------------------


async def test_requests_are_counted_per_account_operation_and_listing(
    sim: Client, world: World
) -> None:
    account = world.accounts[0]
    a, b = account.listings[0].listing_id, account.listings[1].listing_id
    window = DateRange(date(2025, 6, 1), date(2025, 6, 28))
    await post(sim, account, LISTINGS_SECTION, listings_section_payload())
    for listing_id in (a, a, b):
        await post(sim, account, CHART, chart_payload(listing_id, window, TODAY, "p3_impressions"))
    await post(
        sim, account, LIST_OF_METRICS, list_of_metrics_payload(b, window, TODAY, "p3_impressions")
    )

    counts = await (await sim.get("/_sim/requests")).json()
    assert counts == {
        account.account_id: {
            "total": 5,
            "ListingsSectionQuery": 1,
            "ChartQuery": 3,
            "ListOfMetricsQuery": 1,
            "listings": {a: 2, b: 2},
            "listings_ok": {a: 2, b: 2},
            "preflights": 0,
            "strikes": 0,
            "strike_reasons": {"no_bm_sv": 0, "headers": 0},
        }
    }

    assert (await sim.delete("/_sim/requests")).status == 200
    assert await (await sim.get("/_sim/requests")).json() == {}


# -- faults ---------------------------------------------------------------------------------


async def test_fault_control_get_put_post_delete(sim: Client, world: World) -> None:
    assert await (await sim.get("/_sim/faults")).json() == FaultConfig().model_dump(mode="json")

    put = await sim.put("/_sim/faults", json={"server_error_rate": 0.5, "retry_after_s": 0})
    assert put.status == 200
    assert (await put.json())["server_error_rate"] == 0.5

    post_ = await sim.post("/_sim/faults", json={"rate_limit_rate": 0.25})
    state = await post_.json()
    assert (state["server_error_rate"], state["rate_limit_rate"], state["retry_after_s"]) == (
        0.5,
        0.25,
        0,
    )

    # PUT replaces: keys it leaves out go back to their defaults.
    state = await (await sim.put("/_sim/faults", json={"malformed_json_rate": 0.1})).json()
    assert (state["server_error_rate"], state["malformed_json_rate"]) == (0.0, 0.1)

    for bad in ({"server_error_rate": 2}, {"no_such_fault": 1}, {"expired_sessions": {"1": "x"}}):
        assert (await sim.put("/_sim/faults", json=bad)).status == 400
    assert (await sim.put("/_sim/faults", data=b"{oops")).status == 400

    reset = await (await sim.delete("/_sim/faults")).json()
    assert reset == FaultConfig().model_dump(mode="json")


@pytest.mark.parametrize("form", list(AuthForm))
async def test_expired_session_in_each_form(sim: Client, world: World, form: AuthForm) -> None:
    victim, bystander = world.accounts[0], world.accounts[1]
    await sim.put("/_sim/faults", json={"expired_sessions": {victim.account_id: form.value}})

    response = await post(sim, victim, LISTINGS_SECTION, listings_section_payload())
    text = await response.text()
    match form:
        case AuthForm.HTTP_401:
            assert response.status == 401
        case AuthForm.HTTP_403:
            assert response.status == 403
        case AuthForm.AUTHENTICATION_REQUIRED:
            assert response.status == 200
            doc = json.loads(text)
            assert doc["errors"][0]["extensions"]["errorType"] == "authentication_required"
        case AuthForm.NULL_COMPONENTS:
            assert response.status == 200
            doc = json.loads(text)
            assert doc["data"]["porygon"]["getPerformanceComponents"] is None
        case AuthForm.LOGIN_PAGE:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "Log in" in text

    other = await post(sim, bystander, LISTINGS_SECTION, listings_section_payload())
    assert other.status == 200
    assert component(await other.json())["tableRows"]


async def test_rate_limit_server_error_and_malformed_json(sim: Client, world: World) -> None:
    account = world.accounts[0]
    body = listings_section_payload()

    await sim.put("/_sim/faults", json={"rate_limit_rate": 1, "retry_after_s": 7})
    limited = await post(sim, account, LISTINGS_SECTION, body)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "7")

    await sim.put("/_sim/faults", json={"rate_limit_rate": 1, "retry_after_s": None})
    assert "Retry-After" not in (await post(sim, account, LISTINGS_SECTION, body)).headers

    await sim.put("/_sim/faults", json={"server_error_rate": 1, "server_error_status": 502})
    assert (await post(sim, account, LISTINGS_SECTION, body)).status == 502

    await sim.put("/_sim/faults", json={"malformed_json_rate": 1})
    broken = await post(sim, account, LISTINGS_SECTION, body)
    assert broken.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await broken.text())


async def test_malformed_data_for_one_listing_only(sim: Client, world: World) -> None:
    account = world.accounts[2]
    bad, good = account.listings[0].listing_id, account.listings[1].listing_id
    await sim.put("/_sim/faults", json={"malformed_listings": [bad]})
    window = DateRange(date(2025, 6, 1), date(2025, 6, 28))

    async def chart(listing_id: str) -> dict[str, Any]:
        body = chart_payload(listing_id, window, TODAY, "p3_impressions")
        return component(await (await post(sim, account, CHART, body)).json())

    broken, fine = await chart(bad), await chart(good)
    assert "metricLineCharts" not in broken
    assert len(fine["metricLineCharts"]) == 2

    counts = (await (await sim.get("/_sim/requests")).json())[account.account_id]
    assert counts["listings_ok"] == {good: 1}


async def test_random_faults_follow_the_seed(world: World) -> None:
    async def outcomes() -> list[int]:
        config = FaultConfig(rate_limit_rate=0.3, server_error_rate=0.3, retry_after_s=0, seed=3)
        app = create_app(world, config, today=lambda: TODAY, lifecycle=False)
        async with TestClient(TestServer(app)) as client:
            account = world.accounts[0]
            return [
                (await post(client, account, LISTINGS_SECTION, listings_section_payload())).status
                for _ in range(30)
            ]

    first = await outcomes()
    assert first == await outcomes()
    assert {200, 429, 503} <= set(first)


async def test_latency_is_injected(sim: Client, world: World) -> None:
    await sim.put("/_sim/faults", json={"latency_ms": {"mean": 120, "jitter": 20}})
    started = time.perf_counter()
    await post(sim, world.accounts[0], LISTINGS_SECTION, listings_section_payload())
    assert time.perf_counter() - started >= 0.1


# -- the real process -----------------------------------------------------------------------


async def test_process_serves_announces_its_port_and_stops_on_sigterm(
    start_simulator: StartSimulator,
) -> None:
    faults = {"rate_limit_rate": 0.5, "retry_after_s": 0}
    # --port 0: the simulator picks a port and announces it; start_simulator reads it there.
    sim = await start_simulator(seed=4, today=date(2025, 7, 11), faults=faults)
    assert sim.url.startswith("http://127.0.0.1:")
    port = int(sim.url.rsplit(":", 1)[1])
    assert port > 0

    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        accounts = await (await http.get("/_sim/accounts")).json()
        assert [a["account_id"] for a in accounts] == [
            a.account_id for a in build_world(2, 3, 4).accounts
        ]
        state = await (await http.get("/_sim/faults")).json()
        assert (state["rate_limit_rate"], state["retry_after_s"]) == (0.5, 0)

    assert sim.proc.terminate() == 0


def test_process_refuses_a_bad_fault_configuration(bare_launcher: ServiceLauncher) -> None:
    result = bare_launcher.run(
        ["simulator", "--port", "0"], env={"SIM_FAULTS": '{"server_error_rate": 3}'}
    )
    assert result.returncode == 2
    assert "SIM_FAULTS" in result.stderr
