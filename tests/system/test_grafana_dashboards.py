"""Every SQL query of the Grafana dashboards (panels and template variables) against a
database the real pipeline filled: a migrated database of its own, the simulator as Airbnb,
a scheduler, a fetcher and a writer as processes, three accounts synced on one scrape day
(the first-run backfill) and again on the next (the daily incremental run), so that many
dates have two scrapes and "the latest scrape" matters.

Each query goes to PostgreSQL as Grafana would send it (tests/grafana.py expands the
variables and macros with Grafana's rules) and must return rows; the main insights panels
are also held to values computed from the simulator's truth (tests/expected.py), not from
the database. The PromQL of the pipeline dashboard passes promtool's parser, and the
monitoring kustomization builds with kubectl, each where the tool is installed."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from shared.airbnb.windows import sync_window
from tests.expected import expected_tables
from tests.grafana import (
    SqlTarget,
    Variable,
    expand_sql,
    load_dashboards,
    promql_exprs,
    sql_targets,
    variables,
)
from tests.infra import (
    PostgresServer,
)
from tests.stack import isolated_stack, wait_for_jobs

pytestmark = pytest.mark.slow

DAY1 = dt.date(2025, 7, 11)  # a Friday: the first-run backfill
DAY2 = DAY1 + dt.timedelta(days=1)  # the daily incremental run
SEED = 15
ACCOUNTS, LISTINGS = 3, 3
MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "monitoring"
READER_ROLE = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "reader-role.sql"

DASHBOARDS = load_dashboards()
TARGETS = [t for name, d in DASHBOARDS.items() for t in sql_targets(name, d)]
VARIABLE_QUERIES = [
    (name, v) for name, d in DASHBOARDS.items() for v in variables(d) if v["type"] == "query"
]


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def time_range(dashboard: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The dashboard's default range ("now-90d" .. "now") at ``now``."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    m = re.fullmatch(r"now-(\d+)([mhd])", dashboard["time"]["from"])
    assert m and dashboard["time"]["to"] == "now", dashboard["time"]
    return now - dt.timedelta(**{units[m[2]]: int(m[1])}), now


def dashboard_now(name: str) -> dt.datetime:
    """The insights dashboard as seen on the simulated day after the second scrape (its
    data is dated by the simulator's calendar); pipeline health now (its jobs carry the
    wall-clock times they were created at)."""
    if name == "insights.json":
        return midnight(DAY2) + dt.timedelta(hours=12)
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)


@dataclass
class Synced:
    url: str
    accounts: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def synced(
    postgres_server: PostgresServer, secret_keys: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Synced]:
    tmp = tmp_path_factory.mktemp("grafana")
    async with isolated_stack(
        tmp, postgres_server, secret_keys, DAY1, database_prefix="sync_airbnb_grafana"
    ) as stack:
        sim = await stack.start_simulator(accounts=ACCOUNTS, listings=LISTINGS, seed=SEED)
        ids = [a["account_id"] for a in sim.accounts]
        db = await asyncpg.connect(stack.database_url)
        try:
            await stack.register(db, sim.accounts)
            stack.start("writer")
            stack.start("fetcher")
            scheduler = stack.start("scheduler")  # backfills never-synced accounts at start
            jobs = await wait_for_jobs(db, ids, scrape_day=DAY1)
            assert [j["status"] for j in jobs] == ["succeeded"] * ACCOUNTS, jobs
            assert scheduler.terminate() == 0
            assert sim.proc.terminate() == 0
            stack.today = DAY2
            port = int(sim.url.rsplit(":", 1)[1])
            await stack.start_simulator(accounts=ACCOUNTS, listings=LISTINGS, seed=SEED, port=port)
            stack.start("scheduler", SCHEDULE_CRON="*/2 * * * * *")
            jobs = await wait_for_jobs(db, ids, scrape_day=DAY2)
            assert [j["status"] for j in jobs] == ["succeeded"] * ACCOUNTS, jobs
        finally:
            await db.close()
        stack.launcher.cleanup()  # the data is in; no process needs to run for the queries
        yield Synced(stack.database_url, sim.accounts)


@pytest.fixture
async def db(synced: Synced) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(synced.url)
    yield conn
    await conn.close()


async def variable_values(
    db: asyncpg.Connection, dashboard: Mapping[str, Any], now: dt.datetime
) -> dict[str, Variable]:
    """Each variable's value as Grafana sets it on opening the dashboard: a query
    variable's first option (its query run with the variables before it), a custom
    variable's current value."""
    time_from, time_to = time_range(dashboard, now)
    values: dict[str, Variable] = {}
    for var in variables(dashboard):
        if var["type"] == "query":
            rows = await db.fetch(expand_sql(var["query"], time_from, time_to, values))
            assert rows, f"variable {var['name']} has no option"
            values[var["name"]] = Variable(str(rows[0]["__value"]))
        elif var["type"] == "custom":
            values[var["name"]] = Variable(var["current"]["value"])
    return values


