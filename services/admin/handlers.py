"""HTTP handlers: parse and validate, call the service object, answer. Nothing more.

The logic lives in accounts.py, syncs.py, export.py and insight_queries.py; the route table (and
what each route accepts and answers) in routes.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.admin.auth import caller
from services.admin.errors import ApiError, not_found, validation_error
from services.admin.models import (
    AccountCreate,
    AccountId,
    AccountListQuery,
    AccountPatch,
    AuditQuery,
    ExportQuery,
    FieldError,
    ForwardQuery,
    InsightsQuery,
    JobListQuery,
    PortfolioQuery,
    SyncTriggerBody,
    ValidateQuery,
)
from services.admin.state import (
    ACCOUNTS,
    AUDIT,
    CREDENTIALS,
    DOCS_HTML,
    EXPORT,
    INSIGHTS,
    JOBS,
    OPENAPI,
    SYNCS,
)
from shared.service_http import json_response

B = TypeVar("B", bound=BaseModel)

ACCOUNT_ID = TypeAdapter(AccountId)
JOB_ID = TypeAdapter(uuid.UUID)


# --- request parsing ------------------------------------------------------------------------


async def parse_body(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    """The JSON body as ``model``: 415 unless it is ``application/json``, 422 naming each bad
    field (never echoing a value), a duplicated key among them.

    ``request.read()`` enforces the app's ``client_max_size`` (413) for chunked bodies; it
    reads before the media type is checked so that a body too large is a 413 whatever it is.
    """
    raw = await request.read()
    if optional and not raw.strip():
        return model.model_validate({})
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "the request body must be JSON, sent with Content-Type: application/json",
        )
    try:
        return model.model_validate(decode_json(raw))
    except ValidationError as exc:
        raise validation_error(exc, "body") from None


class _Duplicates:
    """What the object hook saw: the objects (by id) that held a key more than once, each
    kept alive here so that its id is not reused by a later object."""

    def __init__(self) -> None:
        self.keys: dict[int, list[str]] = {}
        self._held: list[dict[str, Any]] = []

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            dup: dict[str, None] = {}
            for key, _ in pairs:
                if key in seen:
                    dup[key] = None
                seen.add(key)
            self.keys[id(obj)] = list(dup)
            self._held.append(obj)
        return obj


def _paths(root: Any, keys: dict[int, list[str]]) -> list[str]:
    """The dotted path of each duplicated key, in document order (iterative: the parser
    allows nesting as deep as the recursion limit, so a recursive walk could overflow)."""
    out: list[str] = []
    # (value, its dotted path, whether that path is a duplicated key)
    stack: list[tuple[Any, str, bool]] = [(root, "", False)]
    while stack:
        node, path, duplicated = stack.pop()
        if duplicated:
            out.append(path)
        prefix = f"{path}." if path else ""
        if isinstance(node, dict):
            dup = keys.get(id(node), ())
            stack.extend((v, f"{prefix}{k}", k in dup) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{prefix}{i}", False) for i, v in reversed(list(enumerate(node))))
    return out


class _NotJson(ValueError):
    pass


def _invalid_json(message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "invalid body: body",
        fields=[FieldError(field="body", message=message, type="json_invalid")],
    )


def decode_json(raw: bytes) -> Any:
    """The one JSON parser of request bodies: strict UTF-8 (RFC 8259), no NaN or Infinity,
    and no key twice in one object (a 422 naming each), which a parser that keeps the last
    value (pydantic's, orjson, json's default) would accept silently."""

    def no_constant(name: str) -> Any:
        raise _NotJson(f"Invalid JSON: {name} is not a JSON number")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_json("the body is not UTF-8") from None
    dups = _Duplicates()
    try:
        value = json.loads(text, object_pairs_hook=dups.hook, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        where = f"at line {exc.lineno} column {exc.colno}"
        raise _invalid_json(f"Invalid JSON: {exc.msg} {where}") from None
    except _NotJson as exc:
        raise _invalid_json(str(exc)) from None
    except RecursionError:
        raise _invalid_json("Invalid JSON: nested too deeply") from None
    except ValueError:  # int() past sys.get_int_max_str_digits()
        raise _invalid_json("Invalid JSON: a number has too many digits") from None
    if dups.keys:
        paths = _paths(value, dups.keys)
        raise ApiError(
            422,
            "validation_error",
            f"invalid body: {', '.join(paths)}",
            fields=[
                FieldError(field=p, message="the key appears more than once", type="duplicate_key")
                for p in paths
            ],
        )
    return value


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
    # validate=true: a fetcher's verdict first; nothing is written unless it is live.
    checked = (
        await request.app[CREDENTIALS].check_create(body, scope_customer(request))
        if parse_query(request, ValidateQuery).validate_
        else None
    )
    account, created = await request.app[ACCOUNTS].create_or_update(caller(request), body)
    account = account.model_copy(update={"credentials_check": checked})
    resp = model_response(account, 201 if created else 200)
    resp.headers["Location"] = f"/api/v1/accounts/{account.account_id}"
    return resp


def scope_customer(request: web.Request) -> str | None:
    """The one customer the caller's key is limited to (None: every customer)."""
    return caller(request).customer_filter


