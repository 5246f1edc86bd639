"""Airbnb's cookies: which group each belongs to, and what the system keeps (pure).

A logged-in browser holds three groups of cookies for airbnb.com (captures README):

* **auth**, the host's session: ``_airbed_session_id``, ``_aaj``, ``_aat``,
  ``auth_jitney_session_id``, ``hli``, ``li``, ``_user_attributes``, ``bev``.
  This is all the system stores (encrypted) and all a sync starts from.
* **bot manager** (Akamai): ``ak_bmsc``, ``bm_sv``, ``bm_sz``, ``_abck``. Short-lived
  and issued by page loads; a copy pasted from a browser is stale by the time it
  is used, so it is dropped at the door and the fetcher's preflight gets fresh ones.
* **analytics**: everything else (``_ga*``, ``_gcl_*``, ``muxData``...), never needed.

:func:`intake` turns what an operator or a browser gives (a ``Cookie`` header
string, or the ``[{name, value}]`` list a browser's cookie API returns) into the
auth-group ``Cookie`` string that is stored, or raises :class:`CookieIntakeError`
with a message that never holds a cookie value.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import orjson

AUTH_COOKIES: tuple[str, ...] = (
    "_airbed_session_id",
    "_aaj",
    "_aat",
    "auth_jitney_session_id",
    "hli",
    "li",
    "_user_attributes",
    "bev",
)
BOT_MANAGER_COOKIES: tuple[str, ...] = ("ak_bmsc", "bm_sv", "bm_sz", "_abck")
# Without these three Airbnb cannot tell whose session it is (the system this replaces
# refused such cookies too).
REQUIRED_AUTH_COOKIES: tuple[str, ...] = ("_airbed_session_id", "_aat", "_user_attributes")
USER_ATTRIBUTES = "_user_attributes"

# The most a stored auth group may take as a Cookie header. Every request to Airbnb
# carries it in one header beside the bot-manager cookies of the preflight (1-2 KB), the
# User-Agent, the client hints and the rest, and web servers refuse a header line or
# block over about 8 KB (aiohttp's 8,190 bytes; Airbnb's front answers 400): an 8 KB
# cookie is accepted here and then refused on every request. A real session's auth
# group is well under 2 KB, so 4 KB leaves room for growth and for the other headers.
MAX_STORED_COOKIE = 4096

_AUTH = frozenset(AUTH_COOKIES)
_BOT_MANAGER = frozenset(BOT_MANAGER_COOKIES)


class CookieGroup(enum.StrEnum):
    AUTH = "auth"
    BOT_MANAGER = "bot_manager"
    ANALYTICS = "analytics"


class CookieIntakeError(ValueError):
    """A cookie the system cannot use; the message names cookies, never their values."""


def group_of(name: str) -> CookieGroup:
    if name in _AUTH:
        return CookieGroup.AUTH
    if name in _BOT_MANAGER:
        return CookieGroup.BOT_MANAGER
    return CookieGroup.ANALYTICS


def parse_cookie_header(header: str) -> dict[str, str]:
    """``name=value; name=value`` as a dict; the last of a repeated name wins.

    Not ``http.cookies.SimpleCookie``: it drops the whole header on one odd
    character, and browsers send characters it dislikes.
    """
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if sep and name:
            cookies[name] = value.strip()
    return cookies


def from_objects(items: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The ``[{name, value, ...}]`` form (a browser's cookie API) as a dict."""
    cookies: dict[str, str] = {}
    for i, item in enumerate(items):
        name, value = item.get("name"), item.get("value")
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise CookieIntakeError(f"item {i} needs a string name and a string value")
        cookies[name] = value
    return cookies


def auth_only(cookies: Mapping[str, str]) -> dict[str, str]:
    """The auth group, in Airbnb's own order (so equal sets format equally)."""
    return {name: cookies[name] for name in AUTH_COOKIES if name in cookies}


def format_cookie_header(cookies: Mapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def user_id(cookies: Mapping[str, str]) -> str | None:
    """The host id in ``_user_attributes`` (URL-encoded JSON, ``id_str``), or None."""
    raw = cookies.get(USER_ATTRIBUTES)
    if not raw:
        return None
    try:
        attrs = orjson.loads(unquote(raw))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(attrs, dict):
        return None
    value = attrs.get("id_str", attrs.get("id"))
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def intake(value: str | Sequence[Mapping[str, Any]], account_id: str) -> str:
    """The auth-group ``Cookie`` string to store for ``account_id``.

    Raises CookieIntakeError when a required auth cookie is missing or empty, when
    ``_user_attributes`` names another host (the cookie is someone else's), or when the
    auth group is longer than :data:`MAX_STORED_COOKIE` (it could never be sent).
    """
    cookies = parse_cookie_header(value) if isinstance(value, str) else from_objects(value)
    auth = auth_only(cookies)
    missing = [name for name in REQUIRED_AUTH_COOKIES if not auth.get(name)]
    if missing:
        raise CookieIntakeError(
            "is missing the auth cookie(s) " + ", ".join(missing) + " of a logged-in session"
        )
    owner = user_id(auth)
    if owner is None:
        raise CookieIntakeError("has a _user_attributes cookie without a readable id_str")
    if owner != account_id:
        raise CookieIntakeError(
            "belongs to another Airbnb host: its _user_attributes id_str is not the account_id"
        )
    stored = format_cookie_header(auth)
    if len(stored) > MAX_STORED_COOKIE:
        longest = max(auth, key=lambda name: len(auth[name]))
        raise CookieIntakeError(
            f"has auth cookies of {len(stored)} characters as a Cookie header, over the limit "
            f"of {MAX_STORED_COOKIE} (the longest is {longest}): a request carrying them would "
            "exceed Airbnb's header size limit, and a logged-in session's are far shorter"
        )
    return stored


def auth_cookies_of(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The auth group out of (name, value) pairs, e.g. a cookie jar's; the last one wins."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _AUTH:
            found[name] = value
    return auth_only(found)
