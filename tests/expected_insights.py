"""What the read API (``/insights``, ``/insights/forward``, ``/portfolio``) must answer,
computed from the simulator's ground truth over any number of scrape days.

Independent of the admin: it imports nothing of ``services.admin``. The stored rows are
rebuilt here from ``services.simulator.data`` (what a scrape on a day sees for each date,
built up ahead of it, and the per-window totals) sliced by ``shared.airbnb.windows``, as
``tests/expected.py`` does; the aggregation rules are the contract's (/work/spec15.md,
docs/insights.md), written out plainly in Python instead of SQL:

- a date's value is the row of the newest scrape on or before ``as_of``;
- counts over a period are sums; a rate over an ISO week or month is Airbnb's window
  figure where a scraped 7-day (list_of_metrics) or 28-day (chart_summary) window covers
  it exactly, i.e. ``window_start = period_start - 1`` and ``window_end = period_end - 1``
  (Airbnb's one-day offset), else the mean of the daily rates weighted by page views.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from services.simulator import data as sim
from shared.airbnb.payloads import DEFAULT_POLL_SET
from shared.airbnb.windows import DateRange, slice_window

Metric = Literal["p3_impressions", "conversion_rate"]
Granularity = Literal["day", "week", "month"]
Side = Literal["own", "similar"]
SIDES: tuple[Side, Side] = ("own", "similar")
WindowTable = Literal["list_of_metrics", "chart_summary"]
# Where both cover a period, the 7-day table is preferred (the contract's order).
WINDOW_TABLES: tuple[WindowTable, WindowTable] = ("list_of_metrics", "chart_summary")

AGGREGATION_RULE = "counts summed; rates: Airbnb window figure, else page-view-weighted mean"


def _slice_days(operation_name: str) -> int:
    return next(
        s.slice_days for s in DEFAULT_POLL_SET if s.operation.operation_name == operation_name
    )


def scraped_at(day: dt.date) -> dt.datetime:
    """A scrape day's ``time`` in every row's key: midnight UTC."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One sync of the account: the scrape day and the window it asked Airbnb about."""

    day: dt.date
    window: DateRange


@dataclass(frozen=True, slots=True)
class DayRow:
    """One chart_query row: a listing's date as one scrape saw it."""

    scrape_day: dt.date
    p3_own: int
    p3_similar: int
    rate_own: float
    rate_similar: float

    def value(self, metric: Metric, side: Side) -> float:
        if metric == "p3_impressions":
            return self.p3_own if side == "own" else self.p3_similar
        return self.rate_own if side == "own" else self.rate_similar

    def views(self, side: Side) -> int:
        return self.p3_own if side == "own" else self.p3_similar


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One list_of_metrics or chart_summary row: Airbnb's figure for a window."""

    scrape_day: dt.date
    window_end: dt.date
    conversion_rate: float


@dataclass
class Stored:
    """Every row the database holds for the account after ``scrapes``, by key."""

    seed: int
    listing_ids: tuple[str, ...]
    # (listing, metric_date) -> the rows of every scrape, oldest first
    days: dict[tuple[str, dt.date], list[DayRow]]
    # (table, listing, window_start) -> the rows of every scrape, oldest first
    windows: dict[tuple[WindowTable, str, dt.date], list[WindowRow]]

    def day_row(self, listing_id: str, day: dt.date, as_of: dt.date | None) -> DayRow | None:
        return _latest(self.days.get((listing_id, day), []), as_of)

    def window_row(
        self, table: WindowTable, listing_id: str, start: dt.date, as_of: dt.date | None
    ) -> WindowRow | None:
        return _latest(self.windows.get((table, listing_id, start), []), as_of)

    def dates(self) -> set[dt.date]:
        return {d for _, d in self.days}


_R = TypeVar("_R", DayRow, WindowRow)


def _latest(rows: list[_R], as_of: dt.date | None) -> _R | None:
    """The row of the newest scrape on or before ``as_of`` (any scrape without one)."""
    eligible = [r for r in rows if as_of is None or r.scrape_day <= as_of]
    return max(eligible, key=lambda r: r.scrape_day) if eligible else None


