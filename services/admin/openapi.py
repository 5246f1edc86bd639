"""The OpenAPI 3.1 document and the ``/docs`` page, both built from the route table.

Each route is declared once, as an :class:`Operation` in ``routes.py``: its
handler, its query and body models, and its responses' models. The router is
set up from that table and this module turns the same table and the same
pydantic models into the document, so the document cannot drift from what the
handlers accept and answer. ``/docs`` renders the document as a plain HTML page
on the server: no script and nothing fetched from elsewhere.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.admin.models import ErrorBody

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
    # Needs no X-API-Key. Decided by the route table (with settings), never by the handler.
    public: bool = False
    # Reads the database (503 when PostgreSQL is down).
    uses_db: bool = True
    path_params: dict[str, TypeAdapter[Any]] = field(default_factory=dict)
    description: str = ""


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
    if not op.public:
        out.setdefault(401, _error("X-API-Key is missing"))
        out.setdefault(403, _error("X-API-Key is not a valid key"))
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
        if op.description:
            item["description"] = op.description
        if op.public:
            item["security"] = []
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
            if status == 503:  # every 503 carries it (services.admin.errors.unavailable)
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
            "unless it says otherwise.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            },
        },
        "security": [{"ApiKey": []}],
    }


# --- /docs ----------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:62rem;padding:0 1rem;color:#222}
h2{margin-top:2rem;border-bottom:1px solid #ddd}
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.m{font-weight:700;display:inline-block;min-width:4.5rem}
.GET{color:#1769aa}.POST{color:#2e7d32}.PATCH{color:#a15c00}.DELETE{color:#b71c1c}
code,pre{background:#f5f5f5;border-radius:4px;padding:0 .25rem}
pre{padding:.5rem;overflow:auto;font-size:13px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
"""


def _schema_text(schema: dict[str, Any]) -> str:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode()


def render_docs(doc: dict[str, Any]) -> str:
    """The document as one self-contained HTML page; every value is escaped."""
    e = html.escape
    info = doc["info"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{e(info['title'])} {e(info['version'])}</title><style>{_STYLE}</style></head>",
        f"<body><h1>{e(info['title'])} <small>{e(info['version'])}</small></h1>",
        f"<p>{e(info['description'])}</p>",
        "<p>Machine-readable: <a href='/api/v1/openapi.json'><code>/api/v1/openapi.json</code>"
        "</a> (OpenAPI 3.1).</p>",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((path, method.upper(), op))
    for tag, ops in by_tag.items():
        parts.append(f"<h2>{e(tag)}</h2>")
        for path, method, op in ops:
            key = "no key" if op.get("security") == [] else f"needs {API_KEY_HEADER}"
            parts.append(
                f"<div class=op id='{e(op['operationId'])}'><span class='m {method}'>"
                f"{method}</span> <code>{e(path)}</code> — {e(op['summary'])} <small>({key})"
                "</small>"
            )
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            if op.get("parameters"):
                parts.append("<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>")
                for p in op["parameters"]:
                    req = " (required)" if p.get("required") else ""
                    parts.append(
                        f"<tr><td><code>{e(p['name'])}</code>{req}</td><td>{e(p['in'])}</td>"
                        f"<td><code>{e(_schema_text(p['schema']))}</code></td></tr>"
                    )
                parts.append("</table>")
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                parts.append(
                    f"<p>Body: <code>{e(schema.get('$ref', '').rsplit('/', 1)[-1])}</code></p>"
                )
            codes = ", ".join(
                f"{e(code)} {e(r['description'])}" for code, r in op["responses"].items()
            )
            parts.append(f"<p><small>Responses: {codes}</small></p></div>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        parts.append(
            f"<h3 id='schema-{e(name)}'>{e(name)}</h3><pre>{e(_schema_text(schema))}</pre>"
        )
    parts.append("</body></html>")
    return "".join(parts)
