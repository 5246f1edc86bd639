"""What a key may do, and how failed attempts are slowed: plain functions, no I/O.

The admin's keys (services/admin/auth.py authenticates them):

- ``admin``: every route; the ``ADMIN_API_KEYS`` of the environment are admin keys
  (bootstrap:1, bootstrap:2, ... by their place in the list);
- ``read``: every GET route of every customer, no write;
- ``customer`` (with a customer id): reads and writes the accounts of that customer only.
  Another customer's account is answered as if it did not exist (404), so a customer key
  cannot probe which ids exist; the filter is in the store's SQL.

A route (services/admin/routes.py) names the scope it needs, one of :data:`ROUTE_SCOPES`;
:func:`admits` says which keys that lets in.

A key is :data:`KEY_BYTES` random bytes from the operating system, written as
``sak_<base64url>``; only its sha256 is stored (migrations/0010_api_keys.sql says why a
fast, unsalted hash is right for a key of that entropy).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from services.admin.errors import field_error

KeyScope = Literal["admin", "read", "customer", "connect"]
RouteScope = Literal["public", "read", "write", "admin", "operator", "connect"]
ROUTE_SCOPES: tuple[RouteScope, ...] = get_args(RouteScope)

# Which key scopes each route scope admits. "operator" is what an operator's tooling reads
# across customers but a customer must not (Prometheus' /metrics): admin and read keys.
# "connect" routes take a connect token, never an X-API-Key.
ADMITS: dict[RouteScope, frozenset[KeyScope]] = {
    "public": frozenset({"admin", "read", "customer", "connect"}),
    "read": frozenset({"admin", "read", "customer"}),
    "write": frozenset({"admin", "customer"}),
    "admin": frozenset({"admin"}),
    "operator": frozenset({"admin", "read"}),
    "connect": frozenset({"connect"}),
}

# What the OpenAPI document says of each route scope (a sentence in each description).
SCOPE_SENTENCES: dict[RouteScope, str] = {
    "public": "Needs no key.",
    "read": "Scopes: admin, read, customer (a customer key only for its own customer's "
    "accounts; another customer's is a 404).",
    "write": "Scopes: admin, customer (a customer key only for its own customer's accounts; "
    "another customer's is a 404). A read key is refused (403).",
    "admin": "Scopes: admin only.",
    "operator": "Scopes: admin, read (a customer key is refused: 403).",
    "connect": "Authenticated by a connect token alone, not by an API key.",
}

KEY_PREFIX = "sak_"
KEY_BYTES = 32
# base64url of 32 bytes without padding is 43 characters.
KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{43}}$")
# A key's name: what `keys list` and the audit trail show. The ':' is left to the names
# the system gives (bootstrap:<n>, connect-token:<id>), so no created key can pose as one.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
CUSTOMER_PATTERN = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$")


def admits(route: RouteScope | None, key: KeyScope) -> bool:
    """Whether a key of scope ``key`` may call a route needing ``route``. None: a path no
    route serves (a 404 or 405 to come), which any valid key may learn."""
    return route is None or key in ADMITS[route]


def admitted(route: RouteScope) -> list[KeyScope]:
    """The key scopes a route admits, in a fixed order (the document's ``x-scopes``)."""
    order: tuple[KeyScope, ...] = ("admin", "read", "customer", "connect")
    return [s for s in order if s in ADMITS[route]]


def bootstrap_name(index: int) -> str:
    """The name of the ``index``-th (from 0) key of ADMIN_API_KEYS."""
    return f"bootstrap:{index + 1}"


def new_key() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip(
        "="
    )


def key_hash(key: str | bytes) -> str:
    """sha256 hex of the key as sent (its UTF-8 bytes; ``surrogateescape`` for a header that
    is not UTF-8, so that one is hashed, not a crash)."""
    raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).hexdigest()


def looks_like_key(given: str) -> bool:
    """Whether ``given`` could be a key of ours at all (no database lookup otherwise)."""
    return KEY_PATTERN.match(given) is not None


@dataclass(frozen=True, slots=True)
class KeySpec:
    scope: Literal["admin", "read", "customer"]
    customer_id: str | None


class ScopeError(ValueError):
    pass


def parse_scope(text: str) -> KeySpec:
    """``admin``, ``read`` or ``customer:<customer id>`` (the CLI's ``--scope``)."""
    if text in ("admin", "read"):
        return KeySpec(text, None)  # type: ignore[arg-type]
    kind, sep, customer = text.partition(":")
    if kind == "customer" and sep:
        if not CUSTOMER_PATTERN.match(customer):
            raise ScopeError(
                "the customer id after 'customer:' must be 1 to 200 printable ASCII "
                "characters without leading or trailing spaces"
            )
        return KeySpec("customer", customer)
    raise ScopeError(f"scope must be admin, read or customer:<customer id>, not {text!r}")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ScopeError(
            "name must be 1 to 100 characters of letters, digits, '.', '_', '@' and '-', "
            "starting with a letter or digit"
        )
    return name


# --- slowing failed authentications ---------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class FailureBuckets:
    """A token bucket of failed authentications per client address, in memory.

    A client starts with ``burst`` tokens; each failed authentication takes one, and they
    come back at ``per_minute`` a minute. A client without a whole token is refused before
    its key is even looked at (429 with Retry-After: :meth:`retry_after`), so guessing keys
    goes at ``per_minute`` a minute at most, while an operator's typo costs nothing.
    Successful requests take no token. At most ``max_clients`` buckets are kept: past it,
    full buckets (clients that stopped failing) are dropped first, then the oldest.
    """

    def __init__(
        self,
        burst: int,
        per_minute: float,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _refilled(self, client: str, now: float) -> _Bucket | None:
        b = self._buckets.get(client)
        if b is not None:
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
        return b

    def retry_after(self, client: str) -> int | None:
        """None: the client may try; else the whole seconds until it may."""
        now = self._clock()
        b = self._refilled(client, now)
        if b is None or b.tokens >= 1:
            return None
        return max(1, math.ceil((1 - b.tokens) / self.rate))

    def failed(self, client: str) -> None:
        now = self._clock()
        b = self._refilled(client, now)
        if b is None:
            self._make_room(now)
            b = self._buckets[client] = _Bucket(float(self.burst), now)
        b.tokens = max(0.0, b.tokens - 1)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_clients:
            return
        for client in [c for c, b in self._buckets.items() if self._full(b, now)]:
            del self._buckets[client]
        while len(self._buckets) >= self.max_clients:
            # dicts keep insertion order: the first is the least recently created
            del self._buckets[next(iter(self._buckets))]

    def _full(self, b: _Bucket, now: float) -> bool:
        return b.tokens + (now - b.at) * self.rate >= self.burst

    def __len__(self) -> int:
        return len(self._buckets)


# --- what a customer key may write ----------------------------------------------------------


def own_customer(scope_customer: str | None, given: str | None, *, required: bool) -> str | None:
    """The customer_id an account write stores. An admin key (``scope_customer`` None):
    the one given. A customer key: its own, whether the body names it or (``required``
    False: a create) leaves it out; another customer's id, or a null that would take the
    account out of the customer's reach, is a 422 on ``customer_id`` (the key's scope
    shapes what it may write, like any other rule on the body; the account itself was not
    looked at, so nothing is said of it)."""
    if scope_customer is None:
        return given
    if given == scope_customer or (given is None and not required):
        return scope_customer
    raise field_error(
        "customer_id",
        "a customer key writes accounts of its own customer only: leave customer_id out or "
        "give the key's own",
        "customer_mismatch",
    )
