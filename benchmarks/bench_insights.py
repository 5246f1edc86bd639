"""The read API's SQL on a year of data: insights, forward demand and the portfolio.

Run ``python -m benchmarks.bench_insights [--listings N] [--days D] [--runs R]
[--keep | --reuse] [--http]``. Defaults are issue 15's "Speed": 1,000 listings (100
accounts of 10, 10 customers of 10 accounts) x 365 scrape days on plain PostgreSQL
(``DATABASE_URL``'s server when set, else an embedded one, as the other benchmarks).

**The data** is what a year of daily incremental syncs leaves, generated inside
PostgreSQL (``INSERT ... SELECT`` over ``generate_series``, two connections, the load
timed). Scrape day ``s`` (``time`` = its midnight UTC) syncs the window of DESIGN.md,
Sunday on or before ``s`` minus 1 week .. Saturday on or after ``s`` plus 5 weeks (49
days, ``shared.airbnb.windows.sync_window``), so it writes chart_query rows for the 49
metric dates one day later (Airbnb's offset, spec15) and list_of_metrics (7-day) and
chart_summary (28-day) rows for the window's slices: every chart point is scraped ~49
times, ~17.9 M chart_query rows. Values are a pure function of (listing, date): tens of
page views a day with a weekly pattern, rates in 0..0.1, future dates' counts built up
by ``exp(-lead / 90)`` as the simulator does. ``--keep`` leaves the database (and the
embedded server's data in ``--state-dir``) behind; ``--reuse`` uses it again when it
holds data of the same sizes, so a re-run does not reload.

**The queries** are the admin's own (``services.admin.store``), on one asyncpg
connection: each warmed up, then timed ``--runs`` times (fewer when a case would take
longer than ``--case-budget-s``), p50 and p99 in ms; its ``EXPLAIN (ANALYZE, BUFFERS)``
goes to ``--plans`` (benchmarks/insights_plans.md by default). **The floor** of each is
a bare ``SELECT`` of the rows it reads, timed the same way beside it: ``floor_rows``,
the raw rows of its primary-key range (every scrape of every key: what a query of the
latest scrape per key must read without an index of its own), and ``floor_latest``,
the latest row per key with no aggregation. ``--http`` also times each route through
a real ``sync-airbnb admin`` process with one aiohttp client (handler, JSON and HTTP
on top of the SQL).

Stdout: one JSON line per case; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import emit, machine, note

# The last scrape day of the data (a Monday); the first is --days before it.
LAST_SCRAPE_DAY = dt.date(2026, 11, 30)
LISTINGS_PER_ACCOUNT = 10
ACCOUNTS_PER_CUSTOMER = 10
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PLANS = REPO_ROOT / "benchmarks" / "insights_plans.md"
DEFAULT_STATE = Path(tempfile.gettempdir()) / "sync-airbnb-bench-insights"


# --- the data -----------------------------------------------------------------------------------


# SQL of a Sunday on or before a date (extract(dow): Sunday is 0), as week_start() does.
def _sunday(expr: str) -> str:
    return f"(({expr}) - extract(dow FROM ({expr}))::int)"


# A listing's daily truth as a pure function of (listing, date): a base of 8..47 own page
# views (more for "similar listings", an average of several), a weekly pattern (Friday and
# Saturday busiest, as the simulator's), noise from a hash, rates 0.005..0.095.
_TRUTH = """
    CROSS JOIN LATERAL (
        SELECT (8 + abs(hashtext(l.airbnb_listing_id)) % 40)
                   * (ARRAY[0.85, 0.8, 0.85, 0.95, 1.2, 1.3, 1.05])[extract(isodow FROM m.d)::int]
                   AS base,
               hashtextextended(l.airbnb_listing_id || m.d::text, 0) AS h
    ) b
    CROSS JOIN LATERAL (
        SELECT floor(b.base * (0.6 + 0.8 * ((b.h & 1023) / 1023.0)))::bigint AS own,
               floor((b.base * 1.2 + 5) * (0.7 + 0.6 * (((b.h >> 10) & 1023) / 1023.0)))::bigint
                   AS similar,
               round(0.005 + 0.09 * (((b.h >> 20) & 1023) / 1023.0), 4)::float8 AS rate_own,
               round(0.005 + 0.09 * (((b.h >> 30) & 1023) / 1023.0), 4)::float8 AS rate_similar
    ) t
