"""The read API against an oracle: an account synced on two scrape days by the real data
path (simulator, nats-server, fetcher, writer, scheduler as processes), then every figure
``GET /insights``, ``/insights/forward`` and ``/portfolio`` of a real admin process
answers compared with tests/expected_insights.py, which computes them from the
simulator's truth and the contract's rules without the admin's code.

Day 1 is a first sync (25 weeks back, 5 ahead); day 2, three days later, an incremental
one (1 week back, 5 ahead), so the dates 2025-07-12 .. 2025-08-17 are scraped twice: the
future ones built up further on day 2, the ones that passed in between at their final
truth, and a week past day 1's horizon exists only in day 2's scrape.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared.airbnb import cookies
from shared.airbnb.windows import sync_window
from shared.crypto import CredentialCipher
from tests.expected_insights import (
    WINDOW_TABLES,
    Granularity,
    Metric,
    Scrape,
    Stored,
    forward,
    portfolio_listing,
    scraped_at,
    series,
    stored_rows,
)
from tests.infra import (
    PostgresServer,
    free_port,
)
from tests.stack import Stack, isolated_stack, wait_for_jobs

pytestmark = pytest.mark.slow

DAY_1 = dt.date(2025, 7, 11)  # a Friday, the scrape day of the captures
DAY_2 = DAY_1 + dt.timedelta(days=3)  # the Monday after: a new ISO week, one more week ahead
SEED = 15
CUSTOMER = "customer-oracle"
KEY = {"X-API-Key": "oracle-key"}
# Every day of data (2025-01-13 .. 2025-08-24) inside whole months.
FROM, TO = dt.date(2025, 1, 1), dt.date(2025, 8, 31)
METRICS: tuple[Metric, ...] = ("p3_impressions", "conversion_rate")
GRANULARITIES: tuple[Granularity, ...] = ("day", "week", "month")


@pytest.fixture
async def stack(
    tmp_path: Path, postgres_server: PostgresServer, secret_keys: str
) -> AsyncIterator[Stack]:
    """A nats-server and a database of the test's own: the scheduler backfills every
    never-synced account of its database at start, so it must see only this one."""
    async with isolated_stack(
        tmp_path,
        postgres_server,
        secret_keys,
        DAY_1,
        database_prefix="sync_airbnb_insights",
        env={"ADMIN_API_KEYS": KEY["X-API-Key"]},
    ) as stack:
        yield stack


async def refresh_credentials(
    db: asyncpg.Connection, secret_keys: str, accounts: list[dict[str, Any]]
) -> None:
    cipher = CredentialCipher(secret_keys.split(","))
    for account in accounts:
        token = cipher.encrypt(cookies.intake(account["cookie"], account["account_id"]))
        await db.execute(
            "UPDATE airbnb.accounts SET credentials_encrypted = $1 WHERE account_id = $2",
            token,
            account["account_id"],
        )


async def assert_database_holds(db: asyncpg.Connection, account_id: str, stored: Stored) -> None:
    """The oracle's rows are the database's: a mismatch below is then the API's, not the
    oracle's model of what was stored."""
    rows = await db.fetch(
        "SELECT airbnb_listing_id, metric_date, time, p3_impressions_your_value,"
        " p3_impressions_similar_value, conversion_rate_your_value,"
        " conversion_rate_similar_value FROM airbnb.chart_query WHERE account_id = $1",
        account_id,
    )
    actual_days = {
        (r["airbnb_listing_id"], r["metric_date"], r["time"]): (
            r["p3_impressions_your_value"],
            r["p3_impressions_similar_value"],
            r["conversion_rate_your_value"],
            r["conversion_rate_similar_value"],
        )
        for r in rows
    }
    expected_days = {
        (lid, day, scraped_at(r.scrape_day)): (r.p3_own, r.p3_similar, r.rate_own, r.rate_similar)
        for (lid, day), day_rows in stored.days.items()
        for r in day_rows
    }
    assert actual_days.keys() == expected_days.keys()
    for key, values in expected_days.items():
        assert list(actual_days[key]) == pytest.approx(list(values), rel=1e-9), key
    for table in WINDOW_TABLES:
        rows = await db.fetch(
            f"SELECT airbnb_listing_id, window_start, time, window_end, conversion_rate_value"
            f" FROM airbnb.{table} WHERE account_id = $1",
            account_id,
        )
        actual = {
            (r["airbnb_listing_id"], r["window_start"], r["time"]): (
                r["window_end"],
                r["conversion_rate_value"],
            )
            for r in rows
        }
        expected = {
            (lid, start, scraped_at(w.scrape_day)): (w.window_end, w.conversion_rate)
            for (t, lid, start), window_rows in stored.windows.items()
            if t == table
            for w in window_rows
        }
        assert actual.keys() == expected.keys(), table
        for key, (window_end, rate) in expected.items():
            assert actual[key][0] == window_end, (table, key)
            assert actual[key][1] == pytest.approx(rate, rel=1e-9), (table, key)


