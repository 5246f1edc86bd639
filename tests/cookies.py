"""Airbnb cookies for tests that register accounts: one place that knows what intake takes.

The admin keeps only the auth group of a cookie (shared/airbnb/cookies.py), needs
``_airbed_session_id``, ``_aat`` and ``_user_attributes``, and refuses a
``_user_attributes`` that names another host than the account. :func:`auth_cookie`
builds such a cookie for any account id, its cookies in Airbnb's own order, so that
what is stored (the auth group, normalised) is the very same string.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from shared.airbnb.cookies import parse_cookie_header

# Not auth cookies: intake drops them at the door.
BOT_MANAGER = {"ak_bmsc": "BM-AK-STALE", "bm_sv": "BM-SV-STALE", "bm_sz": "BM-SZ", "_abck": "ABCK"}
ANALYTICS = {"_ga": "GA1.1.123.456", "_gcl_au": "1.1.789", "muxData": "mux_viewer_id=abc"}


def user_attributes(account_id: str) -> str:
    """The ``_user_attributes`` value as Airbnb sets it: URL-encoded JSON naming the host."""
    attrs = {"curr": "USD", "guest_exchange": 1.0, "id_str": account_id}
    return quote(orjson.dumps(attrs).decode(), safe="")


def auth_cookies(account_id: str, session: str = "secret-session") -> dict[str, str]:
    """The auth group of a logged-in host; ``session`` makes the values distinct."""
    return {
        "_airbed_session_id": f"airbed-{session}",
        "_aaj": f"aaj-{session}",
        "_aat": f"aat-{session}",
        "_user_attributes": user_attributes(account_id),
        "bev": "1700000000_abc",
    }


def header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def auth_cookie(account_id: str, session: str = "secret-session") -> str:
    """A Cookie header intake accepts for ``account_id`` and stores unchanged."""
    return header(auth_cookies(account_id, session))


def browser_cookie(account_id: str, session: str = "secret-session") -> str:
    """All three groups, as a browser sends them: analytics first, auth in between."""
    return header({**ANALYTICS, **auth_cookies(account_id, session), **BOT_MANAGER})


def as_objects(cookie: str) -> list[dict[str, Any]]:
    """The list form of a Cookie header, with the extra keys a browser's cookie API adds."""
    return [
        {
            "name": name,
            "value": value,
            "domain": ".airbnb.com",
            "path": "/",
            "expires": 1767225600,
            "httpOnly": name.startswith("_a"),
            "secure": True,
            "sameSite": "Lax",
        }
        for name, value in parse_cookie_header(cookie).items()
    ]
