"""Properties of the simulator's pure generator and response builder, for any seed,
listing, window and today: the internal-consistency rules Airbnb's numbers obey, and
that the project's flatteners and pivots give back exactly what was generated."""

from __future__ import annotations

import itertools
import math
from datetime import date, timedelta
from statistics import mean
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulator.data import (
    COUNT_METRICS,
    RATE_METRICS,
    Account,
    Listing,
    airbnb_days,
    build_up,
    daily_metrics,
    observed_metrics,
    requested_window,
    window_totals,
)
from services.simulator.protocol import GraphQLRequest
from services.simulator.responses import build_response
from shared.airbnb.flatteners import flatten_chart_points, flatten_metric_units
from shared.airbnb.pivots import (
    pivot_chart_query,
    pivot_chart_summary,
    pivot_list_of_metrics,
    scrape_time,
)
from shared.airbnb.windows import DateRange, relative_ds

seeds = st.integers(min_value=0, max_value=2**32)
listing_ids = st.from_regex(r"[1-9][0-9]{17,18}", fullmatch=True)
todays = st.dates(min_value=date(2023, 6, 1), max_value=date(2027, 12, 31))
# Offsets of the window start from today: mostly the past, some of it straddling today.
starts = st.integers(min_value=-420, max_value=40)

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


def account_with(listing_id: str) -> Account:
    return Account("123456789", "token", (Listing(listing_id, "1 Main St", "Sim listing"),))


def respond(
    seed: int,
    listing_id: str,
    operation: str,
    metric: str,
    window: DateRange,
    today: date,
) -> dict[str, Any]:
    request = GraphQLRequest(
        operation,
        (metric,),
        "CONVERSION",
        (listing_id,),
        relative_ds(window.start, today),
        relative_ds(window.end, today),
        "MARKET" if operation == "ChartQuery" else None,
    )
    return build_response(seed, account_with(listing_id), request, today, "trace")