# --- comparing an answer with the oracle --------------------------------------------------------


def _same(actual: Any, expected: Any, where: str, problems: list[str]) -> None:
    """Numbers within 1e-9 (relative), dates as ISO text, timestamps as instants."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            problems.append(f"{where}: expected an object, got {actual!r}")
            return
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{where}.{key}: missing")
            else:
                _same(actual[key], value, f"{where}.{key}", problems)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            n = len(actual) if isinstance(actual, list) else actual
            problems.append(f"{where}: expected {len(expected)} items, got {n}")
            return
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same(a, e, f"{where}[{i}]", problems)
    elif isinstance(expected, dt.datetime):
        try:
            ok = isinstance(actual, str) and dt.datetime.fromisoformat(actual) == expected
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{where}: expected {expected.isoformat()}, got {actual!r}")
    elif isinstance(expected, dt.date):
        if actual != expected.isoformat():
            problems.append(f"{where}: expected {expected.isoformat()}, got {actual!r}")
    elif isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if actual != expected:
            problems.append(f"{where}: expected {expected!r}, got {actual!r}")
    elif isinstance(expected, int | float):
        if (
            isinstance(actual, bool)
            or not isinstance(actual, int | float)
            or not math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
        ):
            problems.append(f"{where}: expected {expected!r}, got {actual!r}")
    else:
        raise TypeError(f"{where}: cannot compare {type(expected)}")


def assert_same(actual: Any, expected: Any, what: str) -> None:
    problems: list[str] = []
    _same(actual, expected, what, problems)
    assert not problems, "\n".join(problems[:15])


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, account_id: str) -> None:
        self.http = http
        self.base = base
        self.account_id = account_id

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: v.isoformat() if isinstance(v, dt.date) else str(v) for k, v in params.items()}
        async with self.http.get(f"{self.base}/api/v1{path}", params=query, headers=KEY) as resp:
            body = await resp.json()
            assert resp.status == 200, (path, params, resp.status, body)
            return body

    async def insights(self, **params: Any) -> Any:
        return await self.get(f"/accounts/{self.account_id}/insights", **params)


async def check_series(
    api: Api,
    stored: Stored,
    metric: Metric,
    granularity: Granularity,
    listing_id: str | None,
    as_of: dt.date | None,
    start: dt.date = FROM,
    end: dt.date = TO,
) -> list[dict[str, Any]]:
    """One ``/insights`` answer equal to the oracle's; its points."""
    params: dict[str, Any] = {"metric": metric, "from": start, "to": end}
    params["granularity"] = granularity
    if listing_id is not None:
        params["listing_id"] = listing_id
    if as_of is not None:
        params["as_of"] = as_of
    body = await api.insights(**params)
    expected = series(stored, metric, start, end, granularity, listing_id, as_of)
    what = f"insights {metric} {granularity} listing={listing_id} as_of={as_of} {start}..{end}"
    assert expected, what
    assert_same(
        body,
        {
            "account_id": api.account_id,
            "listing_id": listing_id,
            "metric": metric,
            "kind": "count" if metric == "p3_impressions" else "rate",
            "granularity": granularity,
            "from": start,
            "to": end,
            "as_of": as_of,
            "points": expected,
        },
        what,
    )
    assert isinstance(body["aggregation"], str) and body["aggregation"], what
    return expected


def _values(points: list[dict[str, Any]]) -> dict[Any, tuple[Any, ...]]:
    return {p["period_start"]: (p["days"], p["own"], p["similar"]) for p in points}


