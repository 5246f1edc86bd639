"""The OpenAPI 3.1 document and the ``/docs`` page, both built from the route table.

Each route is declared once, as an :class:`Operation` in ``routes.py``: its
handler, its query and body models, and its responses' models. The router is
set up from that table and this module turns the same table and the same
pydantic models into the document, so the document cannot drift from what the
handlers accept and answer. ``/docs`` is Swagger UI over the document, its
assets served by the admin itself: nothing is fetched from elsewhere.
"""

from __future__ import annotations

import html
import importlib.resources
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.admin.models import ErrorBody
from services.admin.scopes import SCOPE_SENTENCES, RouteScope, admitted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REF = "#/components/schemas/{model}"
API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class Resp:
    description: str
    model: type[BaseModel] | None = None
    # Raw media types -> schema, for what is not a pydantic model (CSV, Prometheus text).
    content: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    responses: dict[int, Resp]
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    # Which keys may call it (services/admin/scopes.py): "public" needs none. Decided by
    # the route table (with settings), never by the handler; one middleware enforces it
    # (services/admin/auth.py).
    scope: RouteScope = "read"
    # Reads the database (503 when PostgreSQL is down).
    uses_db: bool = True
    path_params: dict[str, TypeAdapter[Any]] = field(default_factory=dict)
    description: str = ""

    @property
    def public(self) -> bool:
        return self.scope == "public"


RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "seconds to wait before trying again",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def _error(description: str) -> Resp:
    return Resp(description, ErrorBody)


def _responses_for(op: Operation) -> dict[int, Resp]:
    """The operation's own responses plus the ones middlewares add for it."""
    out = dict(op.responses)
    if not op.public and op.scope != "connect":
        out.setdefault(401, _error("X-API-Key is missing, not a valid key, or revoked"))
        out.setdefault(403, _error("the key's scope does not allow this operation"))
        out.setdefault(
            429,
            Resp("too many failed authentications from this address (Retry-After)", ErrorBody),
        )
    if op.body is not None:
        out.setdefault(413, _error("the request body is larger than ADMIN_MAX_BODY_BYTES"))
        out.setdefault(415, _error("the request body is not sent as application/json"))
    if op.body is not None or op.query is not None:
        out.setdefault(422, _error("the request is invalid; `fields` names each problem"))
    if op.uses_db:
        out.setdefault(503, _error("PostgreSQL (or NATS) is not reachable"))
    return dict(sorted(out.items()))


def _models(ops: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    """Every body and response model, once; query models are inlined as parameters."""
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in ops:
        if op.body is not None:
            seen[(op.body, "validation")] = None
        for resp in _responses_for(op).values():
            if resp.model is not None:
                seen[(resp.model, "serialization")] = None
    return list(seen)


def build_document(ops: list[Operation], *, title: str, version: str) -> dict[str, Any]:
    refs, defs = models_json_schema(_models(ops), ref_template=REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    def schema_ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {},
        }
        # Each operation says its scopes: the security requirement names the key scopes
        # (OpenAPI 3.1 allows role names for an apiKey scheme), x-scopes lists them and a
        # sentence of the description says it in words.
        scopes = admitted(op.scope) if op.scope != "public" else []
        item["x-scopes"] = scopes
        sentence = SCOPE_SENTENCES[op.scope]
        item["description"] = f"{op.description} {sentence}" if op.description else sentence
        if op.public:
            item["security"] = []
        elif op.scope == "connect":
            item["security"] = [{"ConnectToken": []}]
        else:
            item["security"] = [{"ApiKey": scopes}]
        params: list[dict[str, Any]] = []
        for name in re.findall(r"{(\w+)}", op.path):
            adapter = op.path_params[name]
            params.append(
                {"name": name, "in": "path", "required": True, "schema": adapter.json_schema()}
            )
        if op.query is not None:
            # Query parameters are the query model's properties, one by one; their $refs
            # (enums, nested types) point into components like everything else.
            qschema = op.query.model_json_schema(ref_template=REF)
            schemas.update(qschema.pop("$defs", {}))
            required = set(qschema.get("required", []))
            for name, prop in qschema["properties"].items():
                param: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
                if "description" in prop:
                    param["description"] = prop["description"]
                params.append(param)
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": schema_ref(op.body, "validation")}},
            }
        for status, resp in _responses_for(op).items():
            entry: dict[str, Any] = {"description": resp.description}
            if resp.model is not None:
                entry["content"] = {
                    "application/json": {"schema": schema_ref(resp.model, "serialization")}
                }
            elif resp.content is not None:
                entry["content"] = resp.content
            if status in (429, 503):  # every one carries it (errors.unavailable, auth)
                entry["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
            item["responses"][str(status)] = entry
        paths.setdefault(op.path, {})[op.method.lower()] = item

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The operator's API of sync-airbnb: accounts, sync triggers, job "
            f"status and metrics export. Every operation needs the `{API_KEY_HEADER}` header "
            "unless it says otherwise. A key has a scope: admin (everything), read (every "
            "GET, no write) or customer (the accounts of its customer only; another "
            "customer's account is a 404, as if it did not exist); each operation lists the "
            "scopes it admits in its security requirement and in `x-scopes`. 401: no key, "
            "or a key that is not valid or revoked; 403 `insufficient_scope`: a valid key "
            "whose scope the operation does not admit; 429: too many failed "
            "authentications from one address (Retry-After).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                # POST /connect's: a connect token (services/admin/connect.py), no API key.
                "ConnectToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiKey": []}],
    }


# --- /docs ----------------------------------------------------------------------------------

# Swagger UI's files, shipped by the swagger-ui-py wheel (swagger-ui-dist 5, which renders
# OpenAPI 3.1; the 4.x of swagger-ui-bundle shows "Unable to render this definition").
# Found by name so that nothing here imports the package's framework handlers.
DOCS_STATIC = "/docs/static"
DOCS_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js")


def swagger_ui_dir() -> Path:
    return Path(str(importlib.resources.files("swagger_ui") / "static"))


def render_docs(doc: dict[str, Any], *, openapi_url: str) -> str:
    """Swagger UI's page over the document, every asset from ``DOCS_STATIC``."""
    e = html.escape
    info = doc["info"]
    config = orjson.dumps(
        {
            "url": openapi_url,
            "dom_id": "#swagger-ui",
            "deepLinking": True,
            # no call to the public validator: nothing leaves the machine
            "validatorUrl": None,
            "persistAuthorization": False,
        }
    ).decode()
    # "</" cannot close the script from inside the JSON.
    config = config.replace("</", "<\\/")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(info['title'])} {e(info['version'])}</title>"
        f"<link rel=stylesheet href='{DOCS_STATIC}/swagger-ui.css'>"
        "<link rel=icon href='data:,'></head>"
        "<body><div id=swagger-ui></div>"
        f"<script src='{DOCS_STATIC}/swagger-ui-bundle.js'></script>"
        f"<script>window.ui = SwaggerUIBundle(Object.assign({config}, "
        "{presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout'}));</script>"
        "</body></html>"
    )
