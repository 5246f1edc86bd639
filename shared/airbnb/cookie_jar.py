"""A browser's cookie jar for the one site a client talks to: pure, no I/O.

:class:`shared.airbnb.client.AirbnbClient` keeps an account's cookies here instead of
in curl_cffi's session jar. That jar is Python's ``http.cookiejar``: before every
request curl_cffi walks all of it (``deepvalues``) and hands each cookie to curl one by
one, and after every answer it reads curl's cookie changes back. At a thousand paced
accounts per fetcher that was about a quarter of the fetcher's CPU
(benchmarks/RESULTS.md, issue 17). Here the ``Cookie`` header is one cached string,
rebuilt only when an answer changes a cookie or one expires.

The rules are RFC 6265's, for one host:

- ``Set-Cookie``: the first ``name=value`` pair, then ``Domain``, ``Path``,
  ``Max-Age`` (wins over ``Expires``), ``Expires``, ``Secure``; attribute names are
  case-insensitive, unknown ones are ignored.
- A ``Domain`` the host does not domain-match makes the line ignored, as a browser
  does (a host-only cookie when there is none).
- ``Max-Age <= 0`` or an ``Expires`` in the past deletes the cookie; a cookie is the
  same cookie when name, domain and path are (section 5.3 step 11).
- Sent: cookies whose path matches the request's and that have not expired, ``Secure``
  ones only over HTTPS; longer paths first, then in the order they were first set
  (section 5.4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_Key = tuple[str, str, str]  # name, domain (lower case, no leading dot), path


@dataclass(slots=True)
class _Cookie:
    value: str
    expires: float  # unix time; math.inf for a session cookie
    secure: bool
    order: int  # when it was first set, for the header's order


def domain_matches(host: str, domain: str) -> bool:
    """RFC 6265 5.1.3: ``host`` is ``domain`` or ends with ``.domain``."""
    return host == domain or host.endswith("." + domain)


def path_matches(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 5.1.4."""
    if request_path == cookie_path:
        return True
    if not request_path.startswith(cookie_path):
        return False
    return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"


def default_path(request_path: str) -> str:
    """RFC 6265 5.1.4: the directory of the request's path."""
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[: request_path.rfind("/")]


class CookieJar:
    """The cookies of ``host``. Holds secrets: never log what it gives."""

    def __init__(self, host: str) -> None:
        self.host = host.lower()
        self._cookies: dict[_Key, _Cookie] = {}
        self._next_order = 0
        self._next_expiry = math.inf
        # The header per (request path, secure), until a cookie changes or expires.
        self._headers: dict[tuple[str, bool], str] = {}

    def __repr__(self) -> str:
        return f"CookieJar(host={self.host!r}, cookies={len(self._cookies)})"

    def set(self, name: str, value: str, domain: str | None = None, path: str = "/") -> None:
        """A cookie set by hand (the stored auth cookies): no expiry, not Secure-only."""
        key = (name, (domain or self.host).lstrip(".").lower(), path)
        self._store(key, value, math.inf, secure=False)

    def absorb(self, set_cookie_lines: Iterable[str], request_path: str, now: float) -> None:
        """Take in an answer's ``Set-Cookie`` lines (its request was for ``request_path``)."""
        for line in set_cookie_lines:
            self._absorb_one(line, request_path, now)

    def header(self, request_path: str, secure: bool, now: float) -> str:
        """The ``Cookie`` header for a request to ``request_path`` ("" when none)."""
        if now >= self._next_expiry:
            self._drop_expired(now)
        cached = self._headers.get((request_path, secure))
        if cached is not None:
            return cached
        chosen = sorted(
            (
                (-len(key[2]), c.order, key[0], c.value)
                for key, c in self._cookies.items()
                if path_matches(request_path, key[2]) and (secure or not c.secure)
            ),
        )
        header = "; ".join(f"{name}={value}" for _, _, name, value in chosen)
        self._headers[(request_path, secure)] = header
        return header

    def values(self, now: float) -> dict[str, str]:
        """Name to value of every live cookie (the newest-set wins a name shared by paths)."""
        if now >= self._next_expiry:
            self._drop_expired(now)
        ordered = sorted(self._cookies.items(), key=lambda kv: kv[1].order)
        return {key[0]: c.value for key, c in ordered}

    def _absorb_one(self, line: str, request_path: str, now: float) -> None:
        pair, *attributes = line.split(";")
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            return  # RFC 6265 5.2 steps 2 and 5: no '=' or an empty name
        domain = self.host
        path: str | None = None
        max_age: int | None = None
        expires: float | None = None
        secure = False
        for attribute in attributes:
            key, _, raw = attribute.partition("=")
            key, raw = key.strip().lower(), raw.strip()
            if key == "domain" and raw:
                domain = raw.lstrip(".").lower()
            elif key == "path":
                path = raw if raw.startswith("/") else None
            elif key == "max-age":
                if raw.lstrip("-").isdigit():
                    max_age = int(raw)
            elif key == "expires":
                expires = _http_date(raw)
            elif key == "secure":
                secure = True
        if not domain_matches(self.host, domain):
            return  # a browser ignores a cookie for another site
        if max_age is not None:
            expiry = now + max_age if max_age > 0 else -math.inf
        else:
            expiry = expires if expires is not None else math.inf
        cookie_key = (name, domain, path or default_path(request_path))
        if expiry <= now:
            if self._cookies.pop(cookie_key, None) is not None:
                self._headers.clear()
            return
        self._store(cookie_key, value, expiry, secure)

    def _store(self, key: _Key, value: str, expires: float, secure: bool) -> None:
        old = self._cookies.get(key)
        order = old.order if old is not None else self._next_order
        if old is None:
            self._next_order += 1
        elif old.value == value and old.secure == secure and old.expires == expires:
            return
        self._cookies[key] = _Cookie(value, expires, secure, order)
        self._next_expiry = min(self._next_expiry, expires)
        self._headers.clear()

    def _drop_expired(self, now: float) -> None:
        self._cookies = {k: c for k, c in self._cookies.items() if c.expires > now}
        self._next_expiry = min((c.expires for c in self._cookies.values()), default=math.inf)
        self._headers.clear()


def jar_of(host: str, cookies: Mapping[str, str], domain: str) -> CookieJar:
    """A jar holding ``cookies`` for ``domain``, as a browser holds a host's stored ones."""
    jar = CookieJar(host)
    for name, value in cookies.items():
        jar.set(name, value, domain=domain)
    return jar


def _http_date(value: str) -> float | None:
    """An ``Expires`` date as unix time; None when it is not a date (the attribute is
    then ignored, RFC 6265 5.2.1)."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
