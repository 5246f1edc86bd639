"""A tiny Airbnb stand-in that answers with pre-built bodies, for ``bench_fetcher``'s transport.

``python -m benchmarks.replay_server --bodies FILE [--tls-dir DIR] [--gzip]`` listens on
an ephemeral loopback port and prints ``replay server listening on URL`` once it does.
It runs in a process of its own, so the CPU it spends answering is not the benchmark's.

``FILE`` is JSON written by ``bench_fetcher`` (:func:`write_bodies`)::

    {"answers": [[request_body, response_body], ...],
     "preflight_cookies": {name: value}, "rotations": [aaj, ...], "dashboard": html}

Routes, the ones the fetcher's client uses, shaped as the simulator's (lifecycle on):

- ``POST /api/v3/{operation}/{hash}``: the response body stored for exactly this
  request body (404 for any other), ``application/json``; every 5th answer also
  rotates ``_aaj`` with a ``Set-Cookie``, as the simulator's default
  ``SIM_AAJ_ROTATE_EVERY`` does.
- ``GET /hosting/insights``: 302 to ``/hosting/performance/conversion`` with the
  bot-manager cookies and a new ``_aaj`` (the simulator's ``Set-Cookie`` attributes).
- ``GET /hosting/performance/{tail}``: the dashboard page, 200 HTML.
- ``GET /_replay/connections``: ``{"connections": N}``, the client connections the
  GraphQL requests came over since the last call (then forgotten).

Nothing is checked (no session, no strikes): the bodies are built before the server
starts, so the server's work per request is a dictionary look-up and a write.
``--tls-dir`` serves HTTPS with the simulator's throwaway certificate
(``services.simulator.tls``, HTTP/1.1 only, like the simulator). ``--gzip`` answers
GraphQL requests that accept gzip with the body gzip-compressed (level 6, done once at
start), as Airbnb's servers compress theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from services.simulator import sessions, tls
from services.simulator.app import set_cookies

READY = "replay server listening on"
ROTATE_EVERY = sessions.DEFAULT_ROTATE_EVERY
LIVE_LANDING = sessions.LIVE_LANDING


def write_bodies(
    path: Path,
    answers: list[tuple[bytes, bytes]],
    preflight_cookies: dict[str, str],
    rotations: list[str],
    dashboard: bytes,
) -> None:
    path.write_bytes(
        orjson.dumps(
            {
                "answers": [[req.decode(), resp.decode()] for req, resp in answers],
                "preflight_cookies": preflight_cookies,
                "rotations": rotations,
                "dashboard": dashboard.decode(),
            }
        )
    )


def create_app(spec: dict[str, Any], compress: bool) -> web.Application:
    answers = {req.encode(): resp.encode() for req, resp in spec["answers"]}
    compressed = {req: gzip.compress(body, 6) for req, body in answers.items()} if compress else {}
    preflight_cookies: dict[str, str] = spec["preflight_cookies"]
    rotations = itertools.cycle(spec["rotations"])
    dashboard = spec["dashboard"].encode()
    served = itertools.count(1)
    peers: set[Any] = set()

    async def graphql(request: web.Request) -> web.Response:
        key = await request.read()
        if request.transport is not None:
            peers.add(request.transport.get_extra_info("peername"))
        body = answers.get(key)
        if body is None:
            return web.Response(status=404, text="no answer stored for this request")
        headers = {"Content-Type": "application/json"}
        if compress and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = compressed[key]
            headers["Content-Encoding"] = "gzip"
        response = web.Response(body=body, headers=headers)
        if next(served) % ROTATE_EVERY == 0:
            set_cookies(response, request, {sessions.AAJ: next(rotations)})
        return response

    async def preflight(request: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": LIVE_LANDING}, text="")
        set_cookies(response, request, preflight_cookies)
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=dashboard, content_type="text/html")

    async def stats(request: web.Request) -> web.Response:
        # Connections the GraphQL requests came over since the last call: a client that
        # does not reuse its connection shows one per request.
        count = len(peers)
        peers.clear()
        return web.json_response({"connections": count})

    app = web.Application()
    app.router.add_get("/_replay/connections", stats)
    app.router.add_post("/api/v3/{operation}/{sha256_hash}", graphql)
    app.router.add_get("/hosting/insights", preflight)
    app.router.add_get("/hosting/performance/{tail:.*}", page)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--tls-dir", type=Path, default=None)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args(argv)
    app = create_app(orjson.loads(args.bodies.read_bytes()), args.gzip)
    ssl_context = None
    if args.tls_dir is not None:
        ssl_context = tls.server_context(*tls.write_certificate(args.tls_dir))
    scheme = "https" if ssl_context is not None else "http"

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"{READY} {scheme}://127.0.0.1:{port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