def stored_rows(seed: int, listing_ids: Sequence[str], scrapes: Iterable[Scrape]) -> Stored:
    """The rows of ``scrapes`` of these listings, from the simulator's truth."""
    stored = Stored(seed, tuple(listing_ids), {}, {})
    for scrape in sorted(scrapes, key=lambda s: s.day):
        for listing_id in listing_ids:
            for sl in slice_window(scrape.window, _slice_days("ChartQuery")):
                for truth in sim.window_truth(seed, [listing_id], sl.start, sl.end, scrape.day):
                    row = DayRow(
                        scrape.day,
                        truth.your.p3_impressions,
                        truth.similar.p3_impressions,
                        float(truth.your.value("conversion_rate")),
                        float(truth.similar.value("conversion_rate")),
                    )
                    stored.days.setdefault((listing_id, truth.day), []).append(row)
                _add_window(stored, "chart_summary", listing_id, sl, scrape.day)
            for sl in slice_window(scrape.window, _slice_days("ListOfMetricsQuery")):
                _add_window(stored, "list_of_metrics", listing_id, sl, scrape.day)
    return stored


def _add_window(
    stored: Stored, table: WindowTable, listing_id: str, sl: DateRange, scrape_day: dt.date
) -> None:
    your, _ = sim.window_totals(stored.seed, [listing_id], sl.start, sl.end, scrape_day)
    row = WindowRow(scrape_day, sl.end, float(your.value("conversion_rate")))
    stored.windows.setdefault((table, listing_id, sl.start), []).append(row)


# --- periods ----------------------------------------------------------------------------------


def period_of(day: dt.date, granularity: Granularity) -> tuple[dt.date, dt.date]:
    """The whole day, ISO week (Monday..Sunday) or calendar month holding ``day``."""
    if granularity == "day":
        return day, day
    if granularity == "week":
        monday = day - dt.timedelta(days=day.weekday())
        return monday, monday + dt.timedelta(days=6)
    first = day.replace(day=1)
    next_first = (first + dt.timedelta(days=31)).replace(day=1)
    return first, next_first - dt.timedelta(days=1)


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


# --- the insights series ----------------------------------------------------------------------


def _weighted(pairs: Iterable[tuple[float, int]]) -> float | None:
    """sum(rate * views) / sum(views) over the pairs with views > 0; None without any."""
    num = 0.0
    den = 0
    for rate, views in pairs:
        if views > 0:
            num += rate * views
            den += views
    return num / den if den else None


def series(
    stored: Stored,
    metric: Metric,
    start: dt.date,
    end: dt.date,
    granularity: Granularity,
    listing_id: str | None = None,
    as_of: dt.date | None = None,
) -> list[dict[str, Any]]:
    """The ``points`` of ``GET /insights`` for these parameters, periods with no row left out."""
    listings = [listing_id] if listing_id is not None else list(stored.listing_ids)
    periods: list[tuple[dt.date, dt.date]] = []
    for day in _days(start, end):
        period = period_of(day, granularity)
        if not periods or periods[-1] != period:
            periods.append(period)
    points: list[dict[str, Any]] = []
    for p_start, p_end in periods:
        first, last = max(p_start, start), min(p_end, end)
        rows = [
            row
            for lid in listings
            for day in _days(first, last)
            if (row := stored.day_row(lid, day, as_of)) is not None
        ]
        if not rows:
            continue
        days_with_data = len(
            {
                day
                for lid in listings
                for day in _days(first, last)
                if stored.day_row(lid, day, as_of) is not None
            }
        )
        point: dict[str, Any] = {
            "period_start": first,
            "period_end": last,
            "days": days_with_data,
            "scraped_at": scraped_at(max(r.scrape_day for r in rows)),
        }
        for side in SIDES:
            value, source = _aggregate(stored, metric, side, rows, granularity, listing_id)
            point[side] = value
            point[f"{side}_source"] = source
        if (
            metric == "conversion_rate"
            and granularity != "day"
            and listing_id is not None
            and (first, last) == (p_start, p_end)
        ):
            window = _covering_window(stored, listing_id, p_start, p_end, as_of)
            if window is not None:
                point["own"] = window.conversion_rate
                point["own_source"] = "airbnb_window"
                point["scraped_at"] = max(point["scraped_at"], scraped_at(window.scrape_day))
        points.append(point)
    return points


