"""The simulated Airbnb's ground truth: accounts, listings and what happened on each day.

Everything here is a pure function of the seed (and of a listing id and a day), so
a test can compute the exact numbers a response must carry without asking the
simulator, and two simulators started with the same seed agree to the last digit.
Randomness comes from ``random.Random`` instances seeded with strings, which
CPython hashes with SHA-512: stable across processes and ``PYTHONHASHSEED``.

The model keeps four daily counts per side ("your" listing and the average of
"similar listings") and derives every rate from them, the way Airbnb's own
numbers relate (checked on the captures: 9 bookings, 460 page views and 8166
first-page impressions give exactly the four rates Airbnb returned):

=================================  ==========================================
``p3_impressions``                 page views
``p2_impressions``                 first-page search impressions
``conversion_rate``                bookings / p2_impressions
``search_conversion_rate``         p3_impressions / p2_impressions
``listing_conversion_rate``        bookings / p3_impressions
``p2_impressions_first_page_rate`` p2_impressions / all search impressions
=================================  ==========================================

A rate whose denominator is zero has no value: Airbnb sends ``doubleValue`` 0.0
with ``valueString`` "-" then, and so does the simulator.

Airbnb's day numbering is one day off the requested window: a request for
[start, end] (from ``relativeDs* - 3 + today``) is answered with points dated
start+1 .. end+1, all of them, future ones included (a real scrape on
2025-07-11 got full 28-point charts up to 2026-01-07, some points non-zero).
:func:`airbnb_days` is that rule; totals of a response are sums over exactly
those days.

**The future, built up.** Points are dated by stay date, so a day after today
has views from guests searching for it already, and more the nearer it gets.
:func:`observed_metrics` is what a scrape on ``today`` sees for day ``d``: for
``d <= today`` the day's final truth (:func:`daily_metrics`, independent of
today); for a later day each of the four counts of both sides multiplied by
:func:`build_up` of the lead ``(d - today).days`` and floored, the rates then
derived from those counts as always. ``build_up(lead) = exp(-lead / 90)``:
1 at lead 0, 72 % a month ahead, 14 % six months ahead (so that, as in the
real scrape, some points half a year out are non-zero). It decreases with
the lead and flooring keeps order, so a future date's counts never decrease
from one scrape day to the next as it nears, and they reach the final truth
on the day itself; ``bookings <= p3 <= p2 <= search`` holds after scaling as
before.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from urllib.parse import quote

import orjson

from services.simulator import sessions
from shared.airbnb.cookies import parse_cookie_header, user_id

COUNT_METRICS: tuple[str, ...] = ("p3_impressions", "p2_impressions")
RATE_METRICS: tuple[str, ...] = (
    "conversion_rate",
    "p2_impressions_first_page_rate",
    "search_conversion_rate",
    "listing_conversion_rate",
)
ALL_METRICS: tuple[str, ...] = COUNT_METRICS + RATE_METRICS

# Verified on the captures: relativeDs -178 on 2025-07-11 is 2025-01-11.
RELATIVE_DS_OFFSET = 3

SESSION_COOKIE = "_aat"

# Monday..Sunday: guests browse most on Friday and Saturday.
_DAY_OF_WEEK_FACTOR = (0.85, 0.8, 0.85, 0.95, 1.2, 1.3, 1.05)
# A fixed origin for "listed since", so that the truth never depends on today.
_LISTING_EPOCH = date(2023, 1, 1)

_STREETS = (
    "N Wilbur",
    "S Wilbur",
    "Schuyler Street",
    "Avery Ave",
    "Tompkins St",
    "Marcellus St",
    "Onondaga Blvd",
    "Geddes St",
)
_ADJECTIVES = ("Sunny", "Cozy", "Sleek", "Spacious", "Charming", "Quiet", "Bright", "Modern")
_PLACES = ("Loft", "Flat", "Retreat", "Cottage", "Studio", "Townhouse", "Hideaway", "Suite")
_PERKS = (
    "Walk to Zoo",
    "Free Parking",
    "Near Downtown",
    "Game Room",
    "Fast Wi-Fi",
    "Pet Friendly",
    "Sleeps 8",
    "King Bed",
)


@dataclass(frozen=True, slots=True)
class Listing:
    listing_id: str
    internal_name: str
    listing_name: str


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    session_token: str
    listings: tuple[Listing, ...]
    # The world's seed: the key of every token the simulator signs for this account.
    seed: int = 0

    @property
    def user_attributes(self) -> str:
        """The ``_user_attributes`` cookie value: URL-encoded JSON, as Airbnb sets it."""
        attrs = {"curr": "USD", "guest_exchange": 1.0, "id_str": self.account_id}
        return quote(orjson.dumps(attrs).decode(), safe="")

    def browser_cookies(self, today: date, generation: int = 0, counter: int = 0) -> dict[str, str]:
        """Every cookie (auth, bot manager, analytics) of a browser logged in as this host.

        ``generation`` is the login (a new login, a new ``_airbed_session_id``);
        ``_aaj`` and ``bm_sv`` are signed as issued on ``today``.
        """
        return sessions.browser_cookies(
            sessions.session_key(self.seed),
            self.account_id,
            self.session_token,
            self.user_attributes,
            generation,
            today,
            counter,
        )

    def cookie_on(self, today: date, generation: int = 0) -> str:
        """The ``Cookie`` header of that browser on ``today``: what ``/_sim/accounts`` gives."""
        return sessions.format_cookie_header(self.browser_cookies(today, generation))

    @property
    def cookie(self) -> str:
        """The first login's browser cookie, its tokens issued on a fixed day (2023-01-01).

        Enough where the session lifecycle is off; with it on, the tokens are long
        stale, and a live cookie is :meth:`cookie_on` the simulator's today (which
        ``GET /_sim/accounts`` returns, for the current login).
        """
        return self.cookie_on(_LISTING_EPOCH)

    @property
    def listing_ids(self) -> tuple[str, ...]:
        return tuple(listing.listing_id for listing in self.listings)


@dataclass(frozen=True, slots=True)
class World:
    seed: int
    accounts: tuple[Account, ...]
    _by_account_id: Mapping[str, Account] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_account_id", {a.account_id: a for a in self.accounts})

    def account(self, account_id: str) -> Account | None:
        return self._by_account_id.get(account_id)

    def account_for_cookie(self, cookie_header: str | None) -> Account | None:
        """The account whose session this Cookie header carries, or None (an unknown session)."""
        return self.account_for_cookies(parse_cookie_header(cookie_header or ""))

    def account_for_cookies(self, cookies: Mapping[str, str]) -> Account | None:
        """The account named by ``_user_attributes`` whose ``_aat`` matches, or None."""
        owner = user_id(cookies)
        account = self._by_account_id.get(owner) if owner is not None else None
        if account is None or cookies.get(SESSION_COOKIE) != account.session_token:
            return None
        return account


def build_world(n_accounts: int, n_listings: int, seed: int) -> World:
    """``n_accounts`` accounts with ``n_listings`` listings each, all ids unique."""
    rng = random.Random(f"sync-airbnb-sim:{seed}:world")
    account_ids: set[str] = set()
    listing_ids: set[str] = set()
    accounts: list[Account] = []
    for _ in range(n_accounts):
        account_id = _unique(lambda: str(rng.randrange(10**8, 10**9)), account_ids)
        token = f"{rng.getrandbits(128):032x}{rng.getrandbits(64):016x}"
        listings = tuple(
            _new_listing(rng, _unique(lambda: str(rng.randrange(10**17, 10**19)), listing_ids))
            for _ in range(n_listings)
        )
        accounts.append(Account(account_id, token, listings, seed))
    return World(seed, tuple(accounts))


def _unique(draw: Callable[[], str], seen: set[str]) -> str:
    while True:
        value = draw()
        if value not in seen:
            seen.add(value)
            return value


def _new_listing(rng: random.Random, listing_id: str) -> Listing:
    internal = f"{rng.randrange(100, 999)} {rng.choice(_STREETS)}"
    if rng.random() < 0.3:
        internal += f" Apt {rng.randrange(1, 4)}"
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_PLACES)} | {rng.choice(_PERKS)}"
    return Listing(listing_id, internal, name)


@dataclass(frozen=True, slots=True)
class Counts:
    """One side's counts over one day or a sum of days."""

    p3_impressions: int = 0
    p2_impressions: int = 0
    search_impressions: int = 0
    bookings: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.p3_impressions + other.p3_impressions,
            self.p2_impressions + other.p2_impressions,
            self.search_impressions + other.search_impressions,
            self.bookings + other.bookings,
        )

    def _ratio(self, metric: str) -> tuple[int, int]:
        match metric:
            case "conversion_rate":
                return self.bookings, self.p2_impressions
            case "search_conversion_rate":
                return self.p3_impressions, self.p2_impressions
            case "listing_conversion_rate":
                return self.bookings, self.p3_impressions
            case "p2_impressions_first_page_rate":
                return self.p2_impressions, self.search_impressions
        raise KeyError(metric)

    def has_value(self, metric: str) -> bool:
        """False for a rate whose denominator is zero (Airbnb shows "-")."""
        return metric in COUNT_METRICS or self._ratio(metric)[1] > 0

    def value(self, metric: str) -> int | float:
        """A count (int) or a rate (float, 0.0 when it has no value)."""
        if metric == "p3_impressions":
            return self.p3_impressions
        if metric == "p2_impressions":
            return self.p2_impressions
        num, den = self._ratio(metric)
        return num / den if den else 0.0


