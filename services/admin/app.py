"""``sync-airbnb admin``: the operator's HTTP API (accounts, syncs, jobs, export).

The JSON API under /api/v1 is built in the admin issue; this factory already
owns the resources it will use and the operational routes.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from services.admin.settings import AdminSettings
from shared.logs import setup_logging
from shared.runtime import db_context, nats_context, serve, service_app
from shared.settings import load_settings

SETTINGS = web.AppKey("settings", AdminSettings)


def create_app(settings: AdminSettings) -> web.Application:
    app = service_app("admin", shutdown_timeout_s=settings.shutdown_timeout_s)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(nats_context(settings))
    app.cleanup_ctx.append(
        db_context(
            settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
    )
    return app


def main(args: argparse.Namespace) -> int:
    settings = load_settings(AdminSettings, "admin")
    setup_logging("admin", settings.log_level)
    return serve(create_app(settings), settings.admin_host, settings.admin_port)
