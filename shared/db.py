"""asyncpg access shared by the services: the pool and its type codecs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

# What a query helper takes: a connection of its own (asyncpg.connect) or one borrowed
# from a pool (pool.acquire() hands out a proxy, not a Connection).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# A service's own per-connection setup, run after the shared one on every new connection.
ConnectionInit = Callable[[asyncpg.Connection], Awaitable[None]]


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in and out as Python objects, through orjson.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        format="text",
    )


class _ReasonNotTraceback(logging.Filter):
    """asyncpg's pool logs a full traceback each time it fails to reopen a connection,
    every second or so while PostgreSQL is down: one line with the reason says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_ReasonNotTraceback())

# Defaults of the two timeouts, the same as DatabaseSettings' (DB_STATEMENT_TIMEOUT_S,
# DB_ACQUIRE_TIMEOUT_S), for a pool made without settings (a benchmark, a script).
STATEMENT_TIMEOUT_S = 10.0
ACQUIRE_TIMEOUT_S = 5.0


class BoundedPool(asyncpg.Pool):
    """A pool whose ``acquire`` never waits without bound.

    asyncpg's ``acquire()`` without a timeout waits for ever on a PostgreSQL that
    accepts connections and then hangs (stopped with SIGSTOP, a full backlog); its
    ``release`` inherits the acquire's timeout, so both ends are bounded. Every caller,
    ``pool.fetch`` and the like included, goes through here.
    """

    def __init__(self, dsn: str, *, acquire_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(dsn, **kwargs)
        self._acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext[asyncpg.Record]:
        return super().acquire(timeout=self._acquire_timeout_s if timeout is None else timeout)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init: ConnectionInit | None = None,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
) -> asyncpg.Pool:
    """The pool, bounded in time at every step.

    ``acquire_timeout_s`` bounds a wait for a connection (a new one's connect included)
    and its release; ``statement_timeout_s`` bounds each command twice: on the client
    (``command_timeout``, for a server that no longer answers) and on the server
    (``statement_timeout``, so a statement the client gave up on does not run on).
    """

    async def init_connection(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if init is not None:
            await init(conn)

    pool = BoundedPool(
        dsn,
        acquire_timeout_s=acquire_timeout_s,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        timeout=acquire_timeout_s,  # connect
        command_timeout=statement_timeout_s,
        server_settings={
            "application_name": "sync-airbnb",
            "statement_timeout": str(int(statement_timeout_s * 1000)),
        },
    )
    await pool
    return pool