async def list_accounts(request: web.Request) -> web.Response:
    q = parse_query(request, AccountListQuery)
    return model_response(await request.app[ACCOUNTS].list_page(q, scope_customer(request)))


async def get_account(request: web.Request) -> web.Response:
    aid = account_id(request)
    return model_response(await request.app[ACCOUNTS].get(aid, scope_customer(request)))


async def patch_account(request: web.Request) -> web.Response:
    aid = account_id(request)
    body = await parse_body(request, AccountPatch)
    checked = (
        await request.app[CREDENTIALS].check_patch(aid, body, scope_customer(request))
        if parse_query(request, ValidateQuery).validate_
        else None
    )
    account = await request.app[ACCOUNTS].patch(caller(request), aid, body)
    return model_response(account.model_copy(update={"credentials_check": checked}))


async def delete_account(request: web.Request) -> web.Response:
    return model_response(await request.app[ACCOUNTS].delete(caller(request), account_id(request)))


async def restore_account(request: web.Request) -> web.Response:
    return model_response(await request.app[ACCOUNTS].restore(caller(request), account_id(request)))


# --- syncs ----------------------------------------------------------------------------------


async def trigger_sync(request: web.Request) -> web.Response:
    aid = account_id(request)
    body = await parse_body(request, SyncTriggerBody, optional=True)
    accepted = await request.app[SYNCS].trigger(caller(request), aid, full=body.full)
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
    return model_response(await request.app[SYNCS].get(trigger_id, scope_customer(request)))


async def list_account_syncs(request: web.Request) -> web.Response:
    aid = account_id(request)
    q = parse_query(request, JobListQuery)
    return model_response(await request.app[JOBS].for_account(aid, q, scope_customer(request)))


async def get_sync(request: web.Request) -> web.Response:
    return model_response(await request.app[JOBS].get(job_id(request), scope_customer(request)))


# --- export ---------------------------------------------------------------------------------


async def export_metrics(request: web.Request) -> web.StreamResponse:
    aid = account_id(request)
    q = parse_query(request, ExportQuery)
    return await request.app[EXPORT].stream(request, aid, q, scope_customer(request))


# --- insights -------------------------------------------------------------------------------


async def list_listings(request: web.Request) -> web.Response:
    aid = account_id(request)
    return model_response(await request.app[INSIGHTS].listings(aid, scope_customer(request)))


async def get_insights(request: web.Request) -> web.Response:
    aid = account_id(request)
    q = parse_query(request, InsightsQuery)
    return model_response(await request.app[INSIGHTS].series(aid, q, scope_customer(request)))


async def get_forward_insights(request: web.Request) -> web.Response:
    aid = account_id(request)
    q = parse_query(request, ForwardQuery)
    return model_response(await request.app[INSIGHTS].forward(aid, q, scope_customer(request)))


async def get_portfolio(request: web.Request) -> web.Response:
    q = parse_query(request, PortfolioQuery)
    return model_response(await request.app[INSIGHTS].portfolio(q, scope_customer(request)))


# --- the audit trail ------------------------------------------------------------------------


async def list_audit(request: web.Request) -> web.Response:
    q = parse_query(request, AuditQuery)
    return model_response(await request.app[AUDIT].page(q))


# --- the document ---------------------------------------------------------------------------


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_HTML], content_type="text/html")