async def run_panel(
    db: asyncpg.Connection, dashboard_name: str, title: str, **overrides: str
) -> list[asyncpg.Record]:
    dashboard = DASHBOARDS[dashboard_name]
    now = dashboard_now(dashboard_name)
    values = await variable_values(db, dashboard, now)
    values |= {k: Variable(v) for k, v in overrides.items()}
    (target,) = [t for t in TARGETS if t.dashboard == dashboard_name and t.panel == title]
    return await db.fetch(expand_sql(target.raw_sql, *time_range(dashboard, now), values))


# --- every query returns rows -----------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=[f"{t.dashboard}:{t.panel}" for t in TARGETS])
async def test_every_sql_panel_returns_rows(db: asyncpg.Connection, target: SqlTarget) -> None:
    dashboard = DASHBOARDS[target.dashboard]
    now = dashboard_now(target.dashboard)
    values = await variable_values(db, dashboard, now)
    sql = expand_sql(target.raw_sql, *time_range(dashboard, now), values)
    assert "$" not in re.sub(r"'[^']*'", "", sql), sql  # nothing left for Grafana to expand
    rows = await db.fetch(sql)
    assert rows, f"{target.panel}: no rows"
    if target.format == "time_series":
        # Grafana's time series: a "time" column of timestamps, ascending.
        times = [r["time"] for r in rows]
        assert all(isinstance(t, dt.datetime) and t.tzinfo for t in times), target.panel
        assert times == sorted(times), target.panel


@pytest.mark.parametrize(
    ("name", "var"), VARIABLE_QUERIES, ids=[f"{n}:{v['name']}" for n, v in VARIABLE_QUERIES]
)
async def test_every_variable_query_returns_options(
    db: asyncpg.Connection, synced: Synced, name: str, var: dict[str, Any]
) -> None:
    dashboard = DASHBOARDS[name]
    now = dashboard_now(name)
    values = await variable_values(db, dashboard, now)
    rows = await db.fetch(expand_sql(var["query"], *time_range(dashboard, now), values))
    assert rows and {"__value", "__text"} <= set(rows[0].keys())
    options = [r["__value"] for r in rows]
    if var["name"] == "account":
        assert options == sorted(a["account_id"] for a in synced.accounts)
    if var["name"] == "listing":
        (account,) = [a for a in synced.accounts if a["account_id"] == values["account"].value]
        assert options == sorted(listing["listing_id"] for listing in account["listings"])


# --- the insights panels against the simulator's truth ------------------------------------


def assert_series(rows: list[asyncpg.Record], expected: list[tuple[Any, ...]]) -> None:
    """rows' (time, own, similar listings) equal ``expected``: times exactly, numbers to
    float rounding (the database sums and divides doubles in its own order)."""
    actual = [(r["time"], r["own"], r["similar listings"]) for r in rows]
    assert [a[0] for a in actual] == [e[0] for e in expected]
    for a, e in zip(actual, expected, strict=True):
        for got, want in zip(a[1:], e[1:], strict=True):
            assert (got is None) == (want is None), (a, e)
            if want is not None:
                assert got == pytest.approx(want, rel=1e-9), (a, e)


def latest_expected(account: dict[str, Any]) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """table -> (listing, date) -> the numeric columns of that key's latest scrape: day 2's
    incremental window over day 1's backfill."""
    ids = [listing["listing_id"] for listing in account["listings"]]
    latest: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
    for day, first_run in ((DAY1, True), (DAY2, False)):
        window = sync_window(day, first_run=first_run)
        for table, rows in expected_tables(SEED, account["account_id"], ids, day, window).items():
            for key, row in rows.items():
                latest[table][(key[1], key[2])] = row
    return latest


def chosen(synced: Synced, values: Mapping[str, Variable]) -> tuple[dict[str, Any], str]:
    account = next(a for a in synced.accounts if a["account_id"] == values["account"].value)
    return account, str(values["listing"].value)


def in_range(day: dt.date, name: str) -> bool:
    time_from, time_to = time_range(DASHBOARDS[name], dashboard_now(name))
    return time_from <= midnight(day) <= time_to


async def insights_values(db: asyncpg.Connection) -> dict[str, Variable]:
    return await variable_values(db, DASHBOARDS["insights.json"], dashboard_now("insights.json"))


