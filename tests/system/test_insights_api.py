"""The read API (issue 15, item 1) in process (``aiohttp_client`` over ``create_app``) against
the session's real PostgreSQL, its rows written here with plain SQL: listings and their
last sync, 404s, 422s naming the field, ``as_of`` picking an older scrape (of a day and of
Airbnb's window), the portfolio's flags and its default ``end``, forward demand, the views
of migration 0009 agreeing with the store, and the routes in the OpenAPI document.

The end-to-end check over simulated scrape days is tests/system/test_insights_oracle.py.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.system import test_admin
from tests.system.test_admin import ClientFactory

KEY = {"X-API-Key": "test-key-1"}
D = dt.date

# The admin tests' client factory: an in-process admin on the session's database.
make_client = test_admin.make_client


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


def at(day: dt.date) -> dt.datetime:
    """A scrape day's ``time`` in every row's key: midnight UTC."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


async def new_account(
    db: asyncpg.Connection,
    listings: tuple[str, ...] = ("111", "222"),
    *,
    customer_id: str | None = None,
    deleted: bool = False,
) -> str:
    account_id = str(random.randint(10**14, 10**15 - 1))
    await db.execute(
        "INSERT INTO airbnb.accounts (account_id, customer_id, credentials_encrypted,"
        " x_client_version, user_agent, deleted_at) VALUES ($1, $2, 'not-read', 'v', 'ua', $3)",
        account_id,
        customer_id,
        dt.datetime.now(dt.UTC) if deleted else None,
    )
    for lid in listings:
        await db.execute(
            "INSERT INTO airbnb.listings (account_id, airbnb_listing_id, airbnb_internal_name,"
            " listing_name) VALUES ($1, $2, $3, $4)",
            account_id,
            lid,
            f"internal {lid}",
            f"Listing {lid}",
        )
    return account_id


async def chart(
    db: asyncpg.Connection,
    account_id: str,
    listing_id: str,
    day: dt.date,
    scraped: dt.date,
    views: int,
    rate: float,
    similar_views: int = 100,
    similar_rate: float = 0.01,
) -> None:
    await db.execute(
        "INSERT INTO airbnb.chart_query (account_id, airbnb_listing_id, metric_date, time,"
        " p3_impressions_your_value, conversion_rate_your_value, p3_impressions_similar_value,"
        " conversion_rate_similar_value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        account_id,
        listing_id,
        day,
        at(scraped),
        views,
        rate,
        similar_views,
        similar_rate,
    )


async def window(
    db: asyncpg.Connection,
    table: str,
    account_id: str,
    listing_id: str,
    start: dt.date,
    end: dt.date,
    scraped: dt.date,
    rate: float,
) -> None:
    await db.execute(
        f"INSERT INTO airbnb.{table} (account_id, airbnb_listing_id, window_start, time,"
        " window_end, conversion_rate_value) VALUES ($1, $2, $3, $4, $5, $6)",
        account_id,
        listing_id,
        start,
        at(scraped),
        end,
        rate,
    )


async def get(client: TestClient, path: str, status: int = 200, /, **params: Any) -> Any:
    resp = await client.get(path, params={k: str(v) for k, v in params.items()}, headers=KEY)
    body = await resp.json()
    assert resp.status == status, body
    return body


def fields(body: dict[str, Any]) -> list[str]:
    assert body["error"] == "validation_error", body
    return [f["field"] for f in body["fields"]]


# --- listings -------------------------------------------------------------------------------


async def insert_job(
    db: asyncpg.Connection,
    account_id: str,
    created: dt.datetime,
    listings: dict[str, tuple[str, dt.datetime | None]],
) -> uuid.UUID:
    job_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key, scrape_day,"
        " window_start, window_end, status, created_at, finished_at) VALUES ($1, $2,"
        " 'incremental', 'schedule', $3, $4, $4, $4, 'partial', $5::timestamptz,"
        " $5::timestamptz + interval '1 hour')",
        job_id,
        account_id,
        f"{account_id}:{job_id}",
        created.date(),
        created,
    )
    for lid, (status, finished) in listings.items():
        await db.execute(
            "INSERT INTO airbnb.sync_job_listings (job_id, airbnb_listing_id, status,"
            " finished_at) VALUES ($1, $2, $3, $4)",
            job_id,
            lid,
            status,
            finished,
        )
    return job_id


