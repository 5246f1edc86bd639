"""The account events relay: committed outbox rows to ``airbnb.accounts.{event}``.

An account change and its AccountEvent are one transaction (``store.enqueue_event``):
"committed" and "announced" are the same thing, so the scheduler never handles an
event for a change it cannot see yet, and a change rolled back is never announced.
This relay runs in every admin process; one at a time holds the relay's turn (an
advisory lock for the length of one pass), so each account's events go out in the order
of its changes (two changes of one account are serialised by its row lock, so the
later one also has the higher outbox id).

A pass takes the turn, publishes the oldest unpublished rows one by one, each waiting
for JetStream's ack, with the row's ``event_id`` as ``Nats-Msg-Id``, marks them
published and commits. A crash (kill -9) or a NATS failure before the commit leaves the rows
unpublished: the next pass publishes them again and the stream's duplicate window
drops what it already has. Passes start when a commit notifies (``OUTBOX_CHANNEL``),
and every ``ADMIN_OUTBOX_POLL_S`` in any case, so a lost notification only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import asyncpg
from nats.js import JetStreamContext

from services.admin import store
from shared import topology
from shared.backoff import RetryStopped, retry_until
from shared.metrics import ACCOUNT_EVENTS_RELAYED

log = logging.getLogger("sync_airbnb.admin.outbox")

PASS_LIMIT = 500
KEEP_PUBLISHED = dt.timedelta(days=7)
PRUNE_EVERY_PASSES = 1_000


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        *,
        publish_timeout_s: float,
        poll_s: float,
        listen_url: str | None = None,
    ) -> None:
        self._pool = pool
        self._js = js
        # LISTEN holds a connection for good: its own, never one of the pool's.
        self._listen_url = listen_url
        self._listener: asyncpg.Connection | None = None
        self._publish_timeout_s = publish_timeout_s
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._passes = 0

    def wake(self, *_: object) -> None:
        """A commit wrote rows (the NOTIFY callback, or the admin itself)."""
        self._wake.set()

    async def relay_pass(self) -> int:
        """Publish what is committed and unpublished, in order; the number published
        (0 when another relay has the turn)."""
        published = 0
        async with self._pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    if not await store.take_relay_turn(conn):
                        return published
                    rows = await store.unpublished_events(conn, PASS_LIMIT)
                    for row in rows:
                        await self._js.publish(
                            topology.account_event_subject(row["event"]),
                            row["payload"],
                            timeout=self._publish_timeout_s,
                            headers={"Nats-Msg-Id": topology.account_event_msg_id(row["event_id"])},
                        )
                    await store.mark_published(conn, [r["id"] for r in rows])
                    self._passes += 1
                    if self._passes % PRUNE_EVERY_PASSES == 0:
                        await store.prune_published(conn, KEEP_PUBLISHED)
                published += len(rows)
                ACCOUNT_EVENTS_RELAYED.inc(len(rows))
                if len(rows) < PASS_LIMIT:
                    return published

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay until ``stopping``: at every notification and every ``poll_s``; a failed
        pass (NATS or PostgreSQL away) is retried along the one curve."""
        try:
            while not stopping.is_set():
                await self._listen()
                self._wake.clear()
                try:
                    await retry_until(
                        self.relay_pass,
                        base_s=0.2,
                        cap_s=5,
                        stop=stopping,
                        on_retry=self._report,
                    )
                except RetryStopped:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken_or(stopping), timeout=self._poll_s)
        finally:
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close(timeout=2)

    async def _woken_or(self, stopping: asyncio.Event) -> None:
        woken = asyncio.ensure_future(self._wake.wait())
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            stopped.cancel()

    async def _listen(self) -> None:
        """(Re)open the connection that LISTENs for commits; without one, polling alone."""
        if self._listen_url is None or (
            self._listener is not None and not self._listener.is_closed()
        ):
            return
        try:
            conn = await asyncpg.connect(self._listen_url, timeout=5)
            await conn.add_listener(store.OUTBOX_CHANNEL, self.wake)
        except Exception as exc:
            log.debug("outbox relay polls only for now: no LISTEN (%s)", exc)
            self._listener = None
            return
        self._listener = conn

    def _report(self, exc: BaseException, delay: float) -> None:
        log.warning(
            "account events not relayed yet (%s); retrying in %.1fs",
            str(exc) or type(exc).__name__,
            delay,
        )
