"""The HTTP/1.1 protocol every service serves with: aiohttp's, answering its own errors as
JSON like the applications do.

A request the parser refuses (an unknown method, a malformed header) never reaches the
application, so no middleware sees it, and aiohttp has no hook for that answer
(aio-libs/aiohttp#3287, open): its protocol writes a plain-text page quoting the request's
raw bytes. ``shared.runtime.serve`` runs every app with :class:`JsonErrorRunner`, whose
connections answer those as JSON instead. (``aiohttp_client`` in tests runs aiohttp's own
runner: what this module changes is seen on a real process only.)
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("sync_airbnb.runtime")

# What the protocol answers for a request that never reached the application; no detail
# comes from the request (aiohttp's own page quotes its raw bytes, headers and all).
_PROTOCOL_ERRORS = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    501: ("not_implemented", "the request method is not one this server implements"),
    504: ("timeout", "the request took too long"),
}


class JsonErrorProtocol(RequestHandler):
    """aiohttp's protocol with its error answers (parser refusals, a 500 or 504 outside
    the app's middlewares) as JSON.

    An unknown method is 501, as RFC 9110 9.1 says for a method the server does not
    recognise: aiohttp's parser knows every registered method (those reach the router,
    whose 405 says Allow) and refuses any other before a path is even routed.
    """

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp does: part of a response is out, so no other answer can follow.
            raise ConnectionError("a response was already under way")
        if isinstance(exc, BadHttpMethod):
            status = 501
        if status == 500:
            log.error("unhandled error serving %s", request.remote, exc_info=exc)
        else:
            # The class only: the parser's message quotes the request's raw bytes, and
            # those may be a cookie or a key.
            log.info(
                "refused a request from %s before the application: %s (%s)",
                request.remote,
                status,
                type(exc).__name__ if exc is not None else "timeout",
            )
        code, detail = _PROTOCOL_ERRORS.get(
            status, ("internal_error", "unexpected error; see the service log")
        )
        resp = web.Response(
            body=orjson.dumps({"error": code, "detail": detail}),
            status=status,
            content_type="application/json",
        )
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        # web.Server.__call__ with the protocol above (aiohttp takes no protocol class).
        return JsonErrorProtocol(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use :class:`JsonErrorProtocol`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's own server (its handler, request factory and handler_args), with
        # only the protocol factory replaced; the subclass adds no state.
        server.__class__ = _JsonErrorServer
        return server