async def test_insights_forward_and_portfolio_equal_the_oracle_over_two_scrape_days(
    stack: Stack,
) -> None:
    sim = await stack.start_simulator(accounts=1, listings=2, seed=SEED)
    (account,) = sim.accounts
    account_id = account["account_id"]
    listing_ids = [listing["listing_id"] for listing in account["listings"]]
    db = await asyncpg.connect(stack.database_url)
    try:
        await stack.register(db, sim.accounts)
        await db.execute(
            "UPDATE airbnb.accounts SET customer_id = $1 WHERE account_id = $2",
            CUSTOMER,
            account_id,
        )
        stack.start("writer")
        stack.start("fetcher")
        scheduler = stack.start("scheduler")  # backfills the never-synced account at start
        (job_1,) = await wait_for_jobs(db, [account_id], scrape_day=DAY_1)
        assert job_1["status"] == "succeeded", job_1

        # Day 2: the simulator's clock and the scheduler's on the next scrape day; its cron
        # fires within two seconds and makes the incremental job.
        assert scheduler.terminate() == 0
        assert sim.proc.terminate() == 0
        stack.today = DAY_2
        port = int(sim.url.rsplit(":", 1)[1])
        sim_2 = await stack.start_simulator(accounts=1, listings=2, seed=SEED, port=port)
        # Day 1's _aaj is stale by day 2 (valid on its day and the next): the host's
        # cookie of today, as a host pastes it again.
        await refresh_credentials(db, stack.secret_keys, sim_2.accounts)
        stack.start("scheduler", SCHEDULE_CRON="*/2 * * * * *")
        (job_2,) = await wait_for_jobs(db, [account_id], scrape_day=DAY_2)
        assert (job_2["status"], job_2["kind"]) == ("succeeded", "incremental"), job_2
        stored = stored_rows(
            SEED,
            listing_ids,
            [
                Scrape(DAY_1, sync_window(DAY_1, first_run=True)),
                Scrape(DAY_2, sync_window(DAY_2, first_run=False)),
            ],
        )
        await assert_database_holds(db, account_id, stored)
    finally:
        await db.close()

    admin_port = free_port()
    admin = stack.launcher.start(
        ["admin"],
        env=stack.service_env(ADMIN_HOST="127.0.0.1", ADMIN_PORT=str(admin_port)),
    )
    admin.wait_for_log(r"admin ready, listening", timeout=30)
    async with aiohttp.ClientSession() as http:
        api = Api(http, f"http://127.0.0.1:{admin_port}", account_id)
        await _check_listings(api, listing_ids)
        await _check_series(api, stored, listing_ids)
        await _check_forward(api, stored, listing_ids[0])
        await _check_portfolio(api, stored, account["listings"])


async def _check_listings(api: Api, listing_ids: list[str]) -> None:
    body = await api.get(f"/accounts/{api.account_id}/listings")
    items = body["items"]
    assert [i["airbnb_listing_id"] for i in items] == sorted(listing_ids)
    assert {i["last_job_status"] for i in items} == {"committed"}
    assert all(i["last_synced_at"] for i in items)


async def _check_series(api: Api, stored: Stored, listing_ids: list[str]) -> None:
    one = listing_ids[0]
    sources: dict[tuple[str, str, bool, str], set[str]] = {}
    for metric in METRICS:
        for granularity in GRANULARITIES:
            for listing_id in (one, None):
                latest = await check_series(api, stored, metric, granularity, listing_id, None)
                day_1 = await check_series(api, stored, metric, granularity, listing_id, DAY_1)
                # as_of day 1 must read something else than the latest for some period, or
                # it would prove nothing: the future dates built up on day 2, and the week
                # that only day 2 scraped.
                assert _values(latest) != _values(day_1), (metric, granularity, listing_id)
                for point in latest + day_1:
                    for side in ("own", "similar"):
                        key = (metric, granularity, listing_id is None, side)
                        sources.setdefault(key, set()).add(point[f"{side}_source"])
    # Every source the contract names where it says (the answers equal the oracle's, so
    # this checks that the oracle, and with it the data, reaches each case).
    assert sources[("conversion_rate", "week", False, "own")] == {"airbnb_window"}, sources
    assert sources[("conversion_rate", "week", True, "own")] == {"view_weighted"}, sources
    assert sources[("conversion_rate", "month", False, "own")] == {"view_weighted"}, sources
    for granularity in ("week", "month"):
        for combined in (False, True):
            rate = sources[("conversion_rate", granularity, combined, "similar")]
            assert rate == {"view_weighted"}, sources
            for side in ("own", "similar"):
                count = sources[("p3_impressions", granularity, combined, side)]
                assert count == {"sum_of_days"}, sources

    # Airbnb's weekly figure is not the view-weighted mean of its days: the source matters.
    windowed = series(stored, "conversion_rate", FROM, TO, "week", one)
    alone = Stored(stored.seed, (one,), stored.days, stored.windows)
    weighted = series(alone, "conversion_rate", FROM, TO, "week")
    assert any(
        not math.isclose(a["own"], w["own"], rel_tol=1e-6)
        for a, w in zip(windowed, weighted, strict=True)
        if w["own"] is not None
    )

    # A range cut inside weeks: the cut weeks are view-weighted, the whole ones Airbnb's.
    start, end = dt.date(2025, 7, 9), dt.date(2025, 7, 30)
    for as_of in (None, DAY_1):
        points = await check_series(api, stored, "conversion_rate", "week", one, as_of, start, end)
        assert points[0]["own_source"] == points[-1]["own_source"] == "view_weighted"
        assert (points[0]["period_start"], points[-1]["period_end"]) == (start, end)
        assert {p["own_source"] for p in points[1:-1]} == {"airbnb_window"}


