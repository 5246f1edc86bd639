"""HTTP handlers of the connect tokens and of ``POST /api/v1/connect`` (services/admin/connect.py
holds the rules). Thin, as in handlers.py: parse, call, answer.

``POST /connect`` is the one route that takes no X-API-Key: the auth middleware lets its
scope ("connect") through, and this handler authenticates the Bearer token itself, with the
same slowing of repeated failures from one address (services/admin/scopes.FailureBuckets).
"""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from services.admin.auth import FAILURES, caller, client_address, set_caller, too_many
from services.admin.connect import bearer_token
from services.admin.errors import ApiError, not_found
from services.admin.handlers import account_id, model_response, parse_body
from services.admin.models import (
    ConnectBody,
    ConnectTokenCreate,
    ConnectTokenList,
    NewAccountTokenCreate,
)
from services.admin.state import CONNECT

TOKEN_ID = TypeAdapter(uuid.UUID)


def _server(request: web.Request) -> str:
    """The origin the request came to, which the connect link points the extension at."""
    return f"{request.scheme}://{request.host}"


def _token_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["token_id"]
    try:
        return TOKEN_ID.validate_python(raw)
    except ValidationError:
        raise not_found("connect token", raw[:40]) from None


async def create_connect_token(request: web.Request) -> web.Response:
    aid = account_id(request)
    body = await parse_body(request, ConnectTokenCreate, optional=True)
    created = await request.app[CONNECT].create(
        caller(request),
        account_id=aid,
        customer_id=None,
        days=body.expires_in_days,
        server=_server(request),
    )
    return model_response(created, 201)


async def create_new_account_token(request: web.Request) -> web.Response:
    body = await parse_body(request, NewAccountTokenCreate, optional=True)
    created = await request.app[CONNECT].create(
        caller(request),
        account_id=None,
        customer_id=body.customer_id,
        days=body.expires_in_days,
        server=_server(request),
    )
    return model_response(created, 201)


async def list_connect_tokens(request: web.Request) -> web.Response:
    items = await request.app[CONNECT].list_for(caller(request), account_id(request))
    return model_response(ConnectTokenList(items=items))


async def revoke_account_connect_token(request: web.Request) -> web.Response:
    aid = account_id(request)
    token_id = _token_id(request)
    return model_response(await request.app[CONNECT].revoke(caller(request), token_id, aid))


async def revoke_connect_token(request: web.Request) -> web.Response:
    token_id = _token_id(request)
    return model_response(await request.app[CONNECT].revoke(caller(request), token_id, None))


async def connect(request: web.Request) -> web.Response:
    buckets = request.app[FAILURES]
    client = client_address(request)
    wait = buckets.retry_after(client)
    if wait is not None:
        raise too_many(wait)
    presented = bearer_token(request.headers.get("Authorization"))
    service = request.app[CONNECT]
    try:
        who = await service.token_caller(presented, client)
    except ApiError:
        buckets.failed(client)
        raise
    set_caller(request, who)
    body = await parse_body(request, ConnectBody)
    return model_response(await service.connect(who, presented, body))
