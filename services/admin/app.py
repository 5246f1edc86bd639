"""``sync-airbnb admin``: the operator's HTTP API (accounts, syncs, jobs, export).

``create_app(settings)`` is the factory that ``main`` serves and tests drive
with ``aiohttp_client``. Resources are cleanup contexts, in order: NATS, the
PostgreSQL pool, the service objects built on both, and the relay of committed
account events (``outbox.py``) as a background worker. The route table is
``routes.py``; middlewares (errors, auth, body size, CORS) are ``middlewares.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
from collections.abc import AsyncIterator

from aiohttp import web

from services.admin.accounts import AccountService
from services.admin.audit import AuditTrail
from services.admin.auth import FAILURES, authenticate
from services.admin.connect import CONNECT_ROUTE, ConnectTokens
from services.admin.credential_check import CredentialChecker
from services.admin.export import MetricsExport
from services.admin.insight_queries import InsightQueries
from services.admin.middlewares import Cors, body_limit, json_errors, security_headers
from services.admin.openapi import build_document, render_docs
from services.admin.outbox import OutboxRelay
from services.admin.routes import all_operations, public_paths, route_scopes, setup_routes
from services.admin.scopes import FailureBuckets
from services.admin.settings import AdminSettings
from services.admin.state import (
    ACCOUNTS,
    AUDIT,
    CONNECT,
    CREDENTIALS,
    DOCS_HTML,
    EXPORT,
    INSIGHTS,
    JOBS,
    OPENAPI,
    SETTINGS,
    SYNCS,
)
from services.admin.syncs import JobQueries, SyncTrigger
from shared.crypto import CredentialCipher
from shared.logs import setup_logging
from shared.resources import db_context, nats_context, worker_context
from shared.runtime import DB_POOL, JETSTREAM, NATS, serve
from shared.service_http import service_app
from shared.settings import load_settings

__all__ = ["SETTINGS", "create_app", "main"]


def _version() -> str:
    try:
        return importlib.metadata.version("sync-airbnb")
    except importlib.metadata.PackageNotFoundError:
        return "0"


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The service objects, once NATS and the pool exist."""
    settings = app[SETTINGS]
    pool = app[DB_POOL]
    cipher = CredentialCipher(settings.secret_keys)
    app[ACCOUNTS] = AccountService(pool, cipher)
    app[SYNCS] = SyncTrigger(pool, app[NATS], settings.sync_trigger_timeout_s)
    app[CREDENTIALS] = CredentialChecker(app[NATS], pool, cipher, settings.admin_validate_timeout_s)
    app[JOBS] = JobQueries(pool)
    app[EXPORT] = MetricsExport(
        pool, max_days=settings.export_max_days, fetch_rows=settings.export_fetch_rows
    )
    app[INSIGHTS] = InsightQueries(pool, settings.today)
    app[AUDIT] = AuditTrail(pool)
    app[CONNECT] = ConnectTokens(
        pool,
        cipher,
        default_days=settings.admin_connect_token_days,
        default_client_version=settings.admin_connect_client_version,
        check=app[CREDENTIALS],
    )
    yield


def create_app(settings: AdminSettings) -> web.Application:
    cors = Cors(settings.admin_cors_origins)
    # The browser extension's origin may call POST /connect and nothing else.
    connect_cors = Cors(
        settings.admin_connect_origins,
        paths=[CONNECT_ROUTE],
        methods="POST",
        headers="Authorization, Content-Type",
    )
    corses = [c for c in (cors, connect_cors) if c.enabled]
    middlewares = (
        *(c.preflight for c in corses),
        json_errors,
        authenticate(settings.admin_api_keys, route_scopes(settings), public_paths(settings)),
        body_limit(settings.admin_max_body_bytes),
    )
    app = service_app(
        "admin",
        shutdown_timeout_s=settings.shutdown_timeout_s,
        middlewares=middlewares,
        client_max_size=settings.admin_max_body_bytes,
    )
    app[SETTINGS] = settings
    app[FAILURES] = FailureBuckets(
        settings.admin_auth_failures_burst,
        settings.admin_auth_failures_per_minute,
        settings.admin_auth_failures_max_clients,
    )
    doc = build_document(all_operations(settings), title="sync-airbnb admin", version=_version())
    app[OPENAPI] = doc
    setup_routes(app)
    app[DOCS_HTML] = render_docs(doc, openapi_url=app.router["openapi"].url_for().path)
    app.on_response_prepare.append(security_headers)
    for c in corses:
        app.on_response_prepare.append(c.on_response_prepare)
    app.cleanup_ctx.append(nats_context(settings))
    app.cleanup_ctx.append(db_context(settings))
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(worker_context("account-outbox", relay_account_events))
    return app


async def relay_account_events(app: web.Application, stopping: asyncio.Event) -> None:
    """Publish committed account events (services/admin/outbox.py) for the app's life."""
    settings = app[SETTINGS]
    relay = OutboxRelay(
        app[DB_POOL],
        app[JETSTREAM],
        publish_timeout_s=settings.event_publish_timeout_s,
        poll_s=settings.admin_outbox_poll_s,
        listen_url=settings.database_url,
    )
    await relay.run(stopping)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(AdminSettings, "admin")
    setup_logging("admin", settings.log_level)
    return serve(create_app(settings), settings.admin_host, settings.admin_port)