"""

# Scrape days $1..$2, then every listing in key order, as the daily syncs write them:
# the heap ends up in the writer's order (by scrape day, then account, listing, date), so
# a listing's dates are spread over a year of pages, as on a real server. The LATERAL
# reference to s keeps the days the outer loop.
_SCRAPE_DAYS = """
FROM (SELECT d::date AS d FROM generate_series($1::date, $2::date, interval '1 day') AS d) s
CROSS JOIN LATERAL (
    SELECT * FROM airbnb.listings WHERE s.d IS NOT NULL ORDER BY account_id, airbnb_listing_id
) l
"""

# chart_query: per scrape day s and listing, the 49 metric dates of s's window one day
# later (Airbnb's offset): [sunday(s) - 6, sunday(s) + 42]. A future date's counts are
# what a scrape ahead of it sees: the truth times exp(-lead / 90), floored.
_CHART_QUERY_SQL = f"""
INSERT INTO airbnb.chart_query (
    account_id, airbnb_listing_id, metric_date, time, airbnb_internal_name,
    conversion_rate_your_value, conversion_rate_your_value_string,
    conversion_rate_similar_value, conversion_rate_similar_value_string,
    p3_impressions_your_value, p3_impressions_your_value_string,
    p3_impressions_similar_value, p3_impressions_similar_value_string)
SELECT l.account_id, l.airbnb_listing_id, m.d, s.d::timestamp AT TIME ZONE 'UTC',
       l.airbnb_internal_name,
       CASE WHEN v.own > 0 THEN t.rate_own END,
       CASE WHEN v.own > 0 THEN to_char(t.rate_own * 100, 'FM990.0') || '%' ELSE '-' END,
       CASE WHEN v.similar > 0 THEN t.rate_similar END,
       CASE WHEN v.similar > 0 THEN to_char(t.rate_similar * 100, 'FM990.0') || '%' ELSE '-' END,
       v.own, v.own::text, v.similar, v.similar::text
{_SCRAPE_DAYS}
CROSS JOIN LATERAL (
    -- (the reference to l, and OFFSET 0 which keeps the planner from flattening the
    -- subquery, keep the listing outside its dates: key order within a day)
    SELECT ({_sunday("s.d")} - 6 + i)::date AS d FROM generate_series(0, 48) AS i
    WHERE l.airbnb_listing_id IS NOT NULL OFFSET 0
) m
{_TRUTH}
CROSS JOIN LATERAL (
    SELECT CASE WHEN m.d > s.d THEN floor(t.own * exp((s.d - m.d) / 90.0))::bigint
                ELSE t.own END AS own,
           CASE WHEN m.d > s.d THEN floor(t.similar * exp((s.d - m.d) / 90.0))::bigint
                ELSE t.similar END AS similar
) v
"""

# The window tables: per listing and scrape day s, its window's slices. W0 = sunday(s) - 7,
# W1 = sunday(s) + 41; list_of_metrics 7-day slices W0 + 7k (k = 0..6), chart_summary
# 28-day slices W0 and W0 + 28 (the last cut at W1, 21 days). Values from a hash of
# (listing, window_start, s): a window's views ~7 or ~28 days' worth.
_WINDOW_VALUES = """
    CROSS JOIN LATERAL (
        SELECT hashtextextended(l.airbnb_listing_id || w.start::text || s.d::text, 1) AS h,
               (8 + abs(hashtext(l.airbnb_listing_id)) % 40) * (w.stop - w.start + 1) AS base
    ) b
    CROSS JOIN LATERAL (
        SELECT floor(b.base * (0.8 + 0.4 * ((b.h & 1023) / 1023.0)))::bigint AS p3,
               round(0.005 + 0.09 * (((b.h >> 10) & 1023) / 1023.0), 4)::float8 AS rate,
               round(0.1 + 0.5 * (((b.h >> 20) & 1023) / 1023.0), 4)::float8 AS first_page,
               round((((b.h >> 30) & 1023) / 1023.0) - 0.5, 4)::float8 AS change
    ) v
"""

_LIST_OF_METRICS_SQL = f"""
INSERT INTO airbnb.list_of_metrics (
    account_id, airbnb_listing_id, window_start, time, window_end, airbnb_internal_name,
    conversion_rate_value, conversion_rate_value_string,
    search_conversion_rate_value, search_conversion_rate_value_string,
    listing_conversion_rate_value, listing_conversion_rate_value_string,
    p2_impressions_first_page_rate_value, p2_impressions_first_page_rate_value_string,
    p3_impressions_value, p3_impressions_value_string,
    p2_impressions_value, p2_impressions_value_string)
