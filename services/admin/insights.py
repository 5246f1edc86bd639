"""The read API's arithmetic, as plain functions: stored rows in, answers out, no I/O.

What ``/insights``, ``/insights/forward`` and ``/portfolio`` compute (docs/insights.md),
apart from the SQL that picks each date's row of the latest scrape on or before ``as_of``
(services/admin/store.py) and the orchestration that runs it (insight_queries.py):

- periods: days, ISO weeks (Monday..Sunday) and calendar months, clipped to [from, to]
  (:func:`periods`);
- counts are summed (:func:`total`); a rate over several days is the mean of the daily
  rates weighted by each day's page views (:func:`view_weighted`), never a plain mean of
  rates, which would let a day with 3 views weigh as much as one with 300;
- a rate over a whole week or month of one listing is Airbnb's own figure where a scraped
  window covers it exactly (:func:`covering_window`): a window row ``[S, E]`` holds the
  figure of the chart's dates ``S+1 .. E+1`` (Airbnb's one-day offset), so the period
  ``[P, Q]`` needs ``window_start = P - 1`` and ``window_end = Q - 1``;
- the portfolio's periods, changes and flags (:func:`portfolio_listing`);
- forward demand: each stay date's scrapes and the change from one to the next
  (:func:`forward`).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from services.admin.models import (
    ForwardScrape,
    ForwardStayDate,
    Granularity,
    InsightPoint,
    MetricKind,
    MetricName,
    PeriodFigures,
    PointSource,
    PortfolioFlag,
    PortfolioListing,
    SideFigures,
    Trend,
)

DAY = dt.timedelta(days=1)
Number = int | float

METRIC_KINDS: dict[MetricName, MetricKind] = {
    "p3_impressions": "count",
    "conversion_rate": "rate",
}
WindowTable = Literal["list_of_metrics", "chart_summary"]
# Where both tables hold a window covering the period, the 7-day one is Airbnb's weekly
# figure as its dashboard shows it; a 28-day slice covers a calendar month only in February.
WINDOW_PREFERENCE: tuple[WindowTable, ...] = ("list_of_metrics", "chart_summary")


@dataclass(frozen=True, slots=True)
class DayRow:
    """One listing's chart_query row for one date, from one scrape (``scraped_at``)."""

    account_id: str
    listing_id: str
    day: dt.date
    scraped_at: dt.datetime
    own_views: int | None
    similar_views: int | None
    own_rate: float | None
    similar_rate: float | None

    def value(self, metric: MetricName, own: bool) -> Number | None:
        if metric == "p3_impressions":
            return self.own_views if own else self.similar_views
        return self.own_rate if own else self.similar_rate

    def views(self, own: bool) -> int | None:
        return self.own_views if own else self.similar_views


@dataclass(frozen=True, slots=True)
class WindowRow:
    """A list_of_metrics or chart_summary row: Airbnb's own figure for a window."""

    table: WindowTable
    window_start: dt.date
    window_end: dt.date
    scraped_at: dt.datetime
    conversion_rate: float | None


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date
    end: dt.date
    # False when [from, to] cut the period short: no Airbnb window can then cover it.
    whole: bool


# --- periods --------------------------------------------------------------------------------


def period_of(day: dt.date, granularity: Granularity) -> tuple[dt.date, dt.date]:
    """The day, ISO week (Monday..Sunday, PostgreSQL's date_trunc('week')) or calendar
    month holding ``day``."""
    if granularity == "day":
        return day, day
    if granularity == "week":
        monday = day - dt.timedelta(days=day.weekday())
        return monday, monday + 6 * DAY
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def periods(start: dt.date, end: dt.date, granularity: Granularity) -> list[Period]:
    """The periods covering [start, end], each clipped to it."""
    out: list[Period] = []
    day = start
    while day <= end:
        p_start, p_end = period_of(day, granularity)
        first, last = max(p_start, start), min(p_end, end)
        out.append(Period(first, last, (first, last) == (p_start, p_end)))
        day = last + DAY
    return out


def window_key(period: Period) -> tuple[dt.date, dt.date]:
    """The (window_start, window_end) of the Airbnb window whose figure is the period's:
    one day before each end (Airbnb's window [S, E] holds the chart's dates S+1 .. E+1)."""
    return period.start - DAY, period.end - DAY


# --- aggregation ----------------------------------------------------------------------------


