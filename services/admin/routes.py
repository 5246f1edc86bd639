"""Every route of the admin service, in one table.

The table drives both the router (:func:`setup_routes`) and the OpenAPI
document (``openapi.build_document``): what a route accepts and answers is
declared here once. ``/health``, ``/health/ready`` and ``/metrics`` are served
by ``shared.service_http`` for every service; they are only documented here.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from aiohttp import web
from pydantic import TypeAdapter

from services.admin import connect_handlers as ch
from services.admin import dashboard
from services.admin import handlers as h
from services.admin.connect import CONNECT_PATH
from services.admin.models import (
    AGGREGATION_DOC,
    CONNECT_TOKEN_DOC,
    FIRST_DATE,
    LAST_DATE,
    AccountCreate,
    AccountId,
    AccountListQuery,
    AccountOut,
    AccountPage,
    AccountPatch,
    AuditPage,
    AuditQuery,
    ConnectBody,
    ConnectOut,
    ConnectTokenCreate,
    ConnectTokenCreated,
    ConnectTokenList,
    ConnectTokenOut,
    ErrorBody,
    ExportQuery,
    ForwardOut,
    ForwardQuery,
    HealthOut,
    InsightsOut,
    InsightsQuery,
    JobDetail,
    JobListQuery,
    JobPage,
    ListingsOut,
    NewAccountTokenCreate,
    PortfolioOut,
    PortfolioQuery,
    ReadyOut,
    SyncTriggerBody,
    TriggerOut,
    ValidateQuery,
)
from services.admin.openapi import (
    DOCS_ASSETS,
    DOCS_STATIC,
    Operation,
    Resp,
    swagger_ui_dir,
)
from services.admin.scopes import RouteScope
from services.admin.settings import AdminSettings
from shared import service_http

API = "/api/v1"
ACCOUNT = {"account_id": TypeAdapter(AccountId)}
JOB = {"job_id": TypeAdapter(uuid.UUID)}
TRIGGER = {"trigger_id": TypeAdapter(uuid.UUID)}
TOKEN = {"token_id": TypeAdapter(uuid.UUID)}


def _e(description: str) -> Resp:
    return Resp(description, ErrorBody)


NOT_FOUND = _e("no such account")
LISTING_NOT_FOUND = _e("no such account, or no such listing of the account")
DATES = f"Dates are {FIRST_DATE} .. {LAST_DATE}."
DELETED = _e("the account is soft-deleted (restore it first)")
# validate=true (services/admin/credential_check.py): a fetcher's verdict before the write.
CREDENTIALS_REJECTED = _e(
    "the request is invalid (`fields` names each problem); with validate=true also "
    "`credentials_rejected`: a fetcher found the session expired, another host's or refused "
    "by Airbnb (`reason` says which, `fields` names airbnb_cookie), and nothing was saved"
)
CHECK_UNAVAILABLE = _e(
    "PostgreSQL (or NATS) is not reachable; with validate=true also "
    "`credentials_check_unavailable`: no fetcher answered within ADMIN_VALIDATE_TIMEOUT_S, "
    "or Airbnb gave it no verdict, and nothing was saved"
)


def api_operations() -> list[Operation]:
    """The routes this service registers itself."""
    return [
        Operation(
            "POST",
            f"{API}/accounts",
            h.create_or_update_account,
            "createOrUpdateAccount",
            "Create an account, or update the one with this account_id",
            "accounts",
            {
                200: Resp("updated", AccountOut),
                201: Resp("created", AccountOut),
                409: DELETED,
                422: CREDENTIALS_REJECTED,
                503: CHECK_UNAVAILABLE,
            },
            body=AccountCreate,
            query=ValidateQuery,
            description="`airbnb_cookie` is a Cookie header or a list of `{name, value}` "
            "objects; only the auth cookies are kept, encrypted at rest and never returned. "
            "A 422 on `airbnb_cookie` when `_airbed_session_id`, `_aat` or `_user_attributes` "
            "is missing, or when `_user_attributes` names another host than `account_id`. A "
            "changed cookie bumps `credentials_version` and clears the account's "
            "needs-new-credentials mark.",
            scope="write",
        ),
        Operation(
            "GET",
            f"{API}/accounts",
            h.list_accounts,
            "listAccounts",
            "List accounts (paginated, by account_id)",
            "accounts",
            {200: Resp("a page of accounts", AccountPage)},
            query=AccountListQuery,
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}",
            h.get_account,
            "getAccount",
            "Read one account (soft-deleted ones too)",
            "accounts",
            {200: Resp("the account", AccountOut), 404: NOT_FOUND},
            path_params=ACCOUNT,
        ),
        Operation(
            "PATCH",
            f"{API}/accounts/{{account_id}}",
            h.patch_account,
            "patchAccount",
            "Change some fields of an account",
            "accounts",
            {
                200: Resp("the changed account", AccountOut),
                404: NOT_FOUND,
                409: DELETED,
                422: CREDENTIALS_REJECTED,
                503: CHECK_UNAVAILABLE,
            },
            body=AccountPatch,
            query=ValidateQuery,
            path_params=ACCOUNT,
            description="A new `airbnb_cookie` is taken as by createOrUpdateAccount, its "
            "`_user_attributes` naming the path's account; when it differs from the stored "
            "cookies it replaces them, bumps `credentials_version` and clears the "
            "needs-new-credentials mark.",
            scope="write",
        ),
        Operation(
            "DELETE",
            f"{API}/accounts/{{account_id}}",
            h.delete_account,
            "deleteAccount",
            "Soft-delete an account (kept, never synced, restorable)",
            "accounts",
            {
                200: Resp("the deleted account", AccountOut),
                404: NOT_FOUND,
                409: _e("the account is already deleted"),
            },
            path_params=ACCOUNT,
            scope="write",
        ),
        Operation(
            "POST",
            f"{API}/accounts/{{account_id}}/restore",
            h.restore_account,
            "restoreAccount",
            "Restore a soft-deleted account",
            "accounts",
            {
                200: Resp("the restored account", AccountOut),
                404: NOT_FOUND,
                409: _e("the account is not deleted"),
            },
            path_params=ACCOUNT,
            scope="write",
        ),
        Operation(
            "POST",
            f"{API}/accounts/{{account_id}}/sync",
            h.trigger_sync,
            "triggerSync",
            "Sync this account now: a durable trigger the scheduler turns into a job",
            "syncs",
            {
                202: Resp(
                    "the trigger is stored (Location: follow it); with job_id when a "
                    "scheduler queued it at once, pending when none has handled it yet",
                    TriggerOut,
                ),
                404: NOT_FOUND,
                409: _e("the account is inactive, deleted, or needs new credentials"),
                502: _e("the scheduler's answer was not understood"),
                503: _e("NATS could not store the trigger (Retry-After)"),
            },
            body=SyncTriggerBody,
            body_required=False,
            path_params=ACCOUNT,
            scope="write",
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}/syncs",
            h.list_account_syncs,
            "listAccountSyncs",
            "The account's sync jobs, newest first",
            "syncs",
            {200: Resp("a page of jobs", JobPage), 404: NOT_FOUND},
            query=JobListQuery,
            path_params=ACCOUNT,
        ),
        Operation(
            "GET",
            f"{API}/triggers/{{trigger_id}}",
            h.get_trigger,
            "getTrigger",
            "One sync trigger: pending, its job, or the scheduler's refusal",
            "syncs",
            {
                200: Resp("the trigger", TriggerOut),
                404: _e("no such trigger"),
                503: _e("NATS is needed to look up a pending trigger (Retry-After)"),
            },
            path_params=TRIGGER,
        ),
        Operation(
            "GET",
            f"{API}/syncs/{{job_id}}",
            h.get_sync,
            "getSync",
            "One sync job, with each listing's progress and error",
            "syncs",
            {200: Resp("the job", JobDetail), 404: _e("no such job")},
            path_params=JOB,
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}/metrics/export",
            h.export_metrics,
            "exportMetrics",
            "Export one metrics table of the account over a date range",
            "metrics",
            {
                200: Resp(
                    "the rows, streamed (CSV with a header line, or one JSON array)",
                    content={
                        "text/csv": {"schema": {"type": "string"}},
                        "application/json": {
                            "schema": {"type": "array", "items": {"type": "object"}}
                        },
                    },
                ),
                404: NOT_FOUND,
            },
            query=ExportQuery,
            path_params=ACCOUNT,
            description="Inclusive range: chart_query by metric_date, chart_summary and "
            "list_of_metrics by window_start; at most EXPORT_MAX_DAYS days.",
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}/listings",
            h.list_listings,
            "listListings",
            "The account's listings, with their last sync and last job status",
            "insights",
            {200: Resp("the listings, by airbnb_listing_id", ListingsOut), 404: NOT_FOUND},
            path_params=ACCOUNT,
            description="`last_synced_at`: when a sync last committed the listing (null: "
            "never); `last_job_status` and `last_job_id`: the listing in the account's most "
            "recent job that included it.",
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}/insights",
            h.get_insights,
            "getInsights",
            "One metric as a time series, own beside similar listings",
            "insights",
            {200: Resp("the series", InsightsOut), 404: LISTING_NOT_FOUND},
            query=InsightsQuery,
            path_params=ACCOUNT,
            description=AGGREGATION_DOC
            + " Each answer says its rule in `aggregation` and each point its `own_source` "
            f"and `similar_source`. {DATES}",
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}/insights/forward",
            h.get_forward_insights,
            "getForwardInsights",
            "Demand build-up: how a metric of upcoming stay dates moved from scrape to scrape",
            "insights",
            {200: Resp("every scrape of each stay date", ForwardOut), 404: LISTING_NOT_FOUND},
            query=ForwardQuery,
            path_params=ACCOUNT,
            description="Every stored scrape of each stay date in [stay_from, stay_to] "
            "(not only the latest), oldest first: `lead_days` is the stay date minus the "
            "scrape day, `own_change` and `similar_change` the difference to the scrape "
            f"before. Stay dates without rows are left out. {DATES}",
        ),
        Operation(
            "GET",
            f"{API}/portfolio",
            h.get_portfolio,
            "getPortfolio",
            "Every listing of a customer's accounts (or all): the last 7 and 28 days "
            "against the 7 and 28 before, with flags",
            "insights",
            {200: Resp("the listings, by account_id and airbnb_listing_id", PortfolioOut)},
            query=PortfolioQuery,
            description="Accounts not soft-deleted. Periods end on `end`: last_7 = "
            "[end-6, end], prior_7 = [end-13, end-7], last_28 = [end-27, end], prior_28 = "
            "[end-55, end-28]. Each date's value is the latest scrape on or before `as_of`. "
            "Page views are summed; conversion rates are the daily rates weighted by page "
            "views, never Airbnb's window figures, so that they compare across listings. "
            "change_N = (last_N - prior_N) / prior_N (null when prior_N is null or 0); a "
            f"flag is set when the own change_N is below -drop_threshold. {DATES}",
        ),
        Operation(
            "GET",
            f"{API}/audit",
            h.list_audit,
            "listAudit",
            "The audit trail: every change of an account or a key, newest first",
            "audit",
            {200: Resp("a page of entries", AuditPage)},
            query=AuditQuery,
            scope="admin",
            description="Each entry says who (the key's name and scope, the client's "
            "address), when, the action, the account or key, and the names of the fields "
            "that changed; a replaced cookie is the field `credentials`, and no value of a "
            "credential is ever recorded. One change that does several things (a PATCH of "
            "the cookie and is_active) is one entry per action, with the same `at`. The "
            "trail is append-only: no route changes or removes an entry.",
        ),
        *connect_operations(),
        Operation(
            "GET",
            f"{API}/openapi.json",
            h.openapi_json,
            "openapi",
            "This document",
            "meta",
            {
                200: Resp(
                    "OpenAPI 3.1", content={"application/json": {"schema": {"type": "object"}}}
                )
            },
            uses_db=False,
        ),
        Operation(
            "GET",
            "/docs",
            h.docs_page,
            "docs",
            "This document, as a page",
            "meta",
            {200: Resp("HTML", content={"text/html": {"schema": {"type": "string"}}})},
            uses_db=False,
        ),
        Operation(
            "GET",
            dashboard.UI_PATH,
            dashboard.ui_page,
            "dashboard",
            "The dashboard: portfolio, listings and accounts in the browser",
            "meta",
            {200: Resp("HTML", content={"text/html": {"schema": {"type": "string"}}})},
            # The page holds no data: it asks for a key and sends it with each API call.
            scope="public",
            uses_db=False,
        ),
    ]


def connect_operations() -> list[Operation]:
    """Connect tokens and POST /connect (issue 16, item 4; services/admin/connect.py)."""
    token_gone = _e("no such connect token (of this account)")
    return [
        Operation(
            "POST",
            f"{API}/accounts/{{account_id}}/connect-tokens",
            ch.create_connect_token,
            "createConnectToken",
            "A connect token for this account, for the host's browser extension",
            "connect",
            {
                201: Resp("the token, shown this once, and the link to send", ConnectTokenCreated),
                404: NOT_FOUND,
                409: DELETED,
            },
            body=ConnectTokenCreate,
            body_required=False,
            path_params=ACCOUNT,
            description=f"{CONNECT_TOKEN_DOC} It expires after `expires_in_days` "
            "(ADMIN_CONNECT_TOKEN_DAYS, 7, by default) and works for this account only.",
            scope="write",
        ),
        Operation(
            "GET",
            f"{API}/accounts/{{account_id}}/connect-tokens",
            ch.list_connect_tokens,
            "listConnectTokens",
            "The account's connect tokens (never the tokens themselves)",
            "connect",
            {200: Resp("newest first", ConnectTokenList), 404: NOT_FOUND},
            path_params=ACCOUNT,
        ),
        Operation(
            "DELETE",
            f"{API}/accounts/{{account_id}}/connect-tokens/{{token_id}}",
            ch.revoke_account_connect_token,
            "revokeAccountConnectToken",
            "Revoke one of the account's connect tokens (at once; a revoked one stays so)",
            "connect",
            {200: Resp("the revoked token", ConnectTokenOut), 404: token_gone},
            path_params={**ACCOUNT, **TOKEN},
            scope="write",
        ),
        Operation(
            "POST",
            f"{API}/connect-tokens",
            ch.create_new_account_token,
            "createNewAccountToken",
            "A connect token for a new account of a customer",
            "connect",
            {201: Resp("the token, shown this once, and the link to send", ConnectTokenCreated)},
            body=NewAccountTokenCreate,
            body_required=False,
            description=f"{CONNECT_TOKEN_DOC} Its first use creates the account (its id is "
            "the host's, from the session) with `customer_id` (a customer key's own: "
            "another is a 422); from then on it updates that account only.",
            scope="write",
        ),
        Operation(
            "DELETE",
            f"{API}/connect-tokens/{{token_id}}",
            ch.revoke_connect_token,
            "revokeConnectToken",
            "Revoke a connect token, a new-account one included",
            "connect",
            {200: Resp("the revoked token", ConnectTokenOut), 404: token_gone},
            path_params=TOKEN,
            scope="write",
        ),
        Operation(
            "POST",
            f"{API}/connect",
            ch.connect,
            "connect",
            "Connect an account with the host's browser session (the browser extension)",
            "connect",
            {
                200: Resp("connected", ConnectOut),
                401: _e("no connect token, or one unknown, expired or revoked: nothing changed"),
                403: _e("the session is another host's than the token's account"),
                409: _e("the account is deleted, or a new-account token's host exists"),
                422: _e(
                    "the cookies are not a usable session (credentials_rejected: Airbnb "
                    "refused it); nothing saved"
                ),
                429: Resp(
                    "too many failed authentications from this address (Retry-After)", ErrorBody
                ),
                503: _e("no fetcher could check the session (Retry-After); nothing saved"),
            },
            body=ConnectBody,
            description="`Authorization: Bearer <connect token>`, no X-API-Key. The cookies "
            "go through the intake of createOrUpdateAccount (the auth group is kept) and a "
            "fetcher checks them first unless `validate` is false. A changed cookie replaces "
            "the stored one, bumps `credentials_version` and clears the needs-new-"
            "credentials mark. CORS: the origins of ADMIN_CONNECT_ORIGINS (the extension's) "
            "may call this route and no other.",
            scope="connect",
        ),
        Operation(
            "GET",
            CONNECT_PATH,
            ch.connect_page,
            "connectPage",
            "Where a connect link leads: how to paste it into the browser extension",
            "connect",
            {200: Resp("HTML", content={"text/html": {"schema": {"type": "string"}}})},
            description="The link's token is in its fragment, which a browser never sends: "
            "the page holds no data and reads nothing.",
            scope="public",
            uses_db=False,
        ),
    ]


def runtime_operations(settings: AdminSettings) -> list[Operation]:
    """The operational routes shared.service_http registers for every service."""
    return [
        Operation(
            "GET",
            "/health",
            service_http.health,
            "health",
            "Liveness: 200 while the event loop runs",
            "operations",
            {200: Resp("alive", HealthOut)},
            scope="public",
            uses_db=False,
        ),
        Operation(
            "GET",
            "/health/ready",
            service_http.ready,
            "ready",
            "Readiness: PostgreSQL and NATS both answer",
            "operations",
            {200: Resp("ready", ReadyOut), 503: Resp("not ready; checks says which", ReadyOut)},
            scope="public",
            uses_db=False,
        ),
        Operation(
            "GET",
            "/metrics",
            service_http.metrics,
            "metrics",
            "Prometheus metrics",
            "operations",
            {
                200: Resp(
                    "Prometheus text format", content={"text/plain": {"schema": {"type": "string"}}}
                )
            },
            # Counts across every customer: admin and read keys, never a customer key.
            scope="public" if settings.admin_metrics_public else "operator",
            uses_db=False,
        ),
    ]


# The document holds no secrets, so it and its page need no key unless ADMIN_DOCS_PUBLIC=false
# (then any key, a customer's too).
DOCS_OPERATIONS = frozenset({"openapi", "docs"})


def all_operations(settings: AdminSettings) -> list[Operation]:
    docs_scope: RouteScope = "public" if settings.admin_docs_public else "read"
    api = [
        replace(op, scope=docs_scope) if op.operation_id in DOCS_OPERATIONS else op
        for op in api_operations()
    ]
    return [*api, *runtime_operations(settings)]


def route_scopes(settings: AdminSettings) -> dict[tuple[str, str], RouteScope]:
    """Each (method, path template) route's scope: what the auth middleware
    (services/admin/auth.py) enforces; HEAD is its GET's."""
    out: dict[tuple[str, str], RouteScope] = {}
    for op in all_operations(settings):
        out[(op.method, op.path)] = op.scope
        if op.method == "GET":
            out[("HEAD", op.path)] = op.scope
    return out


def public_paths(settings: AdminSettings) -> tuple[str, ...]:
    paths = [op.path for op in all_operations(settings) if op.public]
    if settings.admin_docs_public:
        paths += [f"{DOCS_STATIC}/{name}" for name in DOCS_ASSETS]
    paths += dashboard.public_paths()
    return tuple(paths)


def setup_routes(app: web.Application) -> None:
    for op in api_operations():
        if op.method == "GET":
            # HEAD on every GET route (RFC 9110 9.3.2), as /health and /metrics have it.
            app.router.add_get(op.path, op.handler, name=op.operation_id, allow_head=True)
        else:
            app.router.add_route(op.method, op.path, op.handler, name=op.operation_id)
    # Swagger UI's own files for /docs, from the installed wheel.
    app.router.add_static(DOCS_STATIC, swagger_ui_dir())
    # The dashboard's script, stylesheet and plotly.js, from the installed packages.
    dashboard.setup_assets(app)