def component(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["data"]["porygon"]["getPerformanceComponents"]["components"][0]


def unwrap(wrapper: dict[str, Any]) -> int | float:
    if "longValue" in wrapper:
        assert isinstance(wrapper["longValue"], str)
        return int(wrapper["longValue"])
    assert isinstance(wrapper["doubleValue"], float)
    return wrapper["doubleValue"]


def units_by_name(units: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {u["metricName"]: u for u in units}


@PROPERTY_SETTINGS
@given(seed=seeds, listing_id=listing_ids, day=st.dates(date(2020, 1, 1), date(2030, 12, 31)))
def test_daily_truth_is_plausible_and_deterministic(seed: int, listing_id: str, day: date) -> None:
    truth = daily_metrics(seed, listing_id, day)
    assert truth == daily_metrics(seed, listing_id, day)
    for side in (truth.your, truth.similar):
        assert 0 <= side.bookings <= side.p3_impressions <= side.p2_impressions
        assert side.p2_impressions <= side.search_impressions
        for metric in RATE_METRICS:
            value = side.value(metric)
            assert isinstance(value, float)
            assert 0.0 <= value <= 1.0
            assert side.has_value(metric) or value == 0.0


@PROPERTY_SETTINGS
@given(seed=seeds, listing_id=listing_ids, today=todays, offset=starts, length=st.integers(1, 35))
def test_window_maths(seed: int, listing_id: str, today: date, offset: int, length: int) -> None:
    start = today + timedelta(days=offset)
    end = start + timedelta(days=length - 1)
    assert requested_window(relative_ds(start, today), relative_ds(end, today), today) == (
        start,
        end,
    )
    # Every day of the window, shifted by one, future days included.
    assert airbnb_days(start, end, today) == [
        start + timedelta(days=i) for i in range(1, length + 1)
    ]


@PROPERTY_SETTINGS
@given(seed=seeds, listing_id=listing_ids, today=todays, offset=starts, length=st.integers(1, 35))
def test_count_chart_is_consistent(
    seed: int, listing_id: str, today: date, offset: int, length: int
) -> None:
    start = today + timedelta(days=offset)
    window = DateRange(start, start + timedelta(days=length - 1))
    doc = respond(seed, listing_id, "ChartQuery", "p3_impressions", window, today)
    assert doc == respond(seed, listing_id, "ChartQuery", "p3_impressions", window, today)
    assert doc["extensions"]["traceId"] == "trace"
    chart = component(doc)
    your, similar = chart["metricLineCharts"]
    assert (your["label"], similar["label"]) == ("Your performance", "Similar listings")

    days = airbnb_days(window.start, window.end, today)
    for line, label in ((your, "Your listings"), (similar, "Similar listings")):
        assert [p["ds"] for p in line["dataPoints"]] == [d.isoformat() for d in days]
        for p in line["dataPoints"]:
            assert p["label"] == label
            assert p["valueString"] == p["value"]["longValue"]
    for p, day in zip(your["dataPoints"], days, strict=True):
        assert (
            unwrap(p["value"]) == observed_metrics(seed, listing_id, day, today).your.p3_impressions
        )

    your_total = sum(unwrap(p["value"]) for p in your["dataPoints"])
    similar_total = sum(unwrap(p["value"]) for p in similar["dataPoints"])
    primary = chart["primaryMetric"]
    assert unwrap(primary["value"]) == your_total
    assert primary["valueString"] == str(your_total)
    assert primary["valueChange"]["doubleValue"] == float(your_total - similar_total)
    assert primary["valueChangeString"] == str(your_total - similar_total)
    (p2,) = chart["secondaryMetrics"]
    assert p2["metricName"] == "p2_impressions"
    assert unwrap(p2["value"]) == sum(
        observed_metrics(seed, listing_id, d, today).your.p2_impressions for d in days
    )
    assert p2["valueChange"] is None


@PROPERTY_SETTINGS
@given(seed=seeds, listing_id=listing_ids, today=todays, offset=starts, length=st.integers(1, 35))
def test_rates_are_ratios_of_the_summed_counts(
    seed: int, listing_id: str, today: date, offset: int, length: int
) -> None:
    start = today + timedelta(days=offset)
    window = DateRange(start, start + timedelta(days=length - 1))
    counts_chart = component(
        respond(seed, listing_id, "ChartQuery", "p3_impressions", window, today)
    )
    counts = units_by_name([counts_chart["primaryMetric"], *counts_chart["secondaryMetrics"]])
    rates_chart = component(
        respond(seed, listing_id, "ChartQuery", "conversion_rate", window, today)
    )
    rates = units_by_name([rates_chart["primaryMetric"], *rates_chart["secondaryMetrics"]])
    assert list(rates) == list(RATE_METRICS)

    p3, p2 = unwrap(counts["p3_impressions"]["value"]), unwrap(counts["p2_impressions"]["value"])
    search = rates["search_conversion_rate"]
    if p2:
        assert unwrap(search["value"]) == p3 / p2
        assert search["valueString"].endswith("%")
    else:
        assert (unwrap(search["value"]), search["valueString"]) == (0.0, "-")

    your, similar = window_totals(seed, [listing_id], window.start, window.end, today)
    for name, unit in rates.items():
        assert unwrap(unit["value"]) == your.value(name)
        assert (unit["valueString"] == "-") == (not your.has_value(name))
    conversion = unwrap(rates["conversion_rate"]["value"])
    assert math.isclose(
        conversion,
        unwrap(rates["search_conversion_rate"]["value"])
        * unwrap(rates["listing_conversion_rate"]["value"]),
        abs_tol=1e-12,
    )
    change = rates_chart["primaryMetric"]["valueChange"]
    if your.has_value("conversion_rate") and similar.has_value("conversion_rate"):
        assert change["doubleValue"] == your.value("conversion_rate") - similar.value(
            "conversion_rate"
        )
    else:
        assert change is None

    # Points of a rate chart are the daily ratios, with "-" where the day has no denominator.
    days = airbnb_days(window.start, window.end, today)
    for p, day in zip(rates_chart["metricLineCharts"][0]["dataPoints"], days, strict=True):
        truth = observed_metrics(seed, listing_id, day, today).your
        assert unwrap(p["value"]) == truth.value("conversion_rate")
        assert (p["valueString"] == "-") == (not truth.has_value("conversion_rate"))


@PROPERTY_SETTINGS
@given(
    seed=seeds,
    listing_id=listing_ids,
    today=todays,
    offset=starts,
    week=st.integers(min_value=0, max_value=3),
)
def test_weekly_list_of_metrics_sums_the_daily_chart_points(
    seed: int, listing_id: str, today: date, offset: int, week: int
) -> None:
    chart_window = DateRange(today + timedelta(days=offset), today + timedelta(days=offset + 27))
    week_start = chart_window.start + timedelta(days=7 * week)
    week_window = DateRange(week_start, week_start + timedelta(days=6))
    chart = component(
        respond(seed, listing_id, "ChartQuery", "p3_impressions", chart_window, today)
    )
    weekly = units_by_name(
        component(
            respond(seed, listing_id, "ListOfMetricsQuery", "p3_impressions", week_window, today)
        )["metrics"]
    )

    week_days = {d.isoformat() for d in airbnb_days(week_window.start, week_window.end, today)}
    points = [p for p in chart["metricLineCharts"][0]["dataPoints"] if p["ds"] in week_days]
    assert len(points) == len(week_days)
    assert unwrap(weekly["p3_impressions"]["value"]) == sum(unwrap(p["value"]) for p in points)
    assert all(u["valueChange"] is None for u in weekly.values())


@PROPERTY_SETTINGS
@given(
    seed=seeds,
    listing_id=listing_ids,
    day=st.dates(date(2024, 1, 1), date(2027, 12, 31)),
    lead=st.integers(min_value=1, max_value=200),
)
def test_a_future_days_counts_only_grow_as_it_nears(
    seed: int, listing_id: str, day: date, lead: int
) -> None:
    # Scraped lead days ahead, then each day after until the day itself.
    seen = [
        observed_metrics(seed, listing_id, day, day - timedelta(days=n))
        for n in range(lead, -1, -1)
    ]
    truth = daily_metrics(seed, listing_id, day)
    assert seen[-1] == truth
    for earlier, later in itertools.pairwise(seen):
        for side in ("your", "similar"):
            a, b = getattr(earlier, side), getattr(later, side)
            assert a.p3_impressions <= b.p3_impressions
            assert a.p2_impressions <= b.p2_impressions
            assert a.search_impressions <= b.search_impressions
            assert a.bookings <= b.bookings
    for observed in seen:
        for side in (observed.your, observed.similar):
            assert 0 <= side.bookings <= side.p3_impressions <= side.p2_impressions
            assert side.p2_impressions <= side.search_impressions


@PROPERTY_SETTINGS
@given(seed=seeds, listing_id=listing_ids, day=todays, back=st.integers(0, 400))
def test_today_and_the_past_are_the_full_truth(
    seed: int, listing_id: str, day: date, back: int
) -> None:
    today = day + timedelta(days=back)
    assert observed_metrics(seed, listing_id, day, today) == daily_metrics(seed, listing_id, day)


@pytest.mark.parametrize("lead", [-30, -1, 0])
def test_build_up_is_whole_from_the_day_itself(lead: int) -> None:
    assert build_up(lead) == 1.0


def test_build_up_decreases_with_the_lead() -> None:
    fractions = [build_up(lead) for lead in range(0, 200)]
    assert fractions[0] == 1.0
    assert all(a > b > 0 for a, b in itertools.pairwise(fractions))


def test_weekends_draw_more_page_views_than_midweek() -> None:
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(364)]
    totals: dict[int, list[int]] = {}
    for lid in ("100000000000000001", "100000000000000002", "100000000000000003"):
        for day in days:
            truth = daily_metrics(1, lid, day)
            totals.setdefault(day.weekday(), []).append(truth.similar.p2_impressions)
    assert mean(totals[5]) > mean(totals[1]) * 1.3  # Saturday vs Tuesday


# -- round trip through the project's flatteners and pivots ---------------------------------


@PROPERTY_SETTINGS
@given(seed=seeds, listing_id=listing_ids, today=todays, offset=starts, length=st.integers(1, 28))
def test_flatten_and_pivot_give_back_the_generated_numbers(
    seed: int, listing_id: str, today: date, offset: int, length: int
) -> None:
    start = today + timedelta(days=offset)
    window = DateRange(start, start + timedelta(days=length - 1))
    charts = [
        respond(seed, listing_id, "ChartQuery", m, window, today)
        for m in ("conversion_rate", "p3_impressions")
    ]
    lists = [
        respond(seed, listing_id, "ListOfMetricsQuery", m, window, today)
        for m in ("conversion_rate", "p3_impressions")
    ]
    keys: dict[str, Any] = {
        "account_id": "123456789",
        "listing_id": listing_id,
        "internal_name": "1 Main St",
        "scraped_at": scrape_time(today),
    }

    rows = pivot_chart_query([p for doc in charts for p in flatten_chart_points(doc)], **keys)
    days = airbnb_days(window.start, window.end, today)
    assert [row["metric_date"] for row in rows] == days
    for row in rows:
        truth = observed_metrics(seed, listing_id, row["metric_date"], today)
        assert row["p3_impressions_your_value"] == truth.your.p3_impressions
        assert row["p3_impressions_similar_value"] == truth.similar.p3_impressions
        assert row["p3_impressions_your_value_string"] == str(truth.your.p3_impressions)
        assert row["conversion_rate_your_value"] == truth.your.value("conversion_rate")
        assert row["conversion_rate_similar_value"] == truth.similar.value("conversion_rate")
        assert row["extra_metrics"] == {}

    your, similar = window_totals(seed, [listing_id], window.start, window.end, today)
    summary = pivot_chart_summary(
        [mv for doc in charts for mv in flatten_metric_units(doc)], slice=window, **keys
    )
    listed = pivot_list_of_metrics(
        [mv for doc in lists for mv in flatten_metric_units(doc)], slice=window, **keys
    )
    for metric in (*COUNT_METRICS, *RATE_METRICS):
        assert summary[f"{metric}_value"] == your.value(metric)
        assert listed[f"{metric}_value"] == your.value(metric)
    assert summary["p3_impressions_value_change"] == float(
        your.p3_impressions - similar.p3_impressions
    )
    assert (summary["window_start"], summary["window_end"]) == (window.start, window.end)
    assert summary["extra_metrics"] == {} == listed["extra_metrics"]
