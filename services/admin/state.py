"""Typed application keys of the admin app (kept apart from app.py to avoid import cycles)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.admin.accounts import AccountService
from services.admin.audit import AuditTrail
from services.admin.connect import ConnectTokens
from services.admin.credential_check import CredentialChecker
from services.admin.export import MetricsExport
from services.admin.insight_queries import InsightQueries
from services.admin.settings import AdminSettings
from services.admin.syncs import JobQueries, SyncTrigger

SETTINGS = web.AppKey("settings", AdminSettings)
ACCOUNTS = web.AppKey("accounts", AccountService)
SYNCS = web.AppKey("syncs", SyncTrigger)
CONNECT = web.AppKey("connect", ConnectTokens)
JOBS = web.AppKey("jobs", JobQueries)
CREDENTIALS = web.AppKey("credentials", CredentialChecker)
EXPORT = web.AppKey("export", MetricsExport)
INSIGHTS = web.AppKey("insights", InsightQueries)
AUDIT = web.AppKey("audit", AuditTrail)
# The OpenAPI document and its rendered page, built once at start-up.
OPENAPI = web.AppKey("openapi", dict[str, Any])
DOCS_HTML = web.AppKey("docs_html", str)
