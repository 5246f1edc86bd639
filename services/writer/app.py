"""``sync-airbnb writer``: every write of metrics and job progress (docs/data-path.md).

Consumes the durable pull consumer ``writer`` on AIRBNB_SYNC_RESULTS in batches
and commits each batch in one PostgreSQL transaction; see consumer.py for the
loop and its failure handling, store.py for the transaction, bookkeeping.py and
row_codecs.py for the pure rules. Run as many replicas as PostgreSQL can take: they
share the consumer, and job rows are locked for the completion check.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from services.writer import store
from services.writer.consumer import Writer
from services.writer.settings import WriterSettings
from shared.logs import setup_logging
from shared.resources import db_context, nats_context, worker_context
from shared.runtime import DB_POOL, JETSTREAM, NATS, serve
from shared.service_http import service_app
from shared.settings import load_settings

SETTINGS = web.AppKey("settings", WriterSettings)


async def consume(app: web.Application, stopping: asyncio.Event) -> None:
    writer = Writer(
        js=app[JETSTREAM],
        nc=app[NATS],
        pool=app[DB_POOL],
        settings=app[SETTINGS],
        stopping=stopping,
    )
    await writer.run()


def create_app(settings: WriterSettings) -> web.Application:
    app = service_app("writer", shutdown_timeout_s=settings.shutdown_timeout_s)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(nats_context(settings))
    app.cleanup_ctx.append(db_context(settings, init=store.init_connection))
    app.cleanup_ctx.append(worker_context("consume", consume))
    return app


def main(args: argparse.Namespace) -> int:
    settings = load_settings(WriterSettings, "writer")
    setup_logging("writer", settings.log_level)
    return serve(create_app(settings), settings.http_host, settings.http_port)
