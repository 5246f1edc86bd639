"""The read API's arithmetic (services/admin/insights.py), on hand-computed cases: periods
and clipping, sums, the rate rule with Airbnb's one-day window offset, weights summing to
zero, listings combined, the portfolio's changes and flags at the threshold, forward
changes; and the query models' 422s."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from services.admin import insights
from services.admin.insights import DayRow, ListingInfo, Period, WindowRow
from services.admin.models import ExportQuery, ForwardQuery, InsightsQuery, PortfolioQuery

D = dt.date


def at(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def row(
    day: dt.date,
    views: int | None = None,
    rate: float | None = None,
    *,
    similar_views: int | None = None,
    similar_rate: float | None = None,
    listing: str = "1",
    scraped: dt.date | None = None,
) -> DayRow:
    return DayRow(
        account_id="42",
        listing_id=listing,
        day=day,
        scraped_at=at(scraped or day + dt.timedelta(days=1)),
        own_views=views,
        similar_views=similar_views,
        own_rate=rate,
        similar_rate=similar_rate,
    )


WINDOW_SCRAPED = D(2026, 2, 1)


def window(
    start: dt.date,
    end: dt.date,
    rate: float,
    table: insights.WindowTable = "list_of_metrics",
    scraped: dt.date = WINDOW_SCRAPED,
) -> WindowRow:
    return WindowRow(table, start, end, at(scraped), rate)


# --- periods --------------------------------------------------------------------------------


def test_weeks_are_iso_monday_to_sunday_clipped_to_the_range() -> None:
    # 2026-01-07 is a Wednesday, 2026-01-20 a Tuesday.
    assert insights.periods(D(2026, 1, 7), D(2026, 1, 20), "week") == [
        Period(D(2026, 1, 7), D(2026, 1, 11), whole=False),
        Period(D(2026, 1, 12), D(2026, 1, 18), whole=True),
        Period(D(2026, 1, 19), D(2026, 1, 20), whole=False),
    ]


def test_months_are_calendar_months_clipped_to_the_range() -> None:
    assert insights.periods(D(2028, 1, 15), D(2028, 3, 2), "month") == [
        Period(D(2028, 1, 15), D(2028, 1, 31), whole=False),
        Period(D(2028, 2, 1), D(2028, 2, 29), whole=True),  # a leap year
        Period(D(2028, 3, 1), D(2028, 3, 2), whole=False),
    ]
    assert insights.periods(D(2026, 12, 1), D(2027, 1, 31), "month") == [
        Period(D(2026, 12, 1), D(2026, 12, 31), whole=True),
        Period(D(2027, 1, 1), D(2027, 1, 31), whole=True),
    ]


def test_days_are_whole_periods_of_one_day() -> None:
    assert insights.periods(D(2026, 1, 31), D(2026, 2, 1), "day") == [
        Period(D(2026, 1, 31), D(2026, 1, 31), whole=True),
        Period(D(2026, 2, 1), D(2026, 2, 1), whole=True),
    ]


def test_the_window_of_a_week_is_airbnbs_sunday_to_saturday_one_day_earlier() -> None:
    # Airbnb's window [S, E] holds the chart's dates S+1 .. E+1.
    week = Period(D(2026, 1, 12), D(2026, 1, 18), whole=True)  # Monday..Sunday
    assert insights.window_key(week) == (D(2026, 1, 11), D(2026, 1, 17))  # Sunday..Saturday
    # Only whole periods can be covered by a window.
    assert insights.window_starts(D(2026, 1, 7), D(2026, 1, 20), "week") == [D(2026, 1, 11)]
    assert insights.window_starts(D(2026, 1, 7), D(2026, 1, 20), "day") == []


# --- sums and weights -----------------------------------------------------------------------


def test_view_weighted_mean_is_not_the_plain_mean_and_skips_missing_rates() -> None:
    pairs = [(0.1, 100), (0.2, 300), (0.5, 0), (None, 50), (0.9, None)]
    # (0.1*100 + 0.2*300) / 400; a plain mean of 0.1 and 0.2 would be 0.15.
    assert insights.view_weighted(pairs) == pytest.approx(0.175)


def test_weights_summing_to_zero_give_no_rate() -> None:
    assert insights.view_weighted([(0.3, 0), (0.4, 0)]) is None
    assert insights.view_weighted([]) is None
    assert insights.total([None, None]) is None
    assert insights.total([3, None, 4]) == 7


# --- series ---------------------------------------------------------------------------------

WEEK = [D(2026, 1, 12) + dt.timedelta(days=i) for i in range(7)]  # Monday..Sunday


def test_daily_values_are_each_days_row_and_days_without_rows_are_left_out() -> None:
    rows = [row(D(2026, 1, 12), 10, 0.1), row(D(2026, 1, 14), None, 0.3)]
    points = insights.series(
        rows, [], "p3_impressions", "day", D(2026, 1, 12), D(2026, 1, 14), one_listing=True
    )
    assert [(p.period_start, p.own, p.own_source, p.days) for p in points] == [
        (D(2026, 1, 12), 10, "daily", 1),
        (D(2026, 1, 14), None, "daily", 1),
    ]
    assert points[0].scraped_at == at(D(2026, 1, 13))


def test_counts_are_summed_over_a_week_on_both_sides() -> None:
    rows = [row(d, 10 + i, 0.1, similar_views=100) for i, d in enumerate(WEEK[:5])]
    (point,) = insights.series(
        rows, [], "p3_impressions", "week", WEEK[0], WEEK[-1], one_listing=True
    )
    assert (point.own, point.similar, point.days) == (10 + 11 + 12 + 13 + 14, 500, 5)
    assert point.own_source == point.similar_source == "sum_of_days"
    assert (point.period_start, point.period_end) == (WEEK[0], WEEK[-1])


def rate_week_rows() -> list[DayRow]:
    # own: 0.1 on 100 views, 0.4 on 50 views -> (10 + 20) / 150 = 0.2
    # similar: 0.05 on 200 views, 0.2 on 600 views -> (10 + 120) / 800 = 0.1625
    return [
        row(WEEK[0], 100, 0.1, similar_views=200, similar_rate=0.05),
        row(WEEK[3], 50, 0.4, similar_views=600, similar_rate=0.2),
    ]


def test_a_weekly_rate_is_airbnbs_window_figure_with_the_one_day_offset() -> None:
    lom = window(D(2026, 1, 11), D(2026, 1, 17), 0.25, scraped=D(2026, 2, 3))
    (point,) = insights.series(
        rate_week_rows(), [lom], "conversion_rate", "week", WEEK[0], WEEK[-1], one_listing=True
    )
    assert (point.own, point.own_source) == (0.25, "airbnb_window")
    # The similar side has no window of its own: always weighted by the similar views.
    assert point.similar == pytest.approx(0.1625)
    assert point.similar_source == "view_weighted"
    # The window row is one of the rows used.
    assert point.scraped_at == at(D(2026, 2, 3))


@pytest.mark.parametrize(
    "start, end",
    [
        (D(2026, 1, 12), D(2026, 1, 18)),  # the chart's own dates: no offset applied
        (D(2026, 1, 11), D(2026, 1, 18)),  # a window of another length
        (D(2026, 1, 10), D(2026, 1, 16)),  # two days off
    ],
)
def test_a_window_that_is_not_exactly_the_period_is_not_used(start: D, end: D) -> None:
    (point,) = insights.series(
        rate_week_rows(),
        [window(start, end, 0.25)],
        "conversion_rate",
        "week",
        WEEK[0],
        WEEK[-1],
        one_listing=True,
    )
    assert point.own == pytest.approx(0.2)
    assert point.own_source == "view_weighted"


def test_a_clipped_week_is_view_weighted_even_with_its_window_scraped() -> None:
    lom = window(D(2026, 1, 11), D(2026, 1, 17), 0.25)
    (point,) = insights.series(
        rate_week_rows(), [lom], "conversion_rate", "week", WEEK[0], WEEK[5], one_listing=True
    )
    assert (point.period_end, point.own_source) == (WEEK[5], "view_weighted")
    assert point.own == pytest.approx(0.2)


def test_list_of_metrics_is_preferred_and_chart_summary_covers_what_it_does_not() -> None:
    lom = window(D(2026, 1, 11), D(2026, 1, 17), 0.25)
    summary = window(D(2026, 1, 11), D(2026, 1, 17), 0.3, table="chart_summary")
    (point,) = insights.series(
        rate_week_rows(),
        [summary, lom],
        "conversion_rate",
        "week",
        WEEK[0],
        WEEK[-1],
        one_listing=True,
    )
    assert point.own == 0.25
    # February 2026 has 28 days: a 28-day chart_summary slice can cover the month exactly.
    feb = [row(D(2026, 2, 1), 10, 0.1), row(D(2026, 2, 28), 10, 0.3)]
    month = window(D(2026, 1, 31), D(2026, 2, 27), 0.123, table="chart_summary")
    (point,) = insights.series(
        feb, [month], "conversion_rate", "month", D(2026, 2, 1), D(2026, 2, 28), one_listing=True
    )
    assert (point.own, point.own_source) == (0.123, "airbnb_window")


def test_all_listings_are_combined_per_day_and_never_use_windows() -> None:
    lom = window(D(2026, 1, 11), D(2026, 1, 17), 0.25)
    rows = [
        row(WEEK[0], 100, 0.1, listing="1"),
        row(WEEK[0], 300, 0.3, listing="2"),
        row(WEEK[1], 0, 0.9, listing="2"),  # no views: no weight
    ]
    (point,) = insights.series(
        rows, [lom], "conversion_rate", "week", WEEK[0], WEEK[-1], one_listing=False
    )
    # (0.1*100 + 0.3*300) / 400 = 0.25 by the weights, not Airbnb's window.
    assert (point.own, point.own_source, point.days) == (pytest.approx(0.25), "view_weighted", 2)
    days = insights.series(rows, [], "conversion_rate", "day", WEEK[0], WEEK[1], one_listing=False)
    assert [(p.own, p.own_source) for p in days] == [
        (pytest.approx(0.25), "daily"),
        (None, "daily"),  # the day's views sum to zero
    ]
    counts = insights.series(rows, [], "p3_impressions", "day", WEEK[0], WEEK[0], one_listing=False)
    assert counts[0].own == 400


def test_a_rate_whose_weights_sum_to_zero_is_null() -> None:
    rows = [row(WEEK[0], 0, 0.5), row(WEEK[1], None, 0.5)]
    (point,) = insights.series(
        rows, [], "conversion_rate", "week", WEEK[0], WEEK[-1], one_listing=True
    )
    assert (point.own, point.similar, point.own_source, point.days) == (
        None,
        None,
        "view_weighted",
        2,
    )


def test_the_rule_is_said_in_each_answer() -> None:
    assert "Airbnb" in insights.aggregation_rule("conversion_rate", "week", True)
    assert "Airbnb" not in insights.aggregation_rule("conversion_rate", "week", False)
    assert "ISO week (Monday..Sunday)" in insights.aggregation_rule("conversion_rate", "week", True)
    assert "summed" in insights.aggregation_rule("p3_impressions", "month", False)


# --- forward --------------------------------------------------------------------------------


def test_forward_changes_are_from_the_scrape_before_oldest_first() -> None:
    stay = D(2026, 3, 20)
    rows = [
        row(stay, 9, 0.2, similar_views=30, scraped=D(2026, 3, 12)),
        row(stay, 5, 0.1, similar_views=10, scraped=D(2026, 3, 10)),
        row(stay, None, 0.3, similar_views=31, scraped=D(2026, 3, 13)),
        row(D(2026, 3, 18), 1, 0.0, scraped=D(2026, 3, 19)),
    ]
    out = insights.forward(rows, "p3_impressions")
    assert [s.stay_date for s in out] == [D(2026, 3, 18), stay]
    assert [(s.lead_days, s.own, s.own_change, s.similar_change) for s in out[1].scrapes] == [
        (10, 5, None, None),
        (8, 9, 4, 20),
        (7, None, None, 1),
    ]
    assert out[0].scrapes[0].lead_days == -1  # scraped after the stay date
    rates = insights.forward(rows, "conversion_rate")[1].scrapes
    assert [r.own_change for r in rates] == [None, pytest.approx(0.1), pytest.approx(0.1)]


# --- portfolio ------------------------------------------------------------------------------

END = D(2026, 3, 29)
LISTING = ListingInfo("42", "cust", "1", "internal", "Listing")


def days_ago(n: int) -> dt.date:
    return END - dt.timedelta(days=n)


def test_portfolio_periods_end_on_end() -> None:
    assert insights.portfolio_periods(END) == {
        "last_7": (D(2026, 3, 23), END),
        "prior_7": (D(2026, 3, 16), D(2026, 3, 22)),
        "last_28": (D(2026, 3, 2), END),
        "prior_28": (D(2026, 2, 2), D(2026, 3, 1)),
    }
    assert insights.portfolio_start(END) == D(2026, 2, 2)


def portfolio_rows(last_views: int) -> list[DayRow]:
    return [
        row(days_ago(7), 100, 0.1, similar_views=10, similar_rate=0.2),  # prior_7
        row(days_ago(0), last_views, 0.1, similar_views=10, similar_rate=0.2),  # last_7
        row(days_ago(40), 200, 0.1, similar_views=10, similar_rate=0.2),  # prior_28
    ]


def test_a_fall_of_exactly_the_threshold_is_not_flagged() -> None:
    out = insights.portfolio_listing(LISTING, portfolio_rows(80), END, 0.2)
    own = out.page_views.own
    assert (own.last_7, own.prior_7, own.last_28, own.prior_28) == (80, 100, 180, 200)
    assert own.change_7 == pytest.approx(-0.2)
    assert own.change_28 == pytest.approx(-0.1)
    assert out.flags == []
    assert out.conversion_rate.own.change_7 == 0.0


def test_a_fall_of_more_than_the_threshold_is_flagged() -> None:
    assert insights.portfolio_listing(LISTING, portfolio_rows(79), END, 0.2).flags == [
        "page_views_7d"
    ]
    assert insights.portfolio_listing(LISTING, portfolio_rows(80), END, 0.05).flags == [
        "page_views_7d",
        "page_views_28d",
    ]


def test_conversion_flags_use_view_weighted_rates() -> None:
    rows = [
        row(days_ago(8), 100, 0.1),
        row(days_ago(9), 300, 0.3),  # prior_7: (10 + 90) / 400 = 0.25
        row(days_ago(1), 100, 0.3),
        row(days_ago(2), 100, 0.1),  # last_7: 0.2, a fall of 20 %: not more than 0.2
    ]
    out = insights.portfolio_listing(LISTING, rows, END, 0.2)
    assert out.conversion_rate.own.prior_7 == pytest.approx(0.25)
    assert out.conversion_rate.own.change_7 == pytest.approx(-0.2)
    assert "conversion_rate_7d" not in out.flags
    assert "conversion_rate_7d" in insights.portfolio_listing(LISTING, rows, END, 0.19).flags


def test_no_prior_or_a_zero_prior_has_no_change_and_no_flag() -> None:
    rows = [row(days_ago(0), 50, 0.1), row(days_ago(7), 0, 0.1)]
    out = insights.portfolio_listing(LISTING, rows, END, 0.2)
    assert (out.page_views.own.prior_7, out.page_views.own.change_7) == (0, None)
    assert (out.page_views.own.prior_28, out.page_views.own.change_28) == (None, None)
    # prior_7's only day has no views: no rate.
    assert out.conversion_rate.own.prior_7 is None
    assert out.flags == []


def test_the_trend_is_28_days_of_own_views_oldest_first() -> None:
    out = insights.portfolio_listing(LISTING, portfolio_rows(80), END, 0.2)
    assert out.trend.start == D(2026, 3, 2)
    assert len(out.trend.page_views) == 28
    assert out.trend.page_views[-1] == 80
    assert out.trend.page_views[-8] == 100
    assert out.trend.page_views.count(None) == 26
    assert (out.account_id, out.customer_id, out.airbnb_listing_id) == ("42", "cust", "1")


def test_a_listing_without_rows_has_nulls_and_no_flags() -> None:
    out = insights.portfolio_listing(LISTING, [], END, 0.2)
    assert out.page_views.own.last_7 is None and out.flags == []
    assert out.trend.page_views == [None] * 28


# --- query models ---------------------------------------------------------------------------


def fields_of(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(map(str, e["loc"])) for e in exc.value.errors()}


def test_insights_query_names_the_bad_fields() -> None:
    good = {"metric": "conversion_rate", "from": "2026-01-01", "to": "2026-01-31"}
    q = InsightsQuery.model_validate(good)
    assert (q.from_, q.granularity, q.listing_id, q.as_of) == (D(2026, 1, 1), "day", None, None)
    with pytest.raises(ValidationError) as exc:
        InsightsQuery.model_validate({**good, "metric": "bookings", "granularity": "year"})
    assert fields_of(exc) == {"metric", "granularity"}
    with pytest.raises(ValidationError) as exc:
        InsightsQuery.model_validate({**good, "to": "2025-12-31"})
    assert fields_of(exc) == {"to"}
    # 1,096 days are allowed, 1,097 are not.
    InsightsQuery.model_validate({**good, "to": "2028-12-31"})  # 2026-01-01 + 1095 days
    with pytest.raises(ValidationError) as exc:
        InsightsQuery.model_validate({**good, "to": "2029-01-01"})
    assert fields_of(exc) == {"to"}
    assert exc.value.errors()[0]["type"] == "range_too_long"
    with pytest.raises(ValidationError) as exc:
        InsightsQuery.model_validate({k: v for k, v in good.items() if k != "from"})
    assert fields_of(exc) == {"from"}


def test_forward_and_portfolio_queries_name_the_bad_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        ForwardQuery.model_validate(
            {"listing_id": "1", "stay_from": "2026-01-01", "stay_to": "2027-01-02"}
        )
    assert fields_of(exc) == {"stay_to"}
    assert (
        ForwardQuery.model_validate(
            {"listing_id": "1", "stay_from": "2026-01-01", "stay_to": "2027-01-01"}
        ).metric
        == "p3_impressions"
    )
    assert PortfolioQuery.model_validate({"drop_threshold": "1"}).drop_threshold == 1.0
    for bad in ("0", "1.01", "-0.1", "x"):
        with pytest.raises(ValidationError) as exc:
            PortfolioQuery.model_validate({"drop_threshold": bad})
        assert fields_of(exc) == {"drop_threshold"}


def test_query_dates_are_iso_dates_never_a_number() -> None:
    # pydantic alone reads "0" or "86400" as a Unix timestamp (1970-01-01, 1970-01-02):
    # schemathesis found GET /portfolio?as_of=0.0 answered 200.
    for bad in ("0", "0.0", "86400", "+0", "2025-01-01T00:00:00Z"):
        with pytest.raises(ValidationError) as exc:
            PortfolioQuery.model_validate({"as_of": bad, "end": bad})
        assert fields_of(exc) == {"as_of", "end"}
        with pytest.raises(ValidationError) as exc:
            InsightsQuery.model_validate({"metric": "p3_impressions", "from": bad, "to": bad})
        assert fields_of(exc) == {"from", "to"}
        with pytest.raises(ValidationError) as exc:
            ExportQuery.model_validate({"start_date": bad, "end_date": bad})
        assert fields_of(exc) == {"start_date", "end_date"}
    assert PortfolioQuery.model_validate({"as_of": "1970-01-01"}).as_of == D(1970, 1, 1)
    assert ExportQuery.model_validate(
        {"start_date": "2025-01-01", "end_date": "2025-01-02"}
    ).end_date == D(2025, 1, 2)


def test_a_listings_daily_rate_is_its_own_figure_even_without_page_views() -> None:
    # 0 bookings over some first-page impressions and no page views: Airbnb's 0.0 is a value.
    rows = [row(WEEK[0], 0, 0.0, similar_views=0, similar_rate=0.0)]
    (point,) = insights.series(
        rows, [], "conversion_rate", "day", WEEK[0], WEEK[0], one_listing=True
    )
    assert (point.own, point.similar, point.own_source) == (0.0, 0.0, "daily")
