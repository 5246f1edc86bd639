"""The demo's closing report: rows per table, and each listing's last four weeks.

For each listing, four 7-day weeks ending today: page views (``p3_impressions``,
summed over the week) and conversion rate (the mean of the daily rates that
have a value: Airbnb gives the daily rate, not its numerator and denominator),
the listing's own beside its similar listings'. Read from ``chart_query``,
taking for each day the row of the latest scrape day.

:func:`collect` reads the database; everything else is pure.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from shared.metric_tables import METRIC_TABLES

WEEKS = 4


@dataclass(frozen=True, slots=True)
class DayPoint:
    account_id: str
    listing_id: str
    day: dt.date
    views_own: int | None
    views_similar: int | None
    conversion_own: float | None
    conversion_similar: float | None


@dataclass(frozen=True, slots=True)
class Week:
    start: dt.date
    end: dt.date
    views_own: int | None
    views_similar: int | None
    conversion_own: float | None
    conversion_similar: float | None


@dataclass(frozen=True, slots=True)
class ListingReport:
    account_id: str
    listing_id: str
    name: str
    weeks: tuple[Week, ...]


@dataclass(frozen=True, slots=True)
class Report:
    rows_per_table: dict[str, int]
    listings: tuple[ListingReport, ...]
    today: dt.date


# --- the pure part ------------------------------------------------------------------------


def week_bounds(today: dt.date, weeks: int = WEEKS) -> list[tuple[dt.date, dt.date]]:
    """``weeks`` consecutive 7-day periods, oldest first, the last one ending today."""
    return [
        (today - dt.timedelta(days=7 * k + 6), today - dt.timedelta(days=7 * k))
        for k in reversed(range(weeks))
    ]


def _sum(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summarize_weeks(points: Sequence[DayPoint], today: dt.date) -> tuple[Week, ...]:
    out = []
    for start, end in week_bounds(today):
        days = [p for p in points if start <= p.day <= end]
        out.append(
            Week(
                start,
                end,
                _sum(p.views_own for p in days),
                _sum(p.views_similar for p in days),
                _mean(p.conversion_own for p in days),
                _mean(p.conversion_similar for p in days),
            )
        )
    return tuple(out)


def build_listing_reports(
    listings: Sequence[tuple[str, str, str]], points: Sequence[DayPoint], today: dt.date
) -> tuple[ListingReport, ...]:
    """``listings``: (account_id, listing_id, name) in display order."""
    by_listing: dict[tuple[str, str], list[DayPoint]] = defaultdict(list)
    for p in points:
        by_listing[(p.account_id, p.listing_id)].append(p)
    return tuple(
        ListingReport(a, lid, name, summarize_weeks(by_listing.get((a, lid), []), today))
        for a, lid, name in listings
    )


def format_count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def format_rate(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def week_cell(w: Week) -> str:
    return (
        f"{format_count(w.views_own)} / {format_count(w.views_similar)}\n"
        f"{format_rate(w.conversion_own)} / {format_rate(w.conversion_similar)}"
    )


def render(report: Report) -> Group:
    counts = Table(title="Rows per table", title_justify="left")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for table, n in report.rows_per_table.items():
        counts.add_row(table, f"{n:,}")

    parts: list[Table | Text] = [
        counts,
        Text(
            f"\nLast {WEEKS} weeks to {report.today.isoformat()}. Each cell: page views, own / "
            "similar listings; below, conversion rate, own / similar (mean of the daily rates)."
        ),
    ]
    bounds = week_bounds(report.today)
    accounts = list(dict.fromkeys(lr.account_id for lr in report.listings))
    for account_id in accounts:
        t = Table(title=f"Account {account_id}", title_justify="left", show_lines=True)
        t.add_column("listing")
        for start, end in bounds:
            t.add_column(f"{start:%b %d} - {end:%b %d}", justify="right")
        for lr in report.listings:
            if lr.account_id == account_id:
                t.add_row(f"{lr.name}\n{lr.listing_id}", *(week_cell(w) for w in lr.weeks))
        parts.append(t)
    return Group(*parts)


def print_report(console: Console, report: Report) -> None:
    console.print(render(report))


# --- the database -------------------------------------------------------------------------

_POINTS = """
SELECT DISTINCT ON (account_id, airbnb_listing_id, metric_date)
       account_id, airbnb_listing_id, metric_date,
       p3_impressions_your_value, p3_impressions_similar_value,
       conversion_rate_your_value, conversion_rate_similar_value
FROM airbnb.chart_query
WHERE account_id = ANY($1::text[]) AND metric_date BETWEEN $2 AND $3
ORDER BY account_id, airbnb_listing_id, metric_date, time DESC
"""

_LISTINGS = """
SELECT account_id, airbnb_listing_id,
       COALESCE(airbnb_internal_name, listing_name, airbnb_listing_id) AS name
FROM airbnb.listings
WHERE account_id = ANY($1::text[])
ORDER BY account_id, name, airbnb_listing_id
"""


async def collect(database_url: str, account_ids: Sequence[str], today: dt.date) -> Report:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows_per_table: dict[str, int] = {
            t.name: int(await conn.fetchval(f"SELECT count(*) FROM {t.qualified_name}"))
            for t in METRIC_TABLES.values()
        }
        first = week_bounds(today)[0][0]
        points = [
            DayPoint(
                r["account_id"],
                r["airbnb_listing_id"],
                r["metric_date"],
                r["p3_impressions_your_value"],
                r["p3_impressions_similar_value"],
                r["conversion_rate_your_value"],
                r["conversion_rate_similar_value"],
            )
            for r in await conn.fetch(_POINTS, list(account_ids), first, today)
        ]
        listings = [
            (r["account_id"], r["airbnb_listing_id"], r["name"])
            for r in await conn.fetch(_LISTINGS, list(account_ids))
        ]
    finally:
        await conn.close()
    # The accounts in the caller's order (the demo's), each one's listings by name.
    rank = {a: i for i, a in enumerate(account_ids)}
    listings.sort(key=lambda item: rank.get(item[0], len(rank)))
    return Report(rows_per_table, build_listing_reports(listings, points, today), today)