def sum_counts(counts: Iterable[Counts]) -> Counts:
    total = Counts()
    for c in counts:
        total = total + c
    return total


@dataclass(frozen=True, slots=True)
class DailyTruth:
    day: date
    your: Counts
    similar: Counts


@dataclass(frozen=True, slots=True)
class _Profile:
    """What makes one listing (and its market) different from another; fixed per seed."""

    listed_since: date
    base_p2: float
    first_page_rate: float
    click_rate: float
    booking_rate: float
    market_scale: float
    market_click_rate: float
    market_booking_rate: float
    market_first_page_rate: float
    closed_day_rate: float


@functools.lru_cache(maxsize=4096)
def _profile(seed: int, listing_id: str) -> _Profile:
    rng = random.Random(f"sync-airbnb-sim:{seed}:{listing_id}:profile")
    # One listing in five is young, so backfills meet days with no data at all.
    young = rng.random() < 0.2
    listed_since = _LISTING_EPOCH + timedelta(days=rng.randrange(400, 900) if young else 0)
    return _Profile(
        listed_since=listed_since,
        base_p2=rng.uniform(60, 500),
        first_page_rate=rng.uniform(0.5, 0.9),
        click_rate=rng.uniform(0.02, 0.09),
        booking_rate=rng.uniform(0.005, 0.05),
        market_scale=rng.uniform(0.5, 1.5),
        market_click_rate=rng.uniform(0.02, 0.06),
        market_booking_rate=rng.uniform(0.01, 0.04),
        market_first_page_rate=rng.uniform(0.5, 0.8),
        closed_day_rate=rng.choice((0.0, 0.0, 0.03, 0.1)),
    )


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 50:
        return sum(rng.random() < p for _ in range(n))
    # Normal approximation keeps long windows cheap; clamped to the support.
    mean = n * p
    return max(0, min(n, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))


