"""shared/airbnb/transport.py against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shared.airbnb.transport import CurlTransport


async def test_a_request_cancelled_mid_answer_leaves_the_transport_usable() -> None:
    """A fetcher stopping cancels its syncs mid-request. The transfer must leave curl's
    multi handle before its buffers go: otherwise curl writes the rest of the answer into
    freed memory and the process aborts (seen once in CI: 'ffi.from_handle() ... garbage')."""

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"x" * 4096)
            await asyncio.sleep(0.05)
        return response

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/quick", quick)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with CurlTransport(impersonate="chrome", timeout_s=10) as transport:
            sending = asyncio.create_task(
                transport.request("GET", f"http://127.0.0.1:{port}/slow", {"Accept": "*/*"})
            )
            await asyncio.sleep(0.2)  # the answer has begun
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            assert sending.cancelled()
            await asyncio.sleep(0.6)  # the server goes on sending; curl must not write
            answer = await transport.request(
                "GET", f"http://127.0.0.1:{port}/quick", {"Accept": "*/*"}
            )
            assert (answer.status, answer.body) == (200, b"ok")
    finally:
        await runner.cleanup()
