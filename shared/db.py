"""asyncpg access shared by the services: the pool and its type codecs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

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


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, init: ConnectionInit | None = None
) -> asyncpg.Pool:
    async def init_connection(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if init is not None:
            await init(conn)

    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        command_timeout=60,
        server_settings={"application_name": "sync-airbnb"},
    )
    assert pool is not None
    return pool