SELECT l.account_id, l.airbnb_listing_id, w.start, s.d::timestamp AT TIME ZONE 'UTC', w.stop,
       l.airbnb_internal_name,
       v.rate, to_char(v.rate * 100, 'FM990.0') || '%',
       v.rate * 5, to_char(v.rate * 500, 'FM990.0') || '%',
       v.rate * 2, to_char(v.rate * 200, 'FM990.0') || '%',
       v.first_page, to_char(v.first_page * 100, 'FM990.0') || '%',
       v.p3, v.p3::text, v.p3 * 12, (v.p3 * 12)::text
{_SCRAPE_DAYS}
CROSS JOIN LATERAL (
    SELECT ({_sunday("s.d")} - 7 + 7 * k)::date AS start,
           ({_sunday("s.d")} - 1 + 7 * k)::date AS stop
    FROM generate_series(0, 6) AS k
    WHERE l.airbnb_listing_id IS NOT NULL OFFSET 0
) w
{_WINDOW_VALUES}
"""

_CHART_SUMMARY_SQL = f"""
INSERT INTO airbnb.chart_summary (
    account_id, airbnb_listing_id, window_start, time, window_end, airbnb_internal_name,
    conversion_rate_value, conversion_rate_value_string,
    conversion_rate_value_change, conversion_rate_value_change_string,
    search_conversion_rate_value, search_conversion_rate_value_string,
    listing_conversion_rate_value, listing_conversion_rate_value_string,
    p2_impressions_first_page_rate_value, p2_impressions_first_page_rate_value_string,
    p3_impressions_value, p3_impressions_value_string,
    p3_impressions_value_change, p3_impressions_value_change_string,
    p2_impressions_value, p2_impressions_value_string)