def _side(
    rng: random.Random, p2_mean: float, first_page: float, click: float, book: float
) -> Counts:
    p2 = max(0, round(p2_mean * rng.lognormvariate(0, 0.15)))
    search = p2 + _binomial(rng, round(p2 * (1 - first_page) / first_page), 0.98)
    p3 = _binomial(rng, p2, click)
    bookings = _binomial(rng, p3, book)
    return Counts(p3, p2, search, bookings)


def daily_metrics(seed: int, listing_id: str, day: date) -> DailyTruth:
    """What happened on Airbnb day ``day`` to listing ``listing_id`` and its market.

    Independent of "today": a day's numbers never change once generated, so a
    re-sync reads the same values as the first one.
    """
    profile = _profile(seed, listing_id)
    rng = random.Random(f"sync-airbnb-sim:{seed}:{listing_id}:{day.isoformat()}")
    season = 1 + 0.3 * math.sin(2 * math.pi * (day.timetuple().tm_yday - 100) / 365.25)
    demand = season * _DAY_OF_WEEK_FACTOR[day.weekday()]
    # The market side is drawn first and always, so that it does not depend on
    # whether the listing itself was open that day.
    similar = _side(
        rng,
        profile.base_p2 * profile.market_scale * demand,
        profile.market_first_page_rate,
        profile.market_click_rate,
        profile.market_booking_rate,
    )
    closed = day < profile.listed_since or rng.random() < profile.closed_day_rate
    your = (
        Counts()
        if closed
        else _side(
            rng,
            profile.base_p2 * demand,
            profile.first_page_rate,
            profile.click_rate,
            profile.booking_rate,
        )
    )
    return DailyTruth(day, your, similar)


def requested_window(
    relative_ds_start: int, relative_ds_end: int, today: date
) -> tuple[date, date]:
    """The window [start, end] a request means: ``relativeDs = (day - today).days + 3``."""
    start = today + timedelta(days=relative_ds_start - RELATIVE_DS_OFFSET)
    end = today + timedelta(days=relative_ds_end - RELATIVE_DS_OFFSET)
    return start, end


