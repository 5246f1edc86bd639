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

# What a host sees who opens the connect link in a browser instead of pasting it into the
# extension. No script: the token is in the fragment, which never reaches this server, and
# nothing on the page reads it.
CONNECT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Connect your Airbnb account</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font:16px system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em">
<h1>Connect your Airbnb account</h1>
<p>This link is for the <b>sync-airbnb connect</b> browser extension.</p>
<ol><li>Open the extension's options (chrome://extensions, then Details, then Extension
options).</li>
<li>Paste this page's whole address, with what follows the <code>#</code>, into
<i>Connect link</i>, and press Save.</li>
<li>Open your Airbnb hosting dashboard and press
<i>Send my Airbnb session to &hellip;</i>.</li></ol>
<p>Keep the link to yourself: until it expires it lets the extension connect your account.</p>
</body></html>
"""
CONNECT_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _server(request: web.Request) -> str:
    """The origin the request came to, which the connect link points the extension at."""
    return f"{request.scheme}://{request.host}"


def _token_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["token_id"]
    try:
        return TOKEN_ID.validate_python(raw)
    except ValidationError:
        raise not_found("connect token", raw[:40]) from None


async def connect_page(request: web.Request) -> web.Response:
    return web.Response(
        text=CONNECT_PAGE,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONNECT_PAGE_CSP,
            # The address holds the token (in its fragment): no page it leads to learns it.
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


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
