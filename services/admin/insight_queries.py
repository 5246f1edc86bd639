"""The read API: an account's listings, insights, forward demand, and the portfolio.

Thin orchestration, like accounts.py: each answer is one read-only repeatable-read
transaction (so its queries see one snapshot: a sync committing in between cannot make
the account check, the rows and the windows disagree), reading through
services/admin/store.py (all the SQL) and computing with services/admin/insights.py
(the arithmetic, pure). docs/insights.md says what the figures mean.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable

import asyncpg

from services.admin import insights, store
from services.admin.errors import not_found
from services.admin.models import (
    ForwardOut,
    ForwardQuery,
    InsightsOut,
    InsightsQuery,
    ListingOut,
    ListingsOut,
    PortfolioOut,
    PortfolioQuery,
)
from shared.db import Conn


class InsightQueries:
    def __init__(self, pool: asyncpg.Pool, today: Callable[[], dt.date]) -> None:
        self._pool = pool
        # The admin's today (SYNC_AIRBNB_TODAY when pinned), read per request.
        self._today = today

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Conn]:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn

    # ``scope_customer``: the one customer a customer key sees (Caller.customer_filter);
    # another customer's account is not found, by the store's SQL.

    async def _check(
        self, conn: Conn, account_id: str, listing_id: str | None, scope_customer: str | None
    ) -> None:
        if not await store.account_exists(conn, account_id, scope_customer):
            raise not_found("account", account_id)
        if listing_id is not None and not await store.listing_exists(conn, account_id, listing_id):
            raise not_found("listing", listing_id)

    async def listings(self, account_id: str, scope_customer: str | None = None) -> ListingsOut:
        async with self._snapshot() as conn:
            await self._check(conn, account_id, None, scope_customer)
            rows = await store.account_listings(conn, account_id)
        return ListingsOut(
            account_id=account_id,
            items=[
                ListingOut(
                    airbnb_listing_id=r["airbnb_listing_id"],
                    airbnb_internal_name=r["airbnb_internal_name"],
                    listing_name=r["listing_name"],
                    last_synced_at=r["last_synced_at"],
                    last_job_status=r["last_job_status"],
                    last_job_id=r["last_job_id"],
                )
                for r in rows
            ],
        )

    async def series(
        self, account_id: str, q: InsightsQuery, scope_customer: str | None = None
    ) -> InsightsOut:
        one_listing = q.listing_id is not None
        async with self._snapshot() as conn:
            await self._check(conn, account_id, q.listing_id, scope_customer)
            rows = await store.latest_days(conn, account_id, q.from_, q.to, q.listing_id, q.as_of)
            windows: list[insights.WindowRow] = []
            if q.listing_id is not None and insights.METRIC_KINDS[q.metric] == "rate":
                starts = insights.window_starts(q.from_, q.to, q.granularity)
                windows = await store.latest_windows(
                    conn, account_id, q.listing_id, starts, q.as_of
                )
        points = insights.series(
            rows, windows, q.metric, q.granularity, q.from_, q.to, one_listing=one_listing
        )
        # By the wire names: "from" is a Python keyword, from_ the field that holds it.
        return InsightsOut.model_validate(
            {
                "account_id": account_id,
                "listing_id": q.listing_id,
                "metric": q.metric,
                "kind": insights.METRIC_KINDS[q.metric],
                "granularity": q.granularity,
                "from": q.from_,
                "to": q.to,
                "as_of": q.as_of,
                "aggregation": insights.aggregation_rule(q.metric, q.granularity, one_listing),
                "points": points,
            }
        )

    async def forward(
        self, account_id: str, q: ForwardQuery, scope_customer: str | None = None
    ) -> ForwardOut:
        async with self._snapshot() as conn:
            await self._check(conn, account_id, q.listing_id, scope_customer)
            rows = await store.every_scrape(conn, account_id, q.listing_id, q.stay_from, q.stay_to)
        return ForwardOut(
            account_id=account_id,
            listing_id=q.listing_id,
            metric=q.metric,
            kind=insights.METRIC_KINDS[q.metric],
            stay_dates=insights.forward(rows, q.metric),
        )

    async def portfolio(self, q: PortfolioQuery, scope_customer: str | None = None) -> PortfolioOut:
        """A customer key's portfolio is its customer's listings only: with another
        customer_id asked for, an empty list (as the account list answers)."""
        end = q.end if q.end is not None else self._today() - insights.DAY
        async with self._snapshot() as conn:
            listings = await store.portfolio_listings(conn, q.customer_id, scope_customer)
            rows = await store.portfolio_days(
                conn, q.customer_id, insights.portfolio_start(end), end, q.as_of, scope_customer
            )
        by_listing: dict[tuple[str, str], list[insights.DayRow]] = {}
        for r in rows:
            by_listing.setdefault((r.account_id, r.listing_id), []).append(r)
        return PortfolioOut(
            customer_id=q.customer_id,
            end=end,
            as_of=q.as_of,
            drop_threshold=q.drop_threshold,
            listings=[
                insights.portfolio_listing(
                    listing,
                    by_listing.get((listing.account_id, listing.listing_id), []),
                    end,
                    q.drop_threshold,
                )
                for listing in listings
            ],
        )
