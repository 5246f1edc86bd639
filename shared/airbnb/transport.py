"""One account's HTTP transport to Airbnb: a curl easy handle that impersonates Chrome.

:class:`shared.airbnb.client.AirbnbClient` sends every request of a sync through one
:class:`CurlTransport`. The handle is set up once: ``curl_easy_impersonate`` (Chrome's
TLS ClientHello, HTTP/2 settings and pseudo-header order, docs/tls-handshake.md), the
timeout, the CA file, no redirects followed, decompression. Each request then sets only
its URL, method, body and headers. curl_cffi's ``AsyncSession`` did all of it again on
every request (about 90 ``setopt`` calls, the impersonation among them) and built a
``Response``, ``Headers`` and cookie objects per answer: at a thousand paced accounts
per fetcher that was most of the fetcher's CPU (benchmarks/RESULTS.md, issue 17).

Each transport has its own multi handle, so its own connections: no two accounts ever
share a connection, as no two browsers would. The handle carries no cookies of its own
(curl's cookie engine stays off); the client's jar sets the ``Cookie`` header.

Errors: a curl timeout raises :class:`TransportTimeout`, any other failure to get an
answer :class:`TransportError`; their messages are curl's, which never hold a header.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from io import BytesIO
from types import TracebackType
from typing import Literal, Self

from curl_cffi import Curl, CurlError, CurlInfo, CurlOpt
from curl_cffi.aio import CURL_POLL_NONE, CURL_SOCKET_TIMEOUT, AsyncCurl
from curl_cffi.const import CurlECode
from curl_cffi.requests.impersonate import resolve_latest_browser_type

# libcurl gives every handle that POSTs a 64 KiB upload buffer; a GraphQL body is under
# 1 KiB, and a fetcher holds one transport per account in flight: 16 KiB (the least
# curl takes) is 36 KiB less per account.
UPLOAD_BUFFER_BYTES = 16 * 1024
# What Chrome accepts and curl can decode; curl_cffi's own default.
ACCEPT_ENCODING = b"gzip, deflate, br, zstd"
# How often the multi handle is prodded in case curl's own timer callback was missed;
# curl_cffi's AsyncCurl does it every 0.1 s.
SAFEGUARD_INTERVAL_S = 1.0


class TransportError(Exception):
    """No answer: the connection failed, TLS failed, the server hung up."""


class TransportTimeout(TransportError):
    """No answer within the transport's timeout."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One answer: what the client reads of it. ``headers`` keys are lower case (the
    last of a repeated header wins); ``set_cookies`` keeps every ``Set-Cookie``."""

    url: str
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: bytes


class PacedAsyncCurl(AsyncCurl):
    """curl_cffi's multi handle, prodded once a second instead of ten times.

    curl_cffi gives each multi handle a task that calls ``curl_multi_socket_action``
    every 0.1 s whatever the handle is doing, only as a safeguard: curl's timer callback
    is what drives transfers. At a thousand paced accounts that was 10,000 wake-ups a
    second, about a fifth of the fetcher's CPU. A missed timer now costs at most a second.
    """

    async def _force_timeout(self) -> None:
        while self._curlm:
            self.socket_action(CURL_SOCKET_TIMEOUT, CURL_POLL_NONE)
            await asyncio.sleep(SAFEGUARD_INTERVAL_S)


def parse_header_block(raw: bytes) -> tuple[dict[str, str], list[str]]:
    """The headers of the last response in ``raw`` (curl's header callback output:
    status lines and header lines, an interim 1xx answer's block included)."""
    headers: dict[str, str] = {}
    set_cookies: list[str] = []
    for line in raw.decode("latin-1").split("\r\n"):
        if line.startswith("HTTP/"):  # a new response (after a 100 Continue): start over
            headers, set_cookies = {}, []
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "set-cookie":
            set_cookies.append(value)
        headers[name] = value
    return headers, set_cookies


class CurlTransport:
    """``async with CurlTransport(impersonate=..., timeout_s=...) as t: await t.request(...)``"""

    def __init__(self, *, impersonate: str, timeout_s: float, ca_file: str | None = None) -> None:
        self.impersonate = impersonate
        self.timeout_s = timeout_s
        self._ca_file = ca_file
        self._multi: AsyncCurl | None = None
        self._curl: Curl | None = None
        self._lock = asyncio.Lock()  # one transfer at a time on the one handle

    async def __aenter__(self) -> Self:
        curl = Curl()
        # An alias ("chrome") names curl_cffi's newest target, as its session resolves it.
        target = resolve_latest_browser_type(self.impersonate)
        if curl.impersonate(target, default_headers=False) != 0:
            curl.close()
            raise ValueError(f"curl cannot impersonate {target!r}")
        curl.setopt(CurlOpt.TIMEOUT_MS, int(self.timeout_s * 1000))
        curl.setopt(CurlOpt.FOLLOWLOCATION, 0)  # hop by hop: the client follows them
        curl.setopt(CurlOpt.ACCEPT_ENCODING, ACCEPT_ENCODING)
        curl.setopt(CurlOpt.UPLOAD_BUFFERSIZE, UPLOAD_BUFFER_BYTES)
        if self._ca_file:
            curl.setopt(CurlOpt.CAINFO, self._ca_file)
        self._curl = curl
        self._multi = PacedAsyncCurl()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._multi is not None:
            await self._multi.close()
            self._multi = None
        if self._curl is not None:
            self._curl.close()
            self._curl = None

    async def request(
        self,
        method: Literal["GET", "POST"],
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> Exchange:
        """Send one request (``headers`` in the order given) and read its whole answer."""
        if self._curl is None or self._multi is None:
            raise RuntimeError("CurlTransport used outside 'async with'")
        async with self._lock:
            curl, multi = self._curl, self._multi
            content, header_block = BytesIO(), BytesIO()
            curl.setopt(CurlOpt.URL, url.encode())
            if method == "POST":
                data = body or b""
                curl.setopt(CurlOpt.POSTFIELDS, data)
                curl.setopt(CurlOpt.POSTFIELDSIZE, len(data))
            else:
                curl.setopt(CurlOpt.HTTPGET, 1)
            curl.setopt(
                CurlOpt.HTTPHEADER, [f"{name}: {value}".encode() for name, value in headers.items()]
            )
            curl.setopt(CurlOpt.WRITEDATA, content)
            curl.setopt(CurlOpt.HEADERDATA, header_block)
            try:
                await multi.add_handle(curl)
            except CurlError as exc:
                if exc.code == CurlECode.OPERATION_TIMEDOUT:
                    raise TransportTimeout(str(exc)) from None
                raise TransportError(str(exc)) from None
            except BaseException:
                # Cancelled mid-transfer (a fetcher stopping): the handle is still in the
                # multi handle, and curl would write into the buffers freed below.
                multi.remove_handle(curl)
                raise
            finally:
                # Frees this request's header list and drops the buffers' handles; the
                # impersonation and the other options stay for the next request.
                curl.clean_handles_and_buffers()
            status = curl.getinfo(CurlInfo.RESPONSE_CODE)
            effective = curl.getinfo(CurlInfo.EFFECTIVE_URL)
        answer_headers, set_cookies = parse_header_block(header_block.getvalue())
        return Exchange(
            url=effective.decode() if isinstance(effective, bytes) else url,
            status=int(status),  # type: ignore[arg-type]
            headers=answer_headers,
            set_cookies=set_cookies,
            body=content.getvalue(),
        )
