"""Sync windows: Sunday-to-Saturday weeks, slicing, Airbnb's +3 rule and the horizon."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.airbnb.errors import WindowError
from shared.airbnb.windows import (
    DateRange,
    WindowSettings,
    check_servable,
    horizon,
    relative_ds,
    slice_window,
    sync_window,
    week_end,
    week_start,
)

SUNDAY, SATURDAY = 6, 5  # date.weekday()

# One full week, Sunday 2025-07-06 .. Saturday 2025-07-12: every weekday as "today".
WEEK_OF_2025_07_06 = [
    (date(2025, 7, 6), date(2025, 7, 6), date(2025, 7, 12)),
    (date(2025, 7, 7), date(2025, 7, 6), date(2025, 7, 12)),
    (date(2025, 7, 8), date(2025, 7, 6), date(2025, 7, 12)),
    (date(2025, 7, 9), date(2025, 7, 6), date(2025, 7, 12)),
    (date(2025, 7, 10), date(2025, 7, 6), date(2025, 7, 12)),
    (date(2025, 7, 11), date(2025, 7, 6), date(2025, 7, 12)),
    (date(2025, 7, 12), date(2025, 7, 6), date(2025, 7, 12)),
]
# Month, year and leap-day boundaries.
BOUNDARIES = [
    (date(2024, 2, 29), date(2024, 2, 25), date(2024, 3, 2)),  # Thursday, leap day
    (date(2023, 12, 31), date(2023, 12, 31), date(2024, 1, 6)),  # Sunday, year end
    (date(2024, 1, 1), date(2023, 12, 31), date(2024, 1, 6)),  # Monday, year start
    (date(2025, 3, 1), date(2025, 2, 23), date(2025, 3, 1)),  # Saturday, after Feb 28
    (date(2024, 3, 1), date(2024, 2, 25), date(2024, 3, 2)),  # Friday, after Feb 29
    (date(2025, 1, 1), date(2024, 12, 29), date(2025, 1, 4)),  # Wednesday across a year
    (date(2025, 7, 31), date(2025, 7, 27), date(2025, 8, 2)),  # Thursday, month end
]


@pytest.mark.parametrize(("today", "sunday", "saturday"), WEEK_OF_2025_07_06 + BOUNDARIES)
def test_week_start_and_end(today: date, sunday: date, saturday: date) -> None:
    assert week_start(today) == sunday
    assert week_end(today) == saturday


@given(st.dates(min_value=date(1900, 1, 8), max_value=date(2999, 12, 24)))
def test_week_bounds_properties(d: date) -> None:
    start, end = week_start(d), week_end(d)
    assert start.weekday() == SUNDAY and end.weekday() == SATURDAY
    assert 0 <= (d - start).days <= 6
    assert 0 <= (end - d).days <= 6


# today -> (first-run window, incremental window); default settings.
SYNC_WINDOWS = [
    # 2025-07-11 is a Friday: week 2025-07-06..2025-07-12.
    (
        date(2025, 7, 11),
        DateRange(date(2025, 1, 12), date(2025, 8, 16)),
        DateRange(date(2025, 6, 29), date(2025, 8, 16)),
    ),
    # Sunday: the week starts today.
    (
        date(2025, 7, 6),
        DateRange(date(2025, 1, 12), date(2025, 8, 16)),
        DateRange(date(2025, 6, 29), date(2025, 8, 16)),
    ),
    # Saturday: the week ends today.
    (
        date(2025, 7, 12),
        DateRange(date(2025, 1, 12), date(2025, 8, 16)),
        DateRange(date(2025, 6, 29), date(2025, 8, 16)),
    ),
    # Leap day.
    (
        date(2024, 2, 29),
        DateRange(date(2023, 9, 3), date(2024, 4, 6)),
        DateRange(date(2024, 2, 18), date(2024, 4, 6)),
    ),
    # Year end (a Sunday) and year start.
    (
        date(2023, 12, 31),
        DateRange(date(2023, 7, 9), date(2024, 2, 10)),
        DateRange(date(2023, 12, 24), date(2024, 2, 10)),
    ),
    (
        date(2024, 1, 1),
        DateRange(date(2023, 7, 9), date(2024, 2, 10)),
        DateRange(date(2023, 12, 24), date(2024, 2, 10)),
    ),
    (
        date(2025, 3, 1),
        DateRange(date(2024, 9, 1), date(2025, 4, 5)),
        DateRange(date(2025, 2, 16), date(2025, 4, 5)),
    ),
]


@pytest.mark.parametrize(("today", "first", "incremental"), SYNC_WINDOWS)
def test_sync_window(today: date, first: DateRange, incremental: DateRange) -> None:
    assert sync_window(today, first_run=True) == first
    assert sync_window(today, first_run=False) == incremental
    assert first.start.weekday() == SUNDAY and first.end.weekday() == SATURDAY
    assert first.days == (25 + 1 + 5) * 7


@pytest.mark.parametrize(("today", "_sunday", "_saturday"), WEEK_OF_2025_07_06 + BOUNDARIES)
def test_sync_window_every_weekday(today: date, _sunday: date, _saturday: date) -> None:
    first = sync_window(today, first_run=True)
    later = sync_window(today, first_run=False)
    assert first.start == week_start(today) - timedelta(weeks=25)
    assert later.start == week_start(today) - timedelta(weeks=1)
    assert first.end == later.end == week_end(today) + timedelta(weeks=5)
    assert first.start <= today <= first.end


def test_sync_window_settings_are_honoured() -> None:
    settings = WindowSettings(first_run_weeks_back=2, incremental_weeks_back=0, weeks_ahead=0)
    today = date(2025, 7, 11)
    assert sync_window(today, first_run=True, settings=settings) == DateRange(
        date(2025, 6, 22), date(2025, 7, 12)
    )
    assert sync_window(today, first_run=False, settings=settings) == DateRange(
        date(2025, 7, 6), date(2025, 7, 12)
    )


def test_sync_window_end_is_clamped_to_the_horizon() -> None:
    today = date(2025, 7, 11)
    far = WindowSettings(weeks_ahead=52)
    assert sync_window(today, first_run=False, settings=far).end == date(2026, 1, 9)
    assert horizon(today) == date(2026, 1, 9)
    tight = WindowSettings(max_days_ahead=0)
    assert sync_window(today, first_run=False, settings=tight).end == today


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_run_weeks_back": -1},
        {"incremental_weeks_back": -1},
        {"weeks_ahead": -1},
        {"max_days_ahead": -1},
    ],
)
def test_window_settings_reject_negatives(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        WindowSettings(**kwargs)


def test_date_range() -> None:
    assert DateRange(date(2024, 2, 28), date(2024, 3, 1)).days == 3
    assert DateRange(date(2025, 1, 1), date(2025, 1, 1)).days == 1
    assert str(DateRange(date(2025, 1, 11), date(2025, 2, 7))) == "2025-01-11..2025-02-07"
    with pytest.raises(ValueError):
        DateRange(date(2025, 1, 2), date(2025, 1, 1))


def test_slice_window_cuts_the_last_slice_short() -> None:
    window = DateRange(date(2025, 1, 12), date(2025, 3, 1))  # 49 days
    slices = slice_window(window, 28)
    assert slices == [
        DateRange(date(2025, 1, 12), date(2025, 2, 8)),
        DateRange(date(2025, 2, 9), date(2025, 3, 1)),
    ]
    assert [s.days for s in slices] == [28, 21]


def test_slice_window_exact_and_single_day() -> None:
    window = DateRange(date(2024, 2, 25), date(2024, 3, 9))  # 14 days across Feb 29
    assert slice_window(window, 7) == [
        DateRange(date(2024, 2, 25), date(2024, 3, 2)),
        DateRange(date(2024, 3, 3), date(2024, 3, 9)),
    ]
    one = DateRange(date(2024, 2, 29), date(2024, 2, 29))
    assert slice_window(one, 28) == [one]
    with pytest.raises(ValueError):
        slice_window(window, 0)


def test_first_run_window_slices() -> None:
    window = sync_window(date(2025, 7, 11), first_run=True)  # 217 days
    chart = slice_window(window, 28)
    assert len(chart) == 8 and chart[-1].days == 217 - 7 * 28
    assert len(slice_window(window, 7)) == 31


@given(
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    length=st.integers(min_value=1, max_value=400),
    days=st.integers(min_value=1, max_value=60),
)
def test_slices_tile_the_window(start: date, length: int, days: int) -> None:
    window = DateRange(start, start + timedelta(days=length - 1))
    slices = slice_window(window, days)
    assert slices[0].start == window.start
    assert slices[-1].end == window.end
    assert all(s.days == days for s in slices[:-1])
    assert 1 <= slices[-1].days <= days
    for prev, nxt in pairwise(slices):
        assert nxt.start == prev.end + timedelta(days=1)
    assert sum(s.days for s in slices) == window.days


def test_relative_ds_matches_the_captures() -> None:
    today = date(2025, 7, 11)
    assert relative_ds(date(2025, 1, 11), today) == -178
    assert relative_ds(date(2025, 2, 7), today) == -151
    assert relative_ds(today, today) == 3
    assert relative_ds(date(2024, 3, 1), date(2024, 2, 28)) == 5  # across the leap day


def test_check_servable() -> None:
    today = date(2025, 7, 11)
    check_servable(DateRange(date(2025, 12, 1), date(2026, 1, 9)), today)  # exactly +182
    with pytest.raises(WindowError) as err:
        check_servable(DateRange(date(2025, 12, 20), date(2026, 1, 10)), today)
    message = str(err.value)
    assert "2025-12-20..2026-01-10" in message
    assert "2026-01-09" in message and "2025-07-11" in message
    assert isinstance(err.value, ValueError)
