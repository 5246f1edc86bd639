"""shared/airbnb/transport.py: what can be checked without a server (the answers
themselves are in tests/system/test_client.py and test_tls_handshake.py)."""

from __future__ import annotations

import asyncio

from shared.airbnb.transport import SAFEGUARD_INTERVAL_S, PacedAsyncCurl, parse_header_block


async def test_the_multi_handle_is_prodded_once_a_second_not_ten_times() -> None:
    """curl_cffi's AsyncCurl wakes every 0.1 s per handle; the transport's once a second.
    If curl_cffi renames the safeguard, the count here goes back to ~20."""
    multi = PacedAsyncCurl()
    calls = 0
    prod = multi.socket_action

    def counted(sockfd: int, ev_bitmask: int) -> int:
        nonlocal calls
        calls += 1
        return prod(sockfd, ev_bitmask)

    multi.socket_action = counted  # type: ignore[method-assign]
    try:
        await asyncio.sleep(2.05)
    finally:
        await multi.close()
    assert SAFEGUARD_INTERVAL_S == 1.0
    assert 1 <= calls <= 4, calls


def test_headers_of_the_last_response_lower_case_with_every_set_cookie() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/2 302\r\n"
        b"Location: /hosting/insights/conversion\r\n"
        b"Set-Cookie: _aaj=new; Path=/; Domain=.airbnb.com\r\n"
        b"set-cookie: bm_sv=x; Path=/\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"X-Folded:  spaced value \r\n"
        b"\r\n"
    )
    headers, set_cookies = parse_header_block(raw)
    assert headers["location"] == "/hosting/insights/conversion"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["x-folded"] == "spaced value"
    assert set_cookies == ["_aaj=new; Path=/; Domain=.airbnb.com", "bm_sv=x; Path=/"]
    assert "continue" not in str(headers).lower()


def test_an_interim_answer_does_not_leak_into_the_final_one() -> None:
    raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nA: 1\r\n\r\n"
    headers, set_cookies = parse_header_block(raw)
    assert headers == {"a": "1"} and set_cookies == []


async def test_the_alias_chrome_is_curl_cffis_newest_chrome() -> None:
    """A User-Agent that is not Chrome's gets the alias ``chrome``; curl itself knows
    only versioned targets."""
    from shared.airbnb.transport import CurlTransport

    async with CurlTransport(impersonate="chrome", timeout_s=1.0) as transport:
        assert transport.impersonate == "chrome"