@pytest.mark.parametrize(
    ("title", "metric"),
    [
        ("Page views, own vs similar listings (daily)", "p3_impressions"),
        ("Conversion rate, own vs similar listings (daily)", "conversion_rate"),
    ],
)
async def test_daily_panels_show_each_dates_latest_scrape(
    db: asyncpg.Connection, synced: Synced, title: str, metric: str
) -> None:
    account, listing = chosen(synced, await insights_values(db))
    truth = latest_expected(account)["chart_query"]
    expected = [
        (midnight(day), row[f"{metric}_your_value"], row[f"{metric}_similar_value"])
        for (lid, day), row in sorted(truth.items())
        if lid == listing and in_range(day, "insights.json")
    ]
    assert_series(await run_panel(db, "insights.json", title), expected)
    # Day 2 re-scraped the recent dates: some of them must differ from day 1's figures, or
    # this would not show that the latest scrape wins.
    day1 = expected_tables(
        SEED,
        account["account_id"],
        [listing],
        DAY1,
        sync_window(DAY1, first_run=True),
    )["chart_query"]
    changed = [
        k for k, row in day1.items() if in_range(k[2], "insights.json") and row != truth[k[1:3]]
    ]
    assert changed, "no date changed between the two scrapes"


def iso_week(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def weeks_in_range(name: str) -> list[dt.date]:
    time_from, time_to = time_range(DASHBOARDS[name], dashboard_now(name))
    monday = iso_week(time_from.date())
    weeks = []
    while midnight(monday) <= time_to:
        if midnight(monday) >= time_from:
            weeks.append(monday)
        monday += dt.timedelta(days=7)
    return weeks


def weighted(pairs: list[tuple[float | None, int | None]]) -> float | None:
    used = [(rate, views) for rate, views in pairs if rate is not None and views]
    total = sum(views for _, views in used)
    return sum(rate * views for rate, views in used) / total if total else None


async def test_weekly_panels_sum_counts_and_take_airbnbs_weekly_rate(
    db: asyncpg.Connection, synced: Synced
) -> None:
    account, listing = chosen(synced, await insights_values(db))
    latest = latest_expected(account)
    days: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for (lid, day), row in latest["chart_query"].items():
        if lid == listing:
            days[iso_week(day)].append(row)
    weeks = [w for w in weeks_in_range("insights.json") if w in days]
    assert len(weeks) >= 12

    views = await run_panel(db, "insights.json", "Page views per week (Monday to Sunday)")
    assert_series(
        views,
        [
            (
                midnight(w),
                sum(r["p3_impressions_your_value"] for r in days[w]),
                sum(r["p3_impressions_similar_value"] for r in days[w]),
            )
            for w in weeks
        ],
    )

    windows = {day: row for (lid, day), row in latest["list_of_metrics"].items() if lid == listing}
    expected = []
    airbnb_figures = 0
    for w in weeks:
        window = windows.get(w - dt.timedelta(days=1))  # the window starting the Sunday before
        own = window["conversion_rate_value"] if window else None
        airbnb_figures += own is not None
        if own is None:
            own = weighted(
                [(r["conversion_rate_your_value"], r["p3_impressions_your_value"]) for r in days[w]]
            )
        similar = weighted(
            [
                (r["conversion_rate_similar_value"], r["p3_impressions_similar_value"])
                for r in days[w]
            ]
        )
        expected.append((midnight(w), own, similar))
    assert airbnb_figures >= 10, "the weekly windows were not scraped"
    rates = await run_panel(db, "insights.json", "Conversion rate per week (Monday to Sunday)")
    assert_series(rates, expected)


async def test_demand_build_up_shows_each_upcoming_stay_date_scrape_by_scrape(
    db: asyncpg.Connection, synced: Synced
) -> None:
    account, listing = chosen(synced, await insights_values(db))
    rows = await run_panel(
        db,
        "insights.json",
        "Demand build-up: page views of the next 14 stay dates, scrape by scrape",
    )
    series: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for r in rows:
        series[r["metric"]].append((r["time"], r["value"]))
    stays = [DAY2 + dt.timedelta(days=n) for n in range(1, 15)]
    assert sorted(series) == [f"stay {d.isoformat()}" for d in stays]
    for stay in stays:
        points = series[f"stay {stay.isoformat()}"]
        assert [t for t, _ in points] == [midnight(DAY1), midnight(DAY2)]
        scraped = [
            expected_tables(SEED, account["account_id"], [listing], day, window)["chart_query"][
                (account["account_id"], listing, stay, midnight(day))
            ]["p3_impressions_your_value"]
            for day, window in (
                (DAY1, sync_window(DAY1, first_run=True)),
                (DAY2, sync_window(DAY2, first_run=False)),
            )
        ]
        assert [v for _, v in points] == scraped
        assert scraped[0] <= scraped[1]  # nearer the stay date, never fewer views


async def test_portfolio_compares_the_last_7_and_28_days_with_the_ones_before(
    db: asyncpg.Connection, synced: Synced
) -> None:
    end = dashboard_now("insights.json").date() - dt.timedelta(days=1)
    rows = await run_panel(
        db, "insights.json", "Portfolio: last 7 and 28 days against the 7 and 28 before"
    )
    listings = sorted(
        ((a["account_id"], lst) for a in synced.accounts for lst in a["listings"]),
        key=lambda pair: (pair[0], pair[1]["listing_id"]),
    )
    assert len(rows) == len(listings) == ACCOUNTS * LISTINGS
    for row, (account_id, listing) in zip(rows, listings, strict=True):
        account = next(a for a in synced.accounts if a["account_id"] == account_id)
        truth = latest_expected(account)["chart_query"]

        def views(
            first: int, last: int, lid: str = listing["listing_id"], truth: Any = truth
        ) -> int:
            """Own page views over [end - last, end - first]."""
            return sum(
                truth[(lid, end - dt.timedelta(days=age))]["p3_impressions_your_value"]
                for age in range(first, last + 1)
            )

        assert (row["account"], row["listing id"]) == (account_id, listing["listing_id"])
        assert (row["page views 7 d"], row["prior 7 d"]) == (views(0, 6), views(7, 13))
        assert (row["page views 28 d"], row["prior 28 d"]) == (views(0, 27), views(28, 55))
        assert row["change 7 d"] == pytest.approx((views(0, 6) - views(7, 13)) / views(7, 13))
        flagged = "page views 7 d" in row["falling behind"]
        assert flagged == (row["change 7 d"] < -0.2)
    # A stricter threshold flags at least as many listings.
    strict = await run_panel(
        db,
        "insights.json",
        "Portfolio: last 7 and 28 days against the 7 and 28 before",
        drop_threshold="0.1",
    )
    assert sum(bool(r["falling behind"]) for r in strict) >= sum(
        bool(r["falling behind"]) for r in rows
    )


async def test_job_panels_count_the_synced_jobs(db: asyncpg.Connection) -> None:
    outcomes = await run_panel(db, "pipeline-health.json", "Job outcomes")
    assert {r["status"]: r["jobs"] for r in outcomes} == {"succeeded": 2 * ACCOUNTS}
    accounts = await run_panel(db, "pipeline-health.json", "Accounts")
    assert [r["status"] for r in accounts] == ["ok"] * ACCOUNTS
    assert all(r["last job"] == "succeeded" for r in accounts)


async def test_every_query_runs_as_the_read_only_role_and_it_can_do_nothing_else(
    db: asyncpg.Connection,
) -> None:
    """deploy/grafana/reader-role.sql (under a name of this test's own: roles are the
    server's): every panel and variable query answers as that role, which can neither
    write nor read the encrypted cookies."""
    role = f"grafana_reader_{uuid.uuid4().hex[:8]}"
    script = re.sub(r"\bgrafana_reader\b", role, READER_ROLE.read_text())
    try:
        await db.execute(script)
    except asyncpg.InsufficientPrivilegeError as e:
        pytest.skip(f"this PostgreSQL user may not create roles: {e}")
    try:
        await db.execute(f"SET ROLE {role}")
        for target in TARGETS:
            dashboard = DASHBOARDS[target.dashboard]
            now = dashboard_now(target.dashboard)
            values = await variable_values(db, dashboard, now)
            rows = await db.fetch(expand_sql(target.raw_sql, *time_range(dashboard, now), values))
            assert rows, target.panel
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.fetch("SELECT credentials_encrypted FROM airbnb.accounts")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("UPDATE airbnb.sync_jobs SET error = 'x'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("DELETE FROM airbnb.chart_query")
    finally:
        await db.execute("RESET ROLE")
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")


# --- the other tools' checks --------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed")
def test_promtool_parses_every_promql_panel(tmp_path: Path) -> None:
    """Each expression as a recording rule, Grafana's interval variables given values."""
    rules = []
    for name, dashboard in DASHBOARDS.items():
        for i, (_, expr) in enumerate(promql_exprs(dashboard)):
            for var, value in (
                ("$__rate_interval", "1m"),
                ("$__range", "1h"),
                ("$__interval", "15s"),
            ):
                expr = expr.replace(var, value)
            rules.append(
                {"record": f"grafana:{Path(name).stem.replace('-', '_')}:{i}", "expr": expr}
            )
    assert rules
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_the_monitoring_kustomization_builds_with_the_grafana_configmaps() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    assert set(configmaps) == {
        "sync-airbnb-grafana-datasources",
        "sync-airbnb-grafana-insights",
        "sync-airbnb-grafana-pipeline-health",
    }
    assert all(d["metadata"]["namespace"] == "sync-airbnb" for d in configmaps.values())
