"""What the host dashboard in Chrome sends, header by header, and why (pure).

Airbnb's bot manager (Akamai) scores every request: the TLS handshake, HTTP/2's
settings and the header set all count, and requests that do not look like the
dashboard in a browser earn strikes that end the host's session. The TLS and
HTTP/2 side is curl_cffi's Chrome impersonation (:func:`impersonate_target`);
the headers are built here, so they can be tested without a network.

GraphQL requests (:func:`graphql_headers`), as the dashboard's ``fetch()`` sends them:

=====================================  ==================================================
``User-Agent``                         the browser the cookie was taken from; Airbnb ties
                                       sessions to it
``Sec-CH-UA``, ``-Mobile``,            Chrome's client hints; derived from the User-Agent
``-Platform``                          so the two always agree (a mismatch is a bot tell).
                                       Only for a Chrome User-Agent: other browsers send none
``Accept``                             ``application/json``: what the fetch asks for
``Accept-Language``                    every browser sends one; its absence is flagged
``Content-Type``                       ``application/json``
``Origin``                             the base URL: a same-origin POST
``Referer``                            the dashboard page the preflight landed on (under
                                       ``/hosting/``): the page the fetch runs in
``Sec-Fetch-Site: same-origin``,       the fetch metadata Chrome attaches to a script's
``Sec-Fetch-Mode: cors``,              request on the same site; requests without them
``Sec-Fetch-Dest: empty``              are not a browser's
``X-Airbnb-API-Key``                   the web app's public key (``AIRBNB_API_KEY``)
``X-Airbnb-GraphQL-Platform: web``     the dashboard's GraphQL client says so
``X-Airbnb-GraphQL-Platform-Client``   ``minimalist-niobe``, that client's name
``X-Airbnb-Supports-Airlock-V2: true`` the web app can answer Airbnb's challenge flow
``X-Niobe-Short-Circuited: true``      set by the web app's GraphQL client on every call
``X-CSRF-Without-Token: 1``            how the web app opts out of CSRF tokens for GraphQL
``X-Client-Version``                   the web app build the cookie was taken with
``X-Airbnb-Client-Trace-Id``           one per sync: the web app keeps one per page view
``X-Client-Request-Id``                one per request (each attempt), logged with retries
                                       so one request can be followed
=====================================  ==================================================

The preflight (:func:`navigation_headers`) is a top-level page load of
``/hosting/insights``: ``Accept: text/html...``, ``Sec-Fetch-Mode: navigate``,
``Sec-Fetch-Dest: document``, ``Sec-Fetch-Site: none`` and ``Sec-Fetch-User: ?1``
(a typed address), ``Upgrade-Insecure-Requests: 1``, and the same User-Agent,
client hints and Accept-Language. The ``Cookie`` header is never built here: the
client's cookie jar adds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Chrome's own Accept for a page load.
NAVIGATION_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
ACCEPT_ENCODING = "gzip, deflate, br, zstd"
DEFAULT_ACCEPT_LANGUAGE = "en-US,en;q=0.9"
# curl_cffi's alias for its newest Chrome target.
DEFAULT_IMPERSONATE = "chrome"

_CHROME = re.compile(r"\bChrome/(\d+)\.")
_EDGE = re.compile(r"\bEdg/(\d+)\.")
_TARGET = re.compile(r"^chrome(\d+)$")


def chrome_major(user_agent: str) -> int | None:
    """The Chrome major version of a Chromium User-Agent, or None for another browser."""
    match = _CHROME.search(user_agent)
    return int(match.group(1)) if match else None


def _platform(user_agent: str) -> str:
    if "Android" in user_agent:
        return "Android"
    if "CrOS" in user_agent:
        return "Chrome OS"
    if "Windows" in user_agent:
        return "Windows"
    if "Macintosh" in user_agent or "Mac OS X" in user_agent:
        return "macOS"
    if "Linux" in user_agent:
        return "Linux"
    return "Unknown"


def client_hints(user_agent: str) -> dict[str, str]:
    """Chrome's low-entropy client hints for this User-Agent; none for other browsers."""
    major = chrome_major(user_agent)
    if major is None:
        return {}
    edge = _EDGE.search(user_agent)
    brand = f'"Microsoft Edge";v="{edge.group(1)}"' if edge else f'"Google Chrome";v="{major}"'
    return {
        "Sec-CH-UA": f'"Chromium";v="{major}", {brand}, "Not.A/Brand";v="99"',
        "Sec-CH-UA-Mobile": "?1" if "Mobile" in user_agent else "?0",
        "Sec-CH-UA-Platform": f'"{_platform(user_agent)}"',
    }


def impersonate_target(user_agent: str, available: Iterable[str]) -> str:
    """The curl_cffi Chrome target nearest the User-Agent's version without passing it.

    The TLS and HTTP/2 fingerprint then matches the browser the headers claim; a
    User-Agent older than every target, or not Chrome at all, gets the newest Chrome.
    """
    major = chrome_major(user_agent)
    versions = sorted((int(m.group(1)), name) for name in available if (m := _TARGET.match(name)))
    if major is None or not versions:
        return DEFAULT_IMPERSONATE
    fitting = [name for version, name in versions if version <= major]
    return fitting[-1] if fitting else DEFAULT_IMPERSONATE


def graphql_headers(
    *,
    base_url: str,
    referer: str,
    user_agent: str,
    x_client_version: str,
    api_key: str,
    trace_id: str,
    accept_language: str = DEFAULT_ACCEPT_LANGUAGE,
) -> dict[str, str]:
    """Every header of a dashboard GraphQL request but the per-request id and the cookie."""
    return {
        **client_hints(user_agent),
        "User-Agent": user_agent,
        "Accept": "application/json",
        "Accept-Language": accept_language,
        "Accept-Encoding": ACCEPT_ENCODING,
        "Content-Type": "application/json",
        "Origin": base_url,
        "Referer": referer,
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Mode": "cors",
        "Sec-Fetch-Dest": "empty",
        "X-Airbnb-API-Key": api_key,
        "X-Airbnb-GraphQL-Platform": "web",
        "X-Airbnb-GraphQL-Platform-Client": "minimalist-niobe",
        "X-Airbnb-Supports-Airlock-V2": "true",
        "X-Niobe-Short-Circuited": "true",
        "X-CSRF-Without-Token": "1",
        "X-Client-Version": x_client_version,
        "X-Airbnb-Client-Trace-Id": trace_id,
    }


def navigation_headers(
    *, user_agent: str, accept_language: str = DEFAULT_ACCEPT_LANGUAGE
) -> dict[str, str]:
    """A top-level page load typed into the address bar."""
    return {
        **client_hints(user_agent),
        "Upgrade-Insecure-Requests": "1",
        "User-Agent": user_agent,
        "Accept": NAVIGATION_ACCEPT,
        "Sec-Fetch-Site": "none",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-User": "?1",
        "Sec-Fetch-Dest": "document",
        "Accept-Encoding": ACCEPT_ENCODING,
        "Accept-Language": accept_language,
    }