SELECT l.account_id, l.airbnb_listing_id, w.start, s.d::timestamp AT TIME ZONE 'UTC', w.stop,
       l.airbnb_internal_name,
       v.rate, to_char(v.rate * 100, 'FM990.0') || '%',
       v.change, to_char(v.change * 100, 'FM990.0') || '%',
       v.rate * 5, to_char(v.rate * 500, 'FM990.0') || '%',
       v.rate * 2, to_char(v.rate * 200, 'FM990.0') || '%',
       v.first_page, to_char(v.first_page * 100, 'FM990.0') || '%',
       v.p3, v.p3::text, v.change, to_char(v.change * 100, 'FM990.0') || '%',
       v.p3 * 12, (v.p3 * 12)::text
{_SCRAPE_DAYS}
CROSS JOIN LATERAL (
    SELECT ({_sunday("s.d")} - 7 + 28 * k)::date AS start,
           least({_sunday("s.d")} + 20 + 28 * k, {_sunday("s.d")} + 41)::date AS stop
    FROM generate_series(0, 1) AS k
    WHERE l.airbnb_listing_id IS NOT NULL OFFSET 0
) w
{_WINDOW_VALUES}
"""

_META_TABLE = "public.bench_insights_meta"


@dataclass(frozen=True)
class Sizes:
    listings: int
    days: int

    @property
    def accounts(self) -> int:
        return -(-self.listings // LISTINGS_PER_ACCOUNT)

    @property
    def first_day(self) -> dt.date:
        return LAST_SCRAPE_DAY - dt.timedelta(days=self.days - 1)

    @property
    def database_name(self) -> str:
        return f"sync_airbnb_bench_insights_{self.listings}x{self.days}"


def account_id(a: int) -> str:
    return str(100_000_000_000 + a)


def listing_id(a: int, j: int) -> str:
    return str(100_000_000_000_000_000 + a * 1000 + j)


def customer_id(a: int) -> str:
    return f"bench-customer-{a // ACCOUNTS_PER_CUSTOMER:03d}"


async def _loaded(conn: asyncpg.Connection, sizes: Sizes) -> dict[str, Any] | None:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _META_TABLE)
    if not exists:
        return None
    row = await conn.fetchrow(
        f"SELECT * FROM {_META_TABLE} WHERE listings = $1 AND days = $2 AND last_day = $3",
        sizes.listings,
        sizes.days,
        LAST_SCRAPE_DAY,
    )
    return dict(row) if row else None


async def load(url: str, sizes: Sizes, workers: int = 2) -> dict[str, Any]:
    """Accounts, listings and a year of metrics rows; the seconds each part took."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "TRUNCATE airbnb.chart_query, airbnb.list_of_metrics, airbnb.chart_summary, "
            "airbnb.listings, airbnb.accounts CASCADE"
        )
        await conn.execute(f"DROP TABLE IF EXISTS {_META_TABLE}")
        accounts = [
            (account_id(a), customer_id(a), "bench-not-a-token", "bench", "bench")
            for a in range(sizes.accounts)
        ]
        await conn.copy_records_to_table(
            "accounts",
            schema_name="airbnb",
            records=accounts,
            columns=[
                "account_id",
                "customer_id",
                "credentials_encrypted",
                "x_client_version",
                "user_agent",
            ],
        )
        listings = [
            (account_id(n // LISTINGS_PER_ACCOUNT), listing_id(n // LISTINGS_PER_ACCOUNT, n % 10))
            for n in range(sizes.listings)
        ]
        await conn.copy_records_to_table(
            "listings",
            schema_name="airbnb",
            records=[
                (a, lid, f"bench-{lid[-6:]}", f"Bench flat {lid[-6:]}") for a, lid in listings
            ],
            columns=["account_id", "airbnb_listing_id", "airbnb_internal_name", "listing_name"],
        )
    finally:
        await conn.close()

    # Chunks of 7 scrape days (~343,000 chart_query rows a statement at 1,000 listings)
    # over two connections: both cores generate, as two writers would write.
    chunks: list[tuple[dt.date, dt.date]] = []
    day = sizes.first_day
    while day <= LAST_SCRAPE_DAY:
        chunks.append((day, min(day + dt.timedelta(days=6), LAST_SCRAPE_DAY)))
        day += dt.timedelta(days=7)
    seconds: dict[str, float] = {}
    for table, sql in (
        ("chart_query", _CHART_QUERY_SQL),
        ("list_of_metrics", _LIST_OF_METRICS_SQL),
        ("chart_summary", _CHART_SUMMARY_SQL),
    ):
        queue: asyncio.Queue[tuple[dt.date, dt.date]] = asyncio.Queue()
        for chunk in chunks:
            queue.put_nowait(chunk)
        done = 0

        async def worker(
            sql: str = sql,
            table: str = table,
            queue: asyncio.Queue[tuple[dt.date, dt.date]] = queue,
        ) -> None:
            nonlocal done
            c = await asyncpg.connect(url)
            try:
                # A generated load: no need to wait for each chunk's WAL flush.
                await c.execute("SET synchronous_commit = off")
                while not queue.empty():
                    await c.execute(sql, *queue.get_nowait())
                    done += 1
                    if done % 10 == 0 or done == len(chunks):
                        note(f"{table}: {done}/{len(chunks)} weeks of scrape days")
            finally:
                await c.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        seconds[table] = round(time.perf_counter() - started, 1)
        note(f"{table} loaded in {seconds[table]} s")

    conn = await asyncpg.connect(url)
    try:
        # As autovacuum would have left a table written over a year: statistics, and the
        # visibility map (without it no index-only scan, and every read checks the heap).
        started = time.perf_counter()
        await conn.execute(
            "VACUUM (ANALYZE) airbnb.chart_query, airbnb.list_of_metrics, airbnb.chart_summary,"
            " airbnb.listings, airbnb.accounts"
        )
        await conn.execute("CHECKPOINT")
        seconds["vacuum_analyze_checkpoint"] = round(time.perf_counter() - started, 1)
        counts = {
            t: await conn.fetchval(f"SELECT count(*) FROM airbnb.{t}")
            for t in ("chart_query", "list_of_metrics", "chart_summary")
        }
        sizes_mb = {
            t: round(
                await conn.fetchval("SELECT pg_total_relation_size($1)", f"airbnb.{t}") / 2**20
            )
            for t in counts
        }
        await conn.execute(
            f"CREATE TABLE {_META_TABLE} (listings int, days int, last_day date, "
            "loaded_at timestamptz, load_s jsonb, rows jsonb, size_mb jsonb)"
        )
        import orjson

        await conn.execute(
            f"INSERT INTO {_META_TABLE} VALUES ($1, $2, $3, now(), $4, $5, $6)",
            sizes.listings,
            sizes.days,
            LAST_SCRAPE_DAY,
            orjson.dumps(seconds).decode(),
            orjson.dumps(counts).decode(),
            orjson.dumps(sizes_mb).decode(),
        )
        meta = await _loaded(conn, sizes)
        assert meta is not None
        return meta
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_database(args: argparse.Namespace, sizes: Sizes) -> Iterator[tuple[str, bool]]:
    """(url, embedded): a database of its own, migrated; kept or dropped per the flags."""
    from shared.migrate import apply_migrations
    from tests.infra import create_database, drop_database, start_postgres

    persistent = args.keep or args.reuse
    tmp = None if persistent else tempfile.TemporaryDirectory(prefix="bench-insights-")
    workdir = Path(tmp.name) if tmp else args.state_dir
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_postgres(workdir)
    try:
        url = asyncio.run(create_database(server, sizes.database_name))
        if not args.reuse:
            # A fresh load: no rows from an earlier run of other sizes in the way.
            asyncio.run(drop_database(server, sizes.database_name))
            url = asyncio.run(create_database(server, sizes.database_name))
        apply_migrations(url)
        try:
            yield url, server.embedded is not None
        finally:
            if not args.keep:
                with contextlib.suppress(Exception):
                    asyncio.run(drop_database(server, sizes.database_name))
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()
        elif not args.keep:
            shutil.rmtree(workdir / "pgdata", ignore_errors=True)


# --- timing -------------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], p: float) -> float:
    # Nearest rank, as bench_admin: p99 of 50 runs is the slowest but none.
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def timed(
    fn: Callable[[], Awaitable[object]], runs: int, budget_s: float, warmup: int = 2
) -> dict[str, Any]:
    """p50/p99 of ``runs`` calls after ``warmup``; fewer runs (at least 5) when they would
    take longer than ``budget_s``."""
    started = time.perf_counter()
    for _ in range(warmup):
        await fn()
    per_call = (time.perf_counter() - started) / max(warmup, 1)
    n = max(5, min(runs, int(budget_s / per_call))) if per_call > 0 else runs
    latencies: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    return {
        "runs": n,
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


# --- the cases ----------------------------------------------------------------------------------


class Recorder:
    """A connection that remembers the statements a store function ran (for EXPLAIN)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append((sql, args))
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self.statements.append((sql, args))
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.statements.append((sql, args))
        return await self._conn.fetchval(sql, *args)

    def transaction(self, **options: Any) -> Any:
        return self._conn.transaction(**options)

    async def execute(self, sql: str, *args: Any) -> str:
        # Session settings (SET LOCAL ...): run, not recorded, since EXPLAIN cannot take them.
        return await self._conn.execute(sql, *args)


@dataclass(frozen=True)
class Case:
    """One read: its store calls (the SQL), the whole answer (SQL, arithmetic, model), the
    route, and the floors' statements."""

    name: str
    what: str
    sql: Callable[[Any], Awaitable[Any]]  # given a connection
    answer: Callable[[Any], Awaitable[Any]]  # given the InsightQueries
    path: str  # the route with its query string
    floor_range: list[tuple[str, tuple[Any, ...]]]
    account: str
    listing: str
    # False where the query reads every scrape (forward): its rows are the range itself.
    by_keys: bool = True


# The raw rows the query has to look at: every scrape of each key of its range.
_RANGE_COLUMNS = (
    "metric_date, time, p3_impressions_your_value, p3_impressions_similar_value,"
    " conversion_rate_your_value, conversion_rate_similar_value"
)
_LISTING_RANGE = (
    f"SELECT account_id, airbnb_listing_id, {_RANGE_COLUMNS} FROM airbnb.chart_query"
    " WHERE account_id = $1 AND airbnb_listing_id = $2 AND metric_date BETWEEN $3 AND $4"
)
_LISTING_RANGE_AS_OF = _LISTING_RANGE + " AND time < ($5::date + 1)::timestamp AT TIME ZONE 'UTC'"
_ACCOUNT_RANGE = (
    f"SELECT account_id, airbnb_listing_id, {_RANGE_COLUMNS} FROM airbnb.chart_query"
    " WHERE account_id = $1 AND metric_date BETWEEN $2 AND $3"
)
_M_COLUMNS = _RANGE_COLUMNS.replace("metric_date", "m.metric_date").replace(" time", " m.time")
_PORTFOLIO_RANGE = (
    f"SELECT m.account_id, m.airbnb_listing_id, {_M_COLUMNS}"
    " FROM airbnb.chart_query m JOIN airbnb.accounts a ON a.account_id = m.account_id"
    " WHERE ($1::text IS NULL OR a.customer_id = $1) AND m.metric_date BETWEEN $2 AND $3"
)
_WINDOW_RANGE = (
    "SELECT window_start, window_end, time, conversion_rate_value FROM airbnb.{table}"
    " WHERE account_id = $1 AND airbnb_listing_id = $2 AND window_start BETWEEN $3 AND $4"
)
# The rows a latest-per-key query returns, fetched by their whole primary key: the least
# any query can do to read them (it still has to find which scrape is the latest).
_BY_KEYS = (
    f"SELECT m.account_id, m.airbnb_listing_id, {_M_COLUMNS}"
    " FROM unnest($1::text[], $2::text[], $3::date[], $4::timestamptz[]) AS k(a, l, d, t)"
    " JOIN airbnb.chart_query m ON m.account_id = k.a AND m.airbnb_listing_id = k.l"
    " AND m.metric_date = k.d AND m.time = k.t"
)
_WINDOWS_BY_KEYS = (
    "SELECT m.window_start, m.window_end, m.time, m.conversion_rate_value"
    " FROM unnest($3::date[], $4::timestamptz[]) AS k(s, t)"
    " JOIN airbnb.{table} m ON m.account_id = $1 AND m.airbnb_listing_id = $2"
    " AND m.window_start = k.s AND m.time = k.t"
)


def cases(sizes: Sizes) -> list[Case]:
    from services.admin import store
    from services.admin.insights import METRIC_KINDS, portfolio_start, window_starts
    from services.admin.models import ForwardQuery, InsightsQuery, PortfolioQuery

    a = min(42, sizes.accounts - 1)
    acc, lid = account_id(a), listing_id(a, 3)
    last = LAST_SCRAPE_DAY
    year = (last - dt.timedelta(days=364), last)
    as_of = last - dt.timedelta(days=90)
    stay = (last - dt.timedelta(days=149), last + dt.timedelta(days=30))
    customer = customer_id(a)
    out: list[Case] = []

    def insights_case(
        name: str,
        what: str,
        metric: str,
        granularity: str,
        listing: str | None,
        as_of_day: dt.date | None = None,
    ) -> Case:
        params = {"metric": metric, "from": year[0], "to": year[1], "granularity": granularity}
        if listing is not None:
            params["listing_id"] = listing
        if as_of_day is not None:
            params["as_of"] = as_of_day
        q = InsightsQuery.model_validate(params)
        windows = listing is not None and METRIC_KINDS[q.metric] == "rate"
        starts = window_starts(q.from_, q.to, q.granularity) if windows else []

        async def sql(conn: Any) -> Any:
            rows = await store.latest_days(conn, acc, q.from_, q.to, q.listing_id, q.as_of)
            found = await store.latest_windows(conn, acc, lid, starts, q.as_of) if windows else []
            return rows, found

        floor: list[tuple[str, tuple[Any, ...]]]
        if listing is None:
            floor = [(_ACCOUNT_RANGE, (acc, *year))]
        elif as_of_day is not None:
            floor = [(_LISTING_RANGE_AS_OF, (acc, lid, *year, as_of_day))]
        else:
            floor = [(_LISTING_RANGE, (acc, lid, *year))]
        if windows:
            floor += [
                (_WINDOW_RANGE.format(table=t), (acc, lid, year[0] - dt.timedelta(days=1), year[1]))
                for t in ("list_of_metrics", "chart_summary")
            ]
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return Case(
            name,
            what,
            sql,
            lambda api: api.series(acc, q),
            f"/api/v1/accounts/{acc}/insights?{query}",
            floor,
            acc,
            lid,
        )

    for metric in ("p3_impressions", "conversion_rate"):
        for granularity in ("day", "week", "month"):
            out.append(
                insights_case(
                    f"insights_listing_{granularity}_{metric}",
                    f"one listing, a year by {granularity}, {metric}",
                    metric,
                    granularity,
                    lid,
                )
            )
    for metric, granularity in (("p3_impressions", "day"), ("conversion_rate", "week")):
        out.append(
            insights_case(
                f"insights_account_{granularity}_{metric}",
                f"the account's {LISTINGS_PER_ACCOUNT} listings combined, a year by "
                f"{granularity}, {metric}",
                metric,
                granularity,
                None,
            )
        )
    for metric, granularity in (("p3_impressions", "day"), ("conversion_rate", "week")):
        out.append(
            insights_case(
                f"insights_listing_{granularity}_{metric}_as_of",
                f"one listing, a year by {granularity}, {metric}, as_of {as_of} (90 days back)",
                metric,
                granularity,
                lid,
                as_of,
            )
        )

    fq = ForwardQuery.model_validate({"listing_id": lid, "stay_from": stay[0], "stay_to": stay[1]})

    async def forward_sql(conn: Any) -> Any:
        return await store.every_scrape(conn, acc, lid, fq.stay_from, fq.stay_to), []

    out.append(
        Case(
            "forward_listing_180",
            f"one listing, stay dates {stay[0]}..{stay[1]} (180), every scrape",
            forward_sql,
            lambda api: api.forward(acc, fq),
            f"/api/v1/accounts/{acc}/insights/forward?listing_id={lid}"
            f"&stay_from={stay[0]}&stay_to={stay[1]}",
            [(_LISTING_RANGE, (acc, lid, *stay))],
            acc,
            lid,
            by_keys=False,
        )
    )

    for name, cust, what in (
        ("portfolio_all", None, f"every listing ({sizes.listings})"),
        (
            "portfolio_customer",
            customer,
            f"one customer ({min(sizes.listings, ACCOUNTS_PER_CUSTOMER * LISTINGS_PER_ACCOUNT)}"
            " listings)",
        ),
    ):
        pq = PortfolioQuery.model_validate({"end": last, **({"customer_id": cust} if cust else {})})
        start = portfolio_start(last)

        async def portfolio_sql(conn: Any, pq: PortfolioQuery = pq, start: dt.date = start) -> Any:
            # In a transaction, as the answer's snapshot is: portfolio_days sets its plan
            # mode with SET LOCAL.
            async with conn.transaction(readonly=True):
                await store.portfolio_listings(conn, pq.customer_id)
                rows = await store.portfolio_days(conn, pq.customer_id, start, last, pq.as_of)
            return rows, []

        out.append(
            Case(
                name,
                f"portfolio, {what}, 56 days ending {last}",
                portfolio_sql,
                functools.partial(_portfolio_answer, pq),
                f"/api/v1/portfolio?end={last}" + (f"&customer_id={cust}" if cust else ""),
                [(_PORTFOLIO_RANGE, (cust, start, last))],
                acc,
                lid,
            )
        )
    return out


async def _portfolio_answer(pq: Any, api: Any) -> Any:
    return await api.portfolio(pq)


def floor_by_keys(
    account: str, listing: str, rows: Any, windows: Any
) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that fetch exactly the rows the store calls returned, by primary key."""
    out: list[tuple[str, tuple[Any, ...]]] = [
        (
            _BY_KEYS,
            (
                [r.account_id for r in rows],
                [r.listing_id for r in rows],
                [r.day for r in rows],
                [r.scraped_at for r in rows],
            ),
        )
    ]
    for table in ("list_of_metrics", "chart_summary"):
        mine = [w for w in windows if w.table == table]
        if mine:
            out.append(
                (
                    _WINDOWS_BY_KEYS.format(table=table),
                    (
                        account,
                        listing,
                        [w.window_start for w in mine],
                        [w.scraped_at for w in mine],
                    ),
                )
            )
    return out


async def explain(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> str:
    lines = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return "\n".join(r[0] for r in lines)


async def _run_statements(
    conn: asyncpg.Connection, stmts: list[tuple[str, tuple[Any, ...]]]
) -> int:
    n = 0
    for sql, args in stmts:
        n += len(await conn.fetch(sql, *args))
    return n


async def run_cases(
    url: str, sizes: Sizes, args: argparse.Namespace, plans: list[str]
) -> list[dict[str, Any]]:
    from services.admin.insight_queries import InsightQueries

    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    api = InsightQueries(pool, lambda: LAST_SCRAPE_DAY + dt.timedelta(days=1))
    results: list[dict[str, Any]] = []
    try:
        for case in cases(sizes):
            if args.only and case.name not in args.only.split(","):
                continue
            note(f"{case.name}: {case.what}")
            recorder = Recorder(conn)
            rows, windows = await case.sql(recorder)
            keys = floor_by_keys(case.account, case.listing, rows, windows) if case.by_keys else []
            range_rows = await _run_statements(conn, case.floor_range)
            t_sql = await timed(functools.partial(case.sql, conn), args.runs, args.case_budget_s)
            # Which plan the timed runs used: after five executions PostgreSQL may switch a
            # prepared statement (asyncpg prepares every query) to a generic plan.
            generic = await conn.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
            plan_use = {
                sql: (r["generic_plans"], r["custom_plans"])
                for sql, _ in recorder.statements
                for r in generic
                if r["statement"] == sql
            }
            t_answer = await timed(
                functools.partial(case.answer, api), args.runs, args.case_budget_s
            )
            t_range = await timed(
                functools.partial(_run_statements, conn, case.floor_range),
                args.runs,
                args.case_budget_s,
            )
            t_keys = (
                await timed(
                    functools.partial(_run_statements, conn, keys), args.runs, args.case_budget_s
                )
                if keys
                else None
            )
            floor = t_keys or t_range
            line = {
                "bench": "insights",
                "case": case.name,
                "what": case.what,
                "rows_returned": len(rows) + len(windows),
                "rows_in_range": range_rows,
                "statements": len(recorder.statements),
                "sql": t_sql,
                "answer": t_answer,
                "floor_keys": t_keys,
                "floor_range": t_range,
                "sql_p50_over_floor": round(t_sql["p50_ms"] / floor["p50_ms"], 2),
                "generic_plans": sum(g for g, _ in plan_use.values()),
            }
            results.append(line)
            emit(line)
            plans.append(f"## {case.name}\n\n{case.what}. Route: `GET {case.path}`.\n")
            plans.append(
                f"sql p50 {t_sql['p50_ms']} ms, p99 {t_sql['p99_ms']} ms; answer p50 "
                f"{t_answer['p50_ms']} ms; floor_keys p50 "
                f"{t_keys['p50_ms'] if t_keys else '-'} ms; floor_range p50 {t_range['p50_ms']} ms"
                f" ({range_rows} rows).\n"
            )
            for i, (sql, stmt_args) in enumerate(recorder.statements, 1):
                uses = plan_use.get(sql)
                plans.append(
                    f"### statement {i} of {len(recorder.statements)}"
                    + (f" (timed runs: {uses[0]} generic, {uses[1]} custom plans)" if uses else "")
                    + f"\n\n```sql\n{sql}\n```\n\n```\n{await explain(conn, sql, stmt_args)}\n```\n"
                )
                if uses and uses[0]:
                    # GENERIC_PLAN plans without the values (nulls bound only to fill the slots).
                    generic_plan = await conn.fetch(
                        "EXPLAIN (GENERIC_PLAN) " + sql, *([None] * len(stmt_args))
                    )
                    plans.append(
                        "Generic plan (what the timed runs used):\n\n```\n"
                        + "\n".join(r[0] for r in generic_plan)
                        + "\n```\n"
                    )
            for label, stmts in (("floor_keys", keys), ("floor_range", case.floor_range)):
                for sql, stmt_args in stmts:
                    plans.append(
                        f"### {label}\n\n```sql\n{sql}\n```\n\n"
                        f"```\n{await explain(conn, sql, stmt_args)}\n```\n"
                    )
    finally:
        await pool.close()
        await conn.close()
    return results


async def run_http(
    base: str, api_key: str, args: argparse.Namespace, sizes: Sizes
) -> list[dict[str, Any]]:
    """Each route through the admin process, one aiohttp client, one request at a time."""
    import aiohttp

    out = []
    async with aiohttp.ClientSession(base, headers={"X-API-Key": api_key}) as http:
        for case in cases(sizes):
            if args.only and case.name not in args.only.split(","):
                continue

            async def get(path: str = case.path) -> int:
                async with http.get(path) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
                    return len(body)

            size = await get()
            t = await timed(get, args.runs, args.case_budget_s)
            line = {
                "bench": "insights_http",
                "case": case.name,
                "path": case.path,
                "body_bytes": size,
                "http": t,
            }
            out.append(line)
            emit(line)
    return out


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=1000, help="listings (1000), 10 an account")
    parser.add_argument("--days", type=int, default=365, help="scrape days (365)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per query (50)")
    parser.add_argument(
        "--case-budget-s", type=float, default=60.0, help="at most this long per timing (60)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database after the run")
    parser.add_argument(
        "--reuse", action="store_true", help="use the kept database when it holds these sizes"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help=f"the embedded server's data with --keep/--reuse ({DEFAULT_STATE})",
    )
    parser.add_argument(
        "--plans",
        type=Path,
        default=None,
        help=f"EXPLAIN output file ({DEFAULT_PLANS.name} beside RESULTS.md at the default "
        "sizes, else in the temporary directory)",
    )
    parser.add_argument("--load-only", action="store_true", help="load (or reuse), time nothing")
    parser.add_argument("--http", action="store_true", help="also time the routes over HTTP")
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args(argv)
    sizes = Sizes(args.listings, args.days)
    if args.plans is None:
        # Only a run at the sizes replaces the plans kept beside RESULTS.md.
        default = sizes == Sizes(1000, 365)
        args.plans = (
            DEFAULT_PLANS
            if default
            else DEFAULT_STATE.parent / (f"insights_plans_{sizes.listings}x{sizes.days}.md")
        )
    if sizes.listings % LISTINGS_PER_ACCOUNT:
        parser.error(f"--listings must be a multiple of {LISTINGS_PER_ACCOUNT}")

    with bench_database(args, sizes) as (url, embedded):

        async def prepare() -> tuple[dict[str, Any], bool]:
            conn = await asyncpg.connect(url)
            try:
                meta = await _loaded(conn, sizes) if args.reuse else None
            finally:
                await conn.close()
            if meta is not None:
                note(f"reusing {sizes.database_name}, loaded {meta['loaded_at']}")
                return meta, True
            note(f"loading {sizes.listings} listings x {sizes.days} scrape days")
            return await load(url, sizes), False

        meta, reused = asyncio.run(prepare())
        emit(
            {
                "bench": "insights_load",
                "listings": sizes.listings,
                "accounts": sizes.accounts,
                "days": sizes.days,
                "scrape_days": f"{sizes.first_day}..{LAST_SCRAPE_DAY}",
                "reused": reused,
                "load_s": _json(meta["load_s"]),
                "rows": _json(meta["rows"]),
                "size_mb": _json(meta["size_mb"]),
                "embedded": embedded,
                **machine(),
                "load_average": os.getloadavg(),
            }
        )
        if args.load_only:
            return 0
        note(f"timing; load average {os.getloadavg()}")
        plans: list[str] = [
            "# EXPLAIN (ANALYZE, BUFFERS) of the read API's SQL\n\n"
            f"Written by `python -m benchmarks.bench_insights` ({sizes.listings} listings x "
            f"{sizes.days} scrape days, rows {_json(meta['rows'])}), PostgreSQL "
            f"{asyncio.run(_server_version(url))}, {os.cpu_count()} cores, load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the start.\n"
        ]
        started_load = os.getloadavg()
        asyncio.run(run_cases(url, sizes, args, plans))
        args.plans.write_text("\n".join(plans))
        note(f"plans written to {args.plans}")
        if args.http:
            http_lines(url, sizes, args)
        emit(
            {
                "bench": "insights_done",
                "load_average_start": started_load,
                "load_average_end": os.getloadavg(),
            }
        )
    return 0


async def _server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def http_lines(url: str, sizes: Sizes, args: argparse.Namespace) -> None:
    import signal
    import subprocess

    from benchmarks.bench_admin import API_KEY, start_admin
    from benchmarks.common import nats_server
    from tests.infra import free_port

    with (
        tempfile.TemporaryDirectory(prefix="bench-insights-http-") as tmp,
        nats_server(Path(tmp)) as nats_url,
    ):
        port = free_port()
        admin = start_admin(url, nats_url, port, Path(tmp) / "admin.log")
        try:
            asyncio.run(run_http(f"http://127.0.0.1:{port}", API_KEY, args, sizes))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(admin.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                admin.wait(timeout=15)


def _json(value: Any) -> Any:
    import orjson

    return orjson.loads(value) if isinstance(value, str) else value


if __name__ == "__main__":
    sys.exit(main())