def airbnb_days(start: date, end: date, today: date) -> list[date]:
    """The ``ds`` of the points Airbnb returns for [start, end]: every day, shifted a day.

    ``today`` no longer bounds them (future days are answered, see
    :func:`observed_metrics`); it stays a parameter so callers read the same.
    """
    first = start + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((end - start).days + 1)]


# The e-folding lead of the build-up: plausible for stays booked weeks to months ahead.
BUILD_UP_DAYS = 90.0


def build_up(lead: int) -> float:
    """The share of a day's final counts already seen ``lead`` days before it (1 from lead 0)."""
    return 1.0 if lead <= 0 else math.exp(-lead / BUILD_UP_DAYS)


def built_up(counts: Counts, fraction: float) -> Counts:
    """``counts`` scaled by ``fraction`` and floored, each count on its own."""
    if fraction >= 1.0:
        return counts
    return Counts(
        math.floor(counts.p3_impressions * fraction),
        math.floor(counts.p2_impressions * fraction),
        math.floor(counts.search_impressions * fraction),
        math.floor(counts.bookings * fraction),
    )


def observed_metrics(seed: int, listing_id: str, day: date, today: date) -> DailyTruth:
    """What a scrape on ``today`` sees for day ``day``: the truth, built up if ``day`` is ahead."""
    truth = daily_metrics(seed, listing_id, day)
    fraction = build_up((day - today).days)
    if fraction >= 1.0:
        return truth
    return DailyTruth(day, built_up(truth.your, fraction), built_up(truth.similar, fraction))


def window_truth(
    seed: int, listing_ids: Sequence[str], start: date, end: date, today: date
) -> list[DailyTruth]:
    """Per returned day, the counts of ``listing_ids`` together, as seen on ``today``."""
    days = airbnb_days(start, end, today)
    out: list[DailyTruth] = []
    for day in days:
        truths = [observed_metrics(seed, lid, day, today) for lid in listing_ids]
        out.append(
            DailyTruth(
                day, sum_counts(t.your for t in truths), sum_counts(t.similar for t in truths)
            )
        )
    return out


def window_totals(
    seed: int, listing_ids: Sequence[str], start: date, end: date, today: date
) -> tuple[Counts, Counts]:
    """(your, similar) counts summed over the days a response for [start, end] carries."""
    days = window_truth(seed, listing_ids, start, end, today)
    return sum_counts(d.your for d in days), sum_counts(d.similar for d in days)


@dataclass(frozen=True, slots=True)
class ExpectedPoint:
    ds: date
    your: int | float
    similar: int | float
    your_has_value: bool
    similar_has_value: bool


def expected_chart_points(
    seed: int, listing_id: str, metric: str, start: date, end: date, today: date
) -> list[ExpectedPoint]:
    """The points of a ChartQuery for ``metric`` over requested window [start, end]."""
    return [
        ExpectedPoint(
            d.day,
            d.your.value(metric),
            d.similar.value(metric),
            d.your.has_value(metric),
            d.similar.has_value(metric),
        )
        for d in window_truth(seed, [listing_id], start, end, today)
    ]


def expected_metric_values(
    seed: int, listing_id: str, metrics: Iterable[str], start: date, end: date, today: date
) -> dict[str, int | float]:
    """Window totals per metric (counts summed, rates as ratios of the summed counts)."""
    your, _ = window_totals(seed, [listing_id], start, end, today)
    return {m: your.value(m) for m in metrics}


def expected_value_change(
    seed: int, listing_id: str, metric: str, start: date, end: date, today: date
) -> float:
    """A chart's primary ``valueChange`` in a MARKET comparison: yours minus similar."""
    your, similar = window_totals(seed, [listing_id], start, end, today)
    return float(your.value(metric)) - float(similar.value(metric))


@dataclass(frozen=True, slots=True)
class Occupancy:
    """The ListingsSectionQuery figure: this month's occupancy and its change on last month."""

    rate: float
    change: float | None


def listing_occupancy(seed: int, listing_id: str, today: date) -> Occupancy | None:
    """None for a listing with no stays yet (Airbnb shows "-" and no change)."""
    if _profile(seed, listing_id).listed_since > today - timedelta(days=30):
        return None
    rng = random.Random(f"sync-airbnb-sim:{seed}:{listing_id}:occupancy:{today:%Y-%m}")
    nights = 30
    rate = rng.randrange(0, nights + 1) / nights
    previous = rng.randrange(0, nights + 1) / nights
    return Occupancy(rate, rate - previous)