def total(values: Iterable[Number | None]) -> Number | None:
    """The sum of the values given; None when none is."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def view_weighted(pairs: Iterable[tuple[float | None, int | None]]) -> float | None:
    """sum(rate * views) / sum(views) over the (rate, views) with a rate and views > 0;
    None when the views sum to 0 (no day says anything about the rate)."""
    num = 0.0
    den = 0
    for rate, views in pairs:
        if rate is not None and views is not None and views > 0:
            num += rate * views
            den += views
    return num / den if den else None


def combine(rows: Sequence[DayRow], metric: MetricName, own: bool) -> Number | None:
    """Rows of any listings and days as one figure: counts summed, rates view-weighted."""
    if METRIC_KINDS[metric] == "count":
        return total(r.value(metric, own) for r in rows)
    return view_weighted((r.value(metric, own), r.views(own)) for r in rows)


def covering_window(windows: Sequence[WindowRow], period: Period) -> WindowRow | None:
    """Airbnb's window whose figure is exactly the period's (list_of_metrics first)."""
    if not period.whole:
        return None
    start, end = window_key(period)
    for table in WINDOW_PREFERENCE:
        for w in windows:
            if (
                w.table == table
                and (w.window_start, w.window_end) == (start, end)
                and w.conversion_rate is not None
            ):
                return w
    return None


def aggregation_rule(metric: MetricName, granularity: Granularity, one_listing: bool) -> str:
    """The sentence each answer carries: which rule made its points."""
    listings = "this listing" if one_listing else "the account's listings combined per day"
    if granularity == "day":
        if METRIC_KINDS[metric] == "count" or one_listing:
            return f"Each day's value from the latest scrape on or before as_of ({listings})."
        return (
            "Each day's rate is the mean of the listings' rates that day weighted by their "
            "page views (latest scrape on or before as_of)."
        )
    period = "ISO week (Monday..Sunday)" if granularity == "week" else "calendar month"
    if METRIC_KINDS[metric] == "count":
        return f"Counts summed over each {period} ({listings})."
    own = (
        "Airbnb's own figure for the window where a scraped list_of_metrics or chart_summary "
        "window covers the whole period exactly (window_start = period_start - 1), else "
        if one_listing
        else ""
    )
    return (
        f"Rates over each {period}: own is {own}the mean of the daily rates weighted by "
        f"the day's page views; similar is always weighted by the similar listings' page "
        f"views ({listings})."
    )


def series(
    rows: Iterable[DayRow],
    windows: Sequence[WindowRow],
    metric: MetricName,
    granularity: Granularity,
    start: dt.date,
    end: dt.date,
    *,
    one_listing: bool,
) -> list[InsightPoint]:
    """The points of ``GET /insights``: ``rows`` are each listing-date's latest row (at most
    one per listing and date), ``windows`` one listing's latest window rows (empty for all
    listings combined: windows are per listing)."""
    by_day: dict[dt.date, list[DayRow]] = {}
    for r in rows:
        if start <= r.day <= end:
            by_day.setdefault(r.day, []).append(r)
    kind = METRIC_KINDS[metric]
    points: list[InsightPoint] = []
    for period in periods(start, end, granularity):
        days = [d for d in _dates(period.start, period.end) if d in by_day]
        if not days:
            continue
        used = [r for d in days for r in by_day[d]]
        scraped_at = max(r.scraped_at for r in used)
        source: PointSource
        if granularity == "day":
            source = "daily"
        elif kind == "count":
            source = "sum_of_days"
        else:
            source = "view_weighted"
        own: Number | None = combine(used, metric, own=True)
        similar: Number | None = combine(used, metric, own=False)
        if one_listing and granularity == "day":
            # One listing's day is Airbnb's own figure for it: a real 0.0 rate on a day
            # without page views is a value, which weighting by views would drop.
            own, similar = used[0].value(metric, True), used[0].value(metric, False)
        own_source: PointSource = source
        if kind == "rate" and granularity != "day" and one_listing:
            window = covering_window(windows, period)
            if window is not None:
                own, own_source = window.conversion_rate, "airbnb_window"
                scraped_at = max(scraped_at, window.scraped_at)
        points.append(
            InsightPoint(
                period_start=period.start,
                period_end=period.end,
                days=len(days),
                own=own,
                similar=similar,
                own_source=own_source,
                similar_source=source,
                scraped_at=scraped_at,
            )
        )
    return points


def window_starts(start: dt.date, end: dt.date, granularity: Granularity) -> list[dt.date]:
    """The window_start of every window that could cover a whole period of the series."""
    if granularity == "day":
        return []
    return [window_key(p)[0] for p in periods(start, end, granularity) if p.whole]


def _dates(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + i * DAY for i in range((end - start).days + 1)]


# --- forward demand -------------------------------------------------------------------------


def _difference(now: Number | None, before: Number | None) -> Number | None:
    return None if now is None or before is None else now - before


def forward(rows: Iterable[DayRow], metric: MetricName) -> list[ForwardStayDate]:
    """Every scrape of each stay date (one listing's rows, every scrape kept), oldest first,
    with the change from the scrape before: how demand for the date built up."""
    by_day: dict[dt.date, list[DayRow]] = {}
    for r in rows:
        by_day.setdefault(r.day, []).append(r)
    out: list[ForwardStayDate] = []
    for day in sorted(by_day):
        scrapes: list[ForwardScrape] = []
        previous: DayRow | None = None
        for r in sorted(by_day[day], key=lambda r: r.scraped_at):
            own, similar = r.value(metric, True), r.value(metric, False)
            scrapes.append(
                ForwardScrape(
                    scraped_at=r.scraped_at,
                    lead_days=(day - r.scraped_at.astimezone(dt.UTC).date()).days,
                    own=own,
                    similar=similar,
                    own_change=None
                    if previous is None
                    else _difference(own, previous.value(metric, True)),
                    similar_change=None
                    if previous is None
                    else _difference(similar, previous.value(metric, False)),
                )
            )
            previous = r
        out.append(ForwardStayDate(stay_date=day, scrapes=scrapes))
    return out


# --- portfolio ------------------------------------------------------------------------------

PORTFOLIO_DAYS = 56
TREND_DAYS = 28


def portfolio_periods(end: dt.date) -> dict[str, tuple[dt.date, dt.date]]:
    """last_7, prior_7, last_28, prior_28 ending on ``end`` (inclusive)."""
    return {
        "last_7": (end - 6 * DAY, end),
        "prior_7": (end - 13 * DAY, end - 7 * DAY),
        "last_28": (end - 27 * DAY, end),
        "prior_28": (end - 55 * DAY, end - 28 * DAY),
    }


def change(last: Number | None, prior: Number | None) -> float | None:
    """(last - prior) / prior; None when either is missing or prior is 0."""
    if last is None or prior is None or prior == 0:
        return None
    return (last - prior) / prior


def period_figures(
    in_periods: dict[str, list[DayRow]], metric: MetricName, own: bool
) -> PeriodFigures:
    """One side of one metric over the portfolio's periods (``in_periods``: each period's
    rows, from :func:`rows_by_period`)."""
    # Rates are view-weighted, never Airbnb's windows: the figures compare across listings
    # and periods only if every one is made the same way.
    figures = {
        name: combine(used, metric, own) if used else None for name, used in in_periods.items()
    }
    return PeriodFigures(
        last_7=figures["last_7"],
        prior_7=figures["prior_7"],
        last_28=figures["last_28"],
        prior_28=figures["prior_28"],
        change_7=change(figures["last_7"], figures["prior_7"]),
        change_28=change(figures["last_28"], figures["prior_28"]),
    )


def rows_by_period(by_day: dict[dt.date, DayRow], end: dt.date) -> dict[str, list[DayRow]]:
    return {
        name: [by_day[d] for d in _dates(first, last) if d in by_day]
        for name, (first, last) in portfolio_periods(end).items()
    }


def flags(
    page_views: PeriodFigures, conversion_rate: PeriodFigures, threshold: float
) -> list[PortfolioFlag]:
    """A flag for each own change that fell by more than ``threshold`` (strictly)."""

    def fell(c: float | None) -> bool:
        return c is not None and c < -threshold

    out: list[PortfolioFlag] = []
    if fell(page_views.change_7):
        out.append("page_views_7d")
    if fell(page_views.change_28):
        out.append("page_views_28d")
    if fell(conversion_rate.change_7):
        out.append("conversion_rate_7d")
    if fell(conversion_rate.change_28):
        out.append("conversion_rate_28d")
    return out


@dataclass(frozen=True, slots=True)
class ListingInfo:
    account_id: str
    customer_id: str | None
    listing_id: str
    internal_name: str | None
    listing_name: str | None


def portfolio_listing(
    listing: ListingInfo, rows: Iterable[DayRow], end: dt.date, threshold: float
) -> PortfolioListing:
    """One listing of ``GET /portfolio``: ``rows`` are its latest row per date."""
    by_day = {r.day: r for r in rows}
    in_periods = rows_by_period(by_day, end)
    page_views = SideFigures(
        own=period_figures(in_periods, "p3_impressions", True),
        similar=period_figures(in_periods, "p3_impressions", False),
    )
    conversion_rate = SideFigures(
        own=period_figures(in_periods, "conversion_rate", True),
        similar=period_figures(in_periods, "conversion_rate", False),
    )
    trend_start = end - (TREND_DAYS - 1) * DAY
    trend = [by_day[d].own_views if d in by_day else None for d in _dates(trend_start, end)]
    return PortfolioListing(
        account_id=listing.account_id,
        customer_id=listing.customer_id,
        airbnb_listing_id=listing.listing_id,
        airbnb_internal_name=listing.internal_name,
        listing_name=listing.listing_name,
        page_views=page_views,
        conversion_rate=conversion_rate,
        trend=Trend(start=trend_start, page_views=trend),
        flags=flags(page_views.own, conversion_rate.own, threshold),
    )


def portfolio_start(end: dt.date) -> dt.date:
    """The first date the portfolio reads: the first day of prior_28."""
    return end - (PORTFOLIO_DAYS - 1) * DAY