async def _check_forward(api: Api, stored: Stored, listing_id: str) -> None:
    stay_from, stay_to = DAY_1 - dt.timedelta(days=3), DAY_2 + dt.timedelta(days=60)
    changed = False
    for metric in METRICS:
        body = await api.get(
            f"/accounts/{api.account_id}/insights/forward",
            listing_id=listing_id,
            stay_from=stay_from,
            stay_to=stay_to,
            metric=metric,
        )
        expected = forward(stored, listing_id, stay_from, stay_to, metric)
        assert_same(
            body,
            {
                "account_id": api.account_id,
                "listing_id": listing_id,
                "metric": metric,
                "kind": "count" if metric == "p3_impressions" else "rate",
                "stay_dates": expected,
            },
            f"forward {metric}",
        )
        twice = [s for s in expected if len(s["scrapes"]) == 2]
        assert twice, "no stay date was scraped on both days"
        changed |= any(s["scrapes"][1]["own_change"] for s in twice)
    # The build-up: some stay date ahead of day 1 gained page views by day 2.
    p3 = forward(stored, listing_id, stay_from, stay_to)
    assert any(s["scrapes"][-1]["own_change"] > 0 for s in p3 if len(s["scrapes"]) == 2)
    assert changed


async def _check_portfolio(api: Api, stored: Stored, listings: list[dict[str, Any]]) -> None:
    default_end = DAY_2 - dt.timedelta(days=1)  # the admin's today (day 2) minus one
    cases: list[dict[str, Any]] = [
        {},
        {"customer_id": CUSTOMER, "as_of": DAY_1},
        {"end": dt.date(2025, 7, 20), "drop_threshold": 0.05},
        {"end": dt.date(2025, 7, 20), "as_of": DAY_1, "drop_threshold": 0.01},
    ]
    flagged = False
    answers = []
    for params in cases:
        body = await api.get("/portfolio", **params)
        answers.append(body["listings"])
        end = params.get("end", default_end)
        as_of = params.get("as_of")
        threshold = params.get("drop_threshold", 0.2)
        expected_listings = []
        for listing in sorted(listings, key=lambda item: item["listing_id"]):
            listing_id = listing["listing_id"]
            figures = portfolio_listing(stored, listing_id, end, as_of, threshold)
            flagged |= bool(figures["flags"])
            expected_listings.append(
                {
                    "account_id": api.account_id,
                    "customer_id": CUSTOMER,
                    "airbnb_listing_id": listing_id,
                    "airbnb_internal_name": listing["internal_name"],
                    "listing_name": listing["listing_name"],
                    **figures,
                }
            )
        assert_same(
            body,
            {
                "customer_id": params.get("customer_id"),
                "end": end,
                "as_of": as_of,
                "drop_threshold": threshold,
                "listings": expected_listings,
            },
            f"portfolio {params}",
        )
    assert flagged, "no case set a flag: the flags were not tested"
    # Day 2 moved the figures of day 1's last week (its future days built up further).
    assert answers[0] != answers[1], "as_of changed nothing in the portfolio"
    other = await api.get("/portfolio", customer_id="someone-else")
    assert other["listings"] == []