def _aggregate(
    stored: Stored,
    metric: Metric,
    side: Side,
    rows: list[DayRow],
    granularity: Granularity,
    listing_id: str | None,
) -> tuple[float | None, str]:
    if metric == "p3_impressions":
        total = float(sum(r.value(metric, side) for r in rows))
        return total, "daily" if granularity == "day" else "sum_of_days"
    if granularity == "day" and listing_id is not None:
        (row,) = rows
        return row.value(metric, side), "daily"
    weighted = _weighted((r.value(metric, side), r.views(side)) for r in rows)
    return weighted, "daily" if granularity == "day" else "view_weighted"


def _covering_window(
    stored: Stored, listing_id: str, p_start: dt.date, p_end: dt.date, as_of: dt.date | None
) -> WindowRow | None:
    """Airbnb's window whose points are exactly the period's days (one day off its dates)."""
    for table in WINDOW_TABLES:
        row = stored.window_row(table, listing_id, p_start - dt.timedelta(days=1), as_of)
        if row is not None and row.window_end == p_end - dt.timedelta(days=1):
            return row
    return None


# --- forward demand ---------------------------------------------------------------------------


def forward(
    stored: Stored,
    listing_id: str,
    stay_from: dt.date,
    stay_to: dt.date,
    metric: Metric = "p3_impressions",
) -> list[dict[str, Any]]:
    """The ``stay_dates`` of ``GET /insights/forward``: every scrape of each stay date."""
    out: list[dict[str, Any]] = []
    for stay in _days(stay_from, stay_to):
        rows = stored.days.get((listing_id, stay), [])
        if not rows:
            continue
        scrapes: list[dict[str, Any]] = []
        previous: DayRow | None = None
        for row in sorted(rows, key=lambda r: r.scrape_day):
            entry: dict[str, Any] = {
                "scraped_at": scraped_at(row.scrape_day),
                "lead_days": (stay - row.scrape_day).days,
            }
            for side in SIDES:
                entry[side] = row.value(metric, side)
                entry[f"{side}_change"] = (
                    None
                    if previous is None
                    else row.value(metric, side) - previous.value(metric, side)
                )
            scrapes.append(entry)
            previous = row
        out.append({"stay_date": stay, "scrapes": scrapes})
    return out


# --- portfolio --------------------------------------------------------------------------------


def portfolio_periods(end: dt.date) -> dict[str, tuple[dt.date, dt.date]]:
    day = dt.timedelta(days=1)
    return {
        "last_7": (end - 6 * day, end),
        "prior_7": (end - 13 * day, end - 7 * day),
        "last_28": (end - 27 * day, end),
        "prior_28": (end - 55 * day, end - 28 * day),
    }


def _change(last: float | None, prior: float | None) -> float | None:
    if last is None or prior is None or prior == 0:
        return None
    return (last - prior) / prior


def portfolio_listing(
    stored: Stored,
    listing_id: str,
    end: dt.date,
    as_of: dt.date | None = None,
    drop_threshold: float = 0.2,
) -> dict[str, Any]:
    """One listing's ``page_views``, ``conversion_rate``, ``trend`` and ``flags``."""
    figures: dict[str, Any] = {}
    for metric, key in (("p3_impressions", "page_views"), ("conversion_rate", "conversion_rate")):
        figures[key] = {}
        for side in SIDES:
            block: dict[str, float | None] = {}
            for name, (first, last) in portfolio_periods(end).items():
                rows = [
                    row
                    for day in _days(first, last)
                    if (row := stored.day_row(listing_id, day, as_of)) is not None
                ]
                if not rows:
                    block[name] = None
                elif metric == "p3_impressions":
                    block[name] = float(sum(r.views(side) for r in rows))
                else:
                    block[name] = _weighted(
                        (r.value("conversion_rate", side), r.views(side)) for r in rows
                    )
            block["change_7"] = _change(block["last_7"], block["prior_7"])
            block["change_28"] = _change(block["last_28"], block["prior_28"])
            figures[key][side] = block
    trend_start = end - dt.timedelta(days=27)
    trend: list[float | None] = []
    for day in _days(trend_start, end):
        row = stored.day_row(listing_id, day, as_of)
        trend.append(None if row is None else float(row.p3_own))
    flags = [
        f"{key}_{n}d"
        for key in ("page_views", "conversion_rate")
        for n in (7, 28)
        if (change := figures[key]["own"][f"change_{n}"]) is not None and change < -drop_threshold
    ]
    return {
        **figures,
        "trend": {"start": trend_start, "page_views": trend},
        "flags": flags,
    }
