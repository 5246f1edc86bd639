"""HTTP handlers: parse and validate, call the service object, answer. Nothing more.

The logic lives in accounts.py, syncs.py and export.py; the route table (and
what each route accepts and answers) in routes.py.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.admin.errors import not_found, validation_error
from services.admin.models import (
    AccountCreate,
    AccountId,
    AccountListQuery,
    AccountPatch,
    ExportQuery,
    JobListQuery,
    SyncTriggerBody,
)
from services.admin.state import ACCOUNTS, DOCS_HTML, EXPORT, JOBS, OPENAPI, SYNCS
from shared.service_http import json_response

B = TypeVar("B", bound=BaseModel)

ACCOUNT_ID = TypeAdapter(AccountId)
JOB_ID = TypeAdapter(uuid.UUID)


# --- request parsing ------------------------------------------------------------------------


async def parse_body(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    """The JSON body as ``model``, or a 422 naming each bad field (never echoing a value).

    ``request.read()`` enforces the app's ``client_max_size`` (413) for chunked bodies.
    """
    raw = await request.read()
    if optional and not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc, "body") from None


def parse_query(request: web.Request, model: type[B]) -> B:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, "query") from None


def account_id(request: web.Request) -> str:
    """The path's account id; one that cannot be an account id names no account (404)."""
    raw = request.match_info["account_id"]
    try:
        return ACCOUNT_ID.validate_python(raw)
    except ValidationError:
        raise not_found("account", raw[:40]) from None


def job_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["job_id"]
    try:
        return JOB_ID.validate_python(raw)
    except ValidationError:
        raise not_found("sync job", raw[:40]) from None


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json"), status)


# --- accounts -------------------------------------------------------------------------------


async def create_or_update_account(request: web.Request) -> web.Response:
    body = await parse_body(request, AccountCreate)
    account, created = await request.app[ACCOUNTS].create_or_update(body)
    resp = model_response(account, 201 if created else 200)
    resp.headers["Location"] = f"/api/v1/accounts/{account.account_id}"
    return resp


async def list_accounts(request: web.Request) -> web.Response:
    q = parse_query(request, AccountListQuery)
    return model_response(await request.app[ACCOUNTS].list_page(q))


async def get_account(request: web.Request) -> web.Response:
    return model_response(await request.app[ACCOUNTS].get(account_id(request)))


async def patch_account(request: web.Request) -> web.Response:
    aid = account_id(request)
    body = await parse_body(request, AccountPatch)
    return model_response(await request.app[ACCOUNTS].patch(aid, body))


async def delete_account(request: web.Request) -> web.Response:
    return model_response(await request.app[ACCOUNTS].delete(account_id(request)))


async def restore_account(request: web.Request) -> web.Response:
    return model_response(await request.app[ACCOUNTS].restore(account_id(request)))


# --- syncs ----------------------------------------------------------------------------------


async def trigger_sync(request: web.Request) -> web.Response:
    aid = account_id(request)
    body = await parse_body(request, SyncTriggerBody, optional=True)
    accepted = await request.app[SYNCS].trigger(aid, full=body.full)
    resp = model_response(accepted, 202)
    # The trigger, which leads to the job: the one URL that answers whatever happens next.
    resp.headers["Location"] = accepted.links.trigger
    return resp


async def get_trigger(request: web.Request) -> web.Response:
    raw = request.match_info["trigger_id"]
    try:
        trigger_id = JOB_ID.validate_python(raw)
    except ValidationError:
        raise not_found("sync trigger", raw[:40]) from None
    return model_response(await request.app[SYNCS].get(trigger_id))


async def list_account_syncs(request: web.Request) -> web.Response:
    aid = account_id(request)
    q = parse_query(request, JobListQuery)
    return model_response(await request.app[JOBS].for_account(aid, q))


async def get_sync(request: web.Request) -> web.Response:
    return model_response(await request.app[JOBS].get(job_id(request)))


# --- export ---------------------------------------------------------------------------------


async def export_metrics(request: web.Request) -> web.StreamResponse:
    aid = account_id(request)
    q = parse_query(request, ExportQuery)
    return await request.app[EXPORT].stream(request, aid, q)


# --- the document ---------------------------------------------------------------------------


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_HTML], content_type="text/html")