async def test_listings_with_their_last_sync_and_last_job(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = await new_account(db, ("333", "111", "222"))
    t0 = dt.datetime(2026, 3, 1, 4, tzinfo=dt.UTC)
    committed_at = t0 + dt.timedelta(minutes=5)
    older = await insert_job(
        db, aid, t0, {"111": ("committed", committed_at), "222": ("failed", None)}
    )
    newer = await insert_job(db, aid, t0 + dt.timedelta(days=1), {"111": ("pending", None)})

    body = await get(client, f"/api/v1/accounts/{aid}/listings")
    assert body["account_id"] == aid
    assert [
        (i["airbnb_listing_id"], i["last_job_status"], i["last_job_id"]) for i in body["items"]
    ] == [("111", "pending", str(newer)), ("222", "failed", str(older)), ("333", None, None)]
    by_id = {i["airbnb_listing_id"]: i for i in body["items"]}
    # The listing's own commit time, in the older job: the newer one has not committed it.
    assert dt.datetime.fromisoformat(by_id["111"]["last_synced_at"]) == committed_at
    assert by_id["222"]["last_synced_at"] is None
    assert (by_id["333"]["airbnb_internal_name"], by_id["333"]["listing_name"]) == (
        "internal 333",
        "Listing 333",
    )

    unknown = await get(client, "/api/v1/accounts/123456789012345/listings", 404)
    assert unknown["error"] == "not_found"
    assert (await get(client, "/api/v1/accounts/0abc/listings", 404))["error"] == "not_found"


# --- 404 and 422 --------------------------------------------------------------------------


async def test_unknown_accounts_and_listings_are_404(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = await new_account(db)
    q = {"metric": "p3_impressions", "from": "2026-01-01", "to": "2026-01-31"}
    body = await get(client, "/api/v1/accounts/123456789012345/insights", 404, **q)
    assert body["error"] == "not_found" and "account" in body["detail"]
    body = await get(client, f"/api/v1/accounts/{aid}/insights", 404, listing_id="999", **q)
    assert body["error"] == "not_found" and "listing 999" in body["detail"]
    fwd = {"listing_id": "999", "stay_from": "2026-01-01", "stay_to": "2026-01-31"}
    assert (await get(client, f"/api/v1/accounts/{aid}/insights/forward", 404, **fwd))[
        "error"
    ] == "not_found"
    # a listing of another account is not this account's
    other = await new_account(db, ("444",))
    await get(client, f"/api/v1/accounts/{aid}/insights", 404, listing_id="444", **q)
    await get(client, f"/api/v1/accounts/{other}/insights", 200, listing_id="444", **q)


async def test_bad_queries_are_422_naming_the_field(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = await new_account(db)
    url = f"/api/v1/accounts/{aid}/insights"
    good = {"metric": "conversion_rate", "from": "2026-01-01", "to": "2026-01-31"}
    assert fields(await get(client, url, 422, **{**good, "metric": "bookings"})) == ["metric"]
    assert fields(await get(client, url, 422, **{**good, "to": "2025-12-31"})) == ["to"]
    too_long = await get(client, url, 422, **{**good, "to": "2029-01-01"})
    assert fields(too_long) == ["to"]
    assert "1097 days" in too_long["fields"][0]["message"]
    assert fields(await get(client, url, 422, **{**good, "granularity": "year"})) == ["granularity"]
    assert fields(await get(client, url, 422, **{**good, "as_of": "yesterday"})) == ["as_of"]
    assert fields(await get(client, url, 422, **{**good, "from": "1969-12-31"})) == ["from"]
    assert fields(await get(client, url, 422, to="2026-01-31")) == ["metric", "from"]
    assert fields(await get(client, url, 422, **{**good, "limit": "3"})) == ["limit"]
    fwd = f"/api/v1/accounts/{aid}/insights/forward"
    assert fields(
        await get(client, fwd, 422, listing_id="111", stay_from="2026-01-01", stay_to="2027-01-02")
    ) == ["stay_to"]
    assert fields(await get(client, fwd, 422, stay_from="2026-01-01", stay_to="2026-01-02")) == [
        "listing_id"
    ]
    for bad in ("0", "1.5", "-0.2", "much"):
        body = await get(client, "/api/v1/portfolio", 422, drop_threshold=bad)
        assert fields(body) == ["drop_threshold"]
    assert fields(await get(client, "/api/v1/portfolio", 422, end="0001-01-01")) == ["end"]


async def test_the_read_api_needs_the_key(client: TestClient) -> None:
    resp = await client.get("/api/v1/portfolio")
    assert resp.status == 401


# --- as_of ----------------------------------------------------------------------------------


async def test_as_of_picks_the_older_scrape(client: TestClient, db: asyncpg.Connection) -> None:
    aid = await new_account(db)
    day = D(2026, 3, 10)
    first, second = D(2026, 3, 1), D(2026, 3, 11)  # scraped ahead of the day, then after it
    await chart(db, aid, "111", day, first, 10, 0.1)
    await chart(db, aid, "111", day, second, 15, 0.2)
    await chart(db, aid, "222", day, second, 5, 0.4)
    url = f"/api/v1/accounts/{aid}/insights"
    q = {"metric": "p3_impressions", "from": day, "to": day, "listing_id": "111"}

    latest = await get(client, url, **q)
    assert latest["as_of"] is None and latest["kind"] == "count"
    (point,) = latest["points"]
    assert (point["own"], point["similar"], point["own_source"], point["days"]) == (
        15,
        100,
        "daily",
        1,
    )
    assert dt.datetime.fromisoformat(point["scraped_at"]) == at(second)
    # as_of is inclusive: the second scrape's own day sees it.
    assert (await get(client, url, **q, as_of=second))["points"][0]["own"] == 15
    for as_of in (first, second - dt.timedelta(days=1)):
        older = await get(client, url, **q, as_of=as_of)
        assert older["as_of"] == str(as_of)
        (point,) = older["points"]
        assert point["own"] == 10
        assert dt.datetime.fromisoformat(point["scraped_at"]) == at(first)
    assert (await get(client, url, **q, as_of=first - dt.timedelta(days=1)))["points"] == []

    # All listings combined: 15 + 5 now; only listing 111's older row as of the first scrape.
    both = {"metric": "p3_impressions", "from": day, "to": day}
    assert (await get(client, url, **both))["points"][0]["own"] == 20
    assert (await get(client, url, **both, as_of=first))["points"][0]["own"] == 10
    rate = await get(client, url, metric="conversion_rate", **{"from": day, "to": day})
    # (0.2 * 15 + 0.4 * 5) / 20
    assert rate["points"][0]["own"] == pytest.approx(0.25)
    assert rate["listing_id"] is None and rate["kind"] == "rate"


async def test_a_rate_airbnb_showed_as_a_dash_is_no_rate(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """Airbnb sends doubleValue 0.0 with valueString "-" where a rate has no denominator;
    the rows keep both as sent, and the read API answers null there, not 0 %."""
    aid = await new_account(db)
    dash, zero = D(2026, 3, 2), D(2026, 3, 3)
    for day, text in ((dash, "-"), (zero, "0.00%")):
        await db.execute(
            "INSERT INTO airbnb.chart_query (account_id, airbnb_listing_id, metric_date, time,"
            " p3_impressions_your_value, conversion_rate_your_value,"
            " conversion_rate_your_value_string, p3_impressions_similar_value,"
            " conversion_rate_similar_value, conversion_rate_similar_value_string)"
            " VALUES ($1, '111', $2, $3, 0, 0.0, $4, 0, 0.0, $4)",
            aid,
            day,
            at(zero),
            text,
        )
    # The whole ISO week of 2026-03-02 as Airbnb's 7-day window (Sunday..Saturday before).
    await db.execute(
        "INSERT INTO airbnb.list_of_metrics (account_id, airbnb_listing_id, window_start, time,"
        " window_end, conversion_rate_value, conversion_rate_value_string)"
        " VALUES ($1, '111', $2, $3, $4, 0.0, '-')",
        aid,
        D(2026, 3, 1),
        at(zero),
        D(2026, 3, 7),
    )
    url = f"/api/v1/accounts/{aid}/insights"
    q = {"metric": "conversion_rate", "listing_id": "111", "from": dash}
    days = (await get(client, url, **q, to=zero))["points"]
    assert [(p["period_start"], p["own"], p["similar"]) for p in days] == [
        (str(dash), None, None),
        (str(zero), 0.0, 0.0),
    ]
    (week,) = (await get(client, url, **q, to=D(2026, 3, 8), granularity="week"))["points"]
    # No window figure to use, and no page views to weigh the days by.
    assert (week["own"], week["own_source"]) == (None, "view_weighted")


async def test_a_week_is_airbnbs_window_figure_as_of_the_scrape_that_had_it(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = await new_account(db)
    monday, sunday = D(2026, 3, 2), D(2026, 3, 8)
    await chart(db, aid, "111", monday, D(2026, 3, 9), 100, 0.1, 200, 0.05)
    await chart(db, aid, "111", D(2026, 3, 4), D(2026, 3, 9), 50, 0.4, 600, 0.2)
    # Airbnb's window Sunday..Saturday holds the chart's Monday..Sunday; scraped twice.
    await window(
        db, "list_of_metrics", aid, "111", D(2026, 3, 1), D(2026, 3, 7), D(2026, 3, 10), 0.3
    )
    await window(
        db, "list_of_metrics", aid, "111", D(2026, 3, 1), D(2026, 3, 7), D(2026, 3, 12), 0.35
    )
    # A window on the chart's own dates (no offset) is not the week's.
    await window(db, "chart_summary", aid, "111", monday, sunday, D(2026, 3, 9), 0.9)
    url = f"/api/v1/accounts/{aid}/insights"
    q = {
        "metric": "conversion_rate",
        "from": monday,
        "to": sunday,
        "granularity": "week",
        "listing_id": "111",
    }
    (point,) = (await get(client, url, **q))["points"]
    assert (point["own"], point["own_source"]) == (0.35, "airbnb_window")
    assert dt.datetime.fromisoformat(point["scraped_at"]) == at(D(2026, 3, 12))
    # similar: (0.05 * 200 + 0.2 * 600) / 800
    assert (point["similar"], point["similar_source"]) == (pytest.approx(0.1625), "view_weighted")
    (point,) = (await get(client, url, **q, as_of="2026-03-11"))["points"]
    assert (point["own"], point["own_source"]) == (0.3, "airbnb_window")
    # Before any window was scraped: the days' rates weighted by views, (10 + 20) / 150.
    (point,) = (await get(client, url, **q, as_of="2026-03-09"))["points"]
    assert (point["own"], point["own_source"]) == (pytest.approx(0.2), "view_weighted")
    assert dt.datetime.fromisoformat(point["scraped_at"]) == at(D(2026, 3, 9))
    body = await get(client, url, **{**q, "to": "2026-03-07"})  # the week clipped
    (point,) = body["points"]
    assert (point["own"], point["own_source"]) == (pytest.approx(0.2), "view_weighted")
    assert (point["period_start"], point["period_end"], point["days"]) == (
        "2026-03-02",
        "2026-03-07",
        2,
    )
    assert "Airbnb" in body["aggregation"]
    counts = await get(client, url, **{**q, "metric": "p3_impressions"})
    assert (counts["points"][0]["own"], counts["points"][0]["own_source"]) == (150, "sum_of_days")


# --- the views of migration 0009 ----------------------------------------------------------


async def test_the_latest_views_hold_the_newest_scrape_of_each_key(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = await new_account(db)
    for scraped, views in ((D(2026, 3, 1), 1), (D(2026, 3, 3), 3), (D(2026, 3, 2), 2)):
        await chart(db, aid, "111", D(2026, 3, 1), scraped, views, 0.1)
        await window(
            db, "list_of_metrics", aid, "111", D(2026, 2, 22), D(2026, 2, 28), scraped, views
        )
        await window(db, "chart_summary", aid, "111", D(2026, 2, 1), D(2026, 2, 28), scraped, views)
    latest = await db.fetch(
        "SELECT p3_impressions_your_value, time FROM airbnb.chart_query_latest"
        " WHERE account_id = $1",
        aid,
    )
    assert [(r[0], r[1]) for r in latest] == [(3, at(D(2026, 3, 3)))]
    for table in ("list_of_metrics_latest", "chart_summary_latest"):
        rate = await db.fetchval(
            f"SELECT conversion_rate_value FROM airbnb.{table} WHERE account_id = $1", aid
        )
        assert rate == 3
    # The store's own shape gives the same row.
    q = {"metric": "p3_impressions", "from": "2026-03-01", "to": "2026-03-01"}
    assert (await get(client, f"/api/v1/accounts/{aid}/insights", **q))["points"][0]["own"] == 3


# --- portfolio ------------------------------------------------------------------------------


async def test_portfolio_flags_and_changes(
    make_client: ClientFactory, db: asyncpg.Connection
) -> None:
    customer = f"cust-{uuid.uuid4()}"
    falling = await new_account(db, ("111", "222"), customer_id=customer)
    steady = await new_account(db, ("333",), customer_id=customer)
    await new_account(db, ("999",), customer_id=customer, deleted=True)
    end = D(2026, 3, 29)
    scraped = end + dt.timedelta(days=1)
    for i in range(56):
        day = end - dt.timedelta(days=i)
        recent = i < 7
        # 111: page views halve in the last 7 days, conversion steady
        await chart(db, falling, "111", day, scraped, 5 if recent else 10, 0.1)
        # 222: page views steady, conversion falls by exactly 25 % (binary fractions, so
        # that the change is exactly -0.25)
        await chart(db, falling, "222", day, scraped, 10, 0.375 if recent else 0.5)
        await chart(db, steady, "333", day, scraped, 10, 0.1)
    # A later scrape of 333's last day, which as_of can leave out.
    await chart(db, steady, "333", end, end + dt.timedelta(days=3), 80, 0.1)
    client = await make_client(SYNC_AIRBNB_TODAY="2026-03-30")

    body = await get(
        client, "/api/v1/portfolio", customer_id=customer, as_of=scraped, drop_threshold="0.25"
    )
    assert (body["customer_id"], body["end"], body["as_of"], body["drop_threshold"]) == (
        customer,
        "2026-03-29",  # SYNC_AIRBNB_TODAY minus one day
        str(scraped),
        0.25,
    )
    listings = body["listings"]
    assert [(x["account_id"], x["airbnb_listing_id"]) for x in listings] == sorted(
        [(falling, "111"), (falling, "222"), (steady, "333")]
    )
    by_id = {x["airbnb_listing_id"]: x for x in listings}
    pv = by_id["111"]["page_views"]["own"]
    assert (pv["last_7"], pv["prior_7"], pv["last_28"], pv["prior_28"]) == (35, 70, 245, 280)
    assert pv["change_7"] == pytest.approx(-0.5)
    assert pv["change_28"] == pytest.approx(-0.125)
    assert by_id["111"]["flags"] == ["page_views_7d"]
    assert by_id["111"]["page_views"]["similar"]["change_7"] == 0
    cr = by_id["222"]["conversion_rate"]["own"]
    assert (cr["last_7"], cr["prior_7"], cr["change_7"]) == (0.375, 0.5, -0.25)
    assert by_id["222"]["flags"] == []  # a fall of exactly the threshold is not flagged
    assert by_id["333"]["flags"] == []
    assert by_id["333"]["trend"] == {"start": "2026-03-02", "page_views": [10] * 28}
    assert by_id["111"]["trend"]["page_views"] == [10] * 21 + [5] * 7
    assert by_id["111"]["customer_id"] == customer

    # The default threshold, 0.2, flags 222's fall of 25 %; without as_of 333's later
    # scrape counts.
    body = await get(client, "/api/v1/portfolio", customer_id=customer)
    assert (body["drop_threshold"], body["as_of"]) == (0.2, None)
    by_id = {x["airbnb_listing_id"]: x for x in body["listings"]}
    assert by_id["222"]["flags"] == ["conversion_rate_7d"]
    assert by_id["333"]["page_views"]["own"]["last_7"] == 60 + 80
    assert by_id["333"]["trend"]["page_views"][-1] == 80
    # Another end: the periods move with it.
    body = await get(client, "/api/v1/portfolio", customer_id=customer, end="2026-03-22")
    by_id = {x["airbnb_listing_id"]: x for x in body["listings"]}
    assert by_id["111"]["page_views"]["own"]["last_7"] == 70
    # prior_28 = [01-26, 02-22] has rows from 02-02 on only: the sum of the 21 days with data
    assert by_id["111"]["page_views"]["own"]["prior_28"] == 210
    assert by_id["111"]["flags"] == []
    assert (await get(client, "/api/v1/portfolio", customer_id="nobody-" + customer))[
        "listings"
    ] == []


# --- forward --------------------------------------------------------------------------------


async def test_forward_demand_shows_each_scrapes_change(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = await new_account(db)
    stay = D(2026, 4, 20)
    for scraped, views, similar in (
        (D(2026, 4, 1), 3, 30),
        (D(2026, 4, 2), 7, 33),
        (D(2026, 4, 5), 6, 40),
    ):
        await chart(db, aid, "111", stay, scraped, views, 0.1, similar)
    await chart(db, aid, "111", D(2026, 4, 22), D(2026, 4, 5), 1, 0.1)
    await chart(db, aid, "222", stay, D(2026, 4, 5), 99, 0.1)  # another listing
    url = f"/api/v1/accounts/{aid}/insights/forward"
    body = await get(client, url, listing_id="111", stay_from="2026-04-19", stay_to="2026-04-22")
    assert (body["listing_id"], body["metric"], body["kind"]) == ("111", "p3_impressions", "count")
    assert [s["stay_date"] for s in body["stay_dates"]] == ["2026-04-20", "2026-04-22"]
    scrapes = body["stay_dates"][0]["scrapes"]
    assert [
        (s["lead_days"], s["own"], s["own_change"], s["similar"], s["similar_change"])
        for s in scrapes
    ] == [(19, 3, None, 30, None), (18, 7, 4, 33, 3), (15, 6, -1, 40, 7)]
    assert [dt.datetime.fromisoformat(s["scraped_at"]) for s in scrapes] == [
        at(D(2026, 4, 1)),
        at(D(2026, 4, 2)),
        at(D(2026, 4, 5)),
    ]
    rates = await get(
        client,
        url,
        listing_id="111",
        stay_from="2026-04-20",
        stay_to="2026-04-20",
        metric="conversion_rate",
    )
    assert rates["kind"] == "rate"
    assert [s["own_change"] for s in rates["stay_dates"][0]["scrapes"]] == [None, 0.0, 0.0]


# --- the document ---------------------------------------------------------------------------


async def test_the_document_lists_the_read_api_with_its_rules(client: TestClient) -> None:
    doc = await get(client, "/api/v1/openapi.json")
    paths = doc["paths"]
    ops = {
        "/api/v1/accounts/{account_id}/listings": "listListings",
        "/api/v1/accounts/{account_id}/insights": "getInsights",
        "/api/v1/accounts/{account_id}/insights/forward": "getForwardInsights",
        "/api/v1/portfolio": "getPortfolio",
    }
    for path, operation_id in ops.items():
        op = paths[path]["get"]
        assert (op["operationId"], op["tags"]) == (operation_id, ["insights"])
        assert {"200", "401", "403", "503"} <= set(op["responses"])
    insights = paths["/api/v1/accounts/{account_id}/insights"]["get"]
    params = {p["name"]: p for p in insights["parameters"]}
    assert set(params) == {
        "account_id",
        "metric",
        "from",
        "to",
        "granularity",
        "listing_id",
        "as_of",
    }
    assert [params[n]["required"] for n in ("metric", "from", "to", "granularity")] == [
        True,
        True,
        True,
        False,
    ]
    assert "weighted by" in insights["description"]
    assert "Monday..Sunday" in insights["description"]
    assert "one day off" in insights["description"]
    assert {"404", "422"} <= set(insights["responses"])
    point = doc["components"]["schemas"]["InsightPoint"]["properties"]
    assert {"period_start", "period_end", "days", "own", "similar", "own_source"} <= set(point)
    assert "from" in doc["components"]["schemas"]["InsightsOut"]["properties"]
    portfolio = {p["name"] for p in paths["/api/v1/portfolio"]["get"]["parameters"]}
    assert portfolio == {"customer_id", "drop_threshold", "as_of", "end"}
    assert "never Airbnb's window" in paths["/api/v1/portfolio"]["get"]["description"]
