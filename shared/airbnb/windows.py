"""Sync windows: which days a sync asks Airbnb about, and how they are cut into requests.

Airbnb's dashboard thinks in Sunday-to-Saturday weeks and addresses days relative to
"today" (``relativeDs*``), so everything here is pure date arithmetic on ``today``,
which callers take from ``SYNC_AIRBNB_TODAY`` or the scrape day, never from a clock.
All ranges are inclusive at both ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from shared.airbnb.errors import WindowError

# Airbnb numbers days so that day 0 of a request is three days before "today";
# verified on the captures: 2025-01-11 on scrape day 2025-07-11 is relativeDs -178.
RELATIVE_DS_OFFSET = 3
# Airbnb refuses (or answers with nonsense) past about half a year ahead.
DEFAULT_MAX_DAYS_AHEAD = 182


@dataclass(frozen=True, slots=True)
class DateRange:
    """Inclusive range of days: ``start`` and ``end`` both belong to it."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"DateRange end {self.end} is before start {self.start}")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """The three week counts of DESIGN.md plus Airbnb's horizon; all are settings."""

    first_run_weeks_back: int = 25
    incremental_weeks_back: int = 1
    weeks_ahead: int = 5
    max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD

    def __post_init__(self) -> None:
        for name in ("first_run_weeks_back", "incremental_weeks_back", "weeks_ahead"):
            if getattr(self, name) < 0:
                raise ValueError(f"WindowSettings.{name} must be >= 0")
        if self.max_days_ahead < 0:
            raise ValueError("WindowSettings.max_days_ahead must be >= 0")


def week_start(d: date) -> date:
    """The Sunday on or before ``d``."""
    # date.weekday(): Monday is 0 and Sunday is 6, so Sunday maps to a shift of 0.
    return d - timedelta(days=(d.weekday() + 1) % 7)


def week_end(d: date) -> date:
    """The Saturday on or after ``d``."""
    return d + timedelta(days=(5 - d.weekday()) % 7)


def horizon(today: date, max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD) -> date:
    """The last day Airbnb will serve when asked on ``today``."""
    return today + timedelta(days=max_days_ahead)


def sync_window(
    today: date, *, first_run: bool, settings: WindowSettings = WindowSettings()
) -> DateRange:
    """The days one sync of one account covers.

    A first run backfills ``first_run_weeks_back`` weeks; later runs re-read
    ``incremental_weeks_back`` weeks because Airbnb revises recent days.
    """
    weeks_back = settings.first_run_weeks_back if first_run else settings.incremental_weeks_back
    start = week_start(today) - timedelta(weeks=weeks_back)
    end = min(
        week_end(today) + timedelta(weeks=settings.weeks_ahead),
        horizon(today, settings.max_days_ahead),
    )
    return DateRange(start, end)


def slice_window(window: DateRange, days: int) -> list[DateRange]:
    """Consecutive ``days``-day slices from ``window.start``; the last is cut at ``window.end``."""
    if days < 1:
        raise ValueError(f"slice length must be at least 1 day, got {days}")
    step = timedelta(days=days)
    last = timedelta(days=days - 1)
    slices: list[DateRange] = []
    start = window.start
    while start <= window.end:
        slices.append(DateRange(start, min(start + last, window.end)))
        start += step
    return slices


def relative_ds(day: date, today: date) -> int:
    """Airbnb's ``relativeDs`` number of ``day`` for a request made on ``today``."""
    return (day - today).days + RELATIVE_DS_OFFSET


def check_servable(
    slice: DateRange, today: date, max_days_ahead: int = DEFAULT_MAX_DAYS_AHEAD
) -> None:
    """Raise :class:`WindowError` if ``slice`` reaches past what Airbnb serves on ``today``."""
    limit = horizon(today, max_days_ahead)
    if slice.end > limit:
        raise WindowError(
            f"slice {slice} ends after {limit.isoformat()}, the last day Airbnb serves "
            f"on {today.isoformat()} (today + {max_days_ahead} days)"
        )
