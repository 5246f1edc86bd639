"""Airbnb's session lifecycle as the simulator plays it: the pure rules, and the small store.

What a real scrape of Airbnb taught (captures README, issue 11), with the numbers
the simulator uses. Time is simulated: a "day" is the simulator's today
(``SYNC_AIRBNB_TODAY`` or the UTC date), so a month of daily syncs runs in seconds.

**The browser cookie.** A logged-in browser holds three groups (see
:mod:`shared.airbnb.cookies`): auth (``_airbed_session_id``, ``_aaj``, ``_aat``,
``auth_jitney_session_id``, ``hli``, ``li``, ``_user_attributes``, ``bev``),
bot manager (``ak_bmsc``, ``bm_sv``, ``bm_sz``, ``_abck``) and analytics
(``_ga``, ``_gcl_au``, ``muxData``). :func:`browser_cookies` builds all three.

**Tokens that check themselves.** ``_aaj`` and ``bm_sv`` are
``YYYYMMDD.<nonce>.<mac>``: the issue day, a nonce, and an HMAC (key derived from
the seed) over account, session, kind, day and nonce. A restarted simulator
without a state dir therefore still knows every token it ever issued, and a
token of one account, session or kind is worthless for another.
``_airbed_session_id`` is derived from (seed, account, login generation): a new
login is a new generation and so a new session id.

**Live.** A session is live when ``_user_attributes`` names a known account,
``_aat`` matches, ``_airbed_session_id`` is the current login generation's, the
session is not revoked, it has fewer than :data:`STRIKES_TO_END` strikes, and
its ``_aaj`` is signed for this session and was issued today or yesterday
(:func:`aaj_fresh`: valid on its issue day and the next).

**Preflight.** ``GET /hosting/insights``: live -> 302 to
``/hosting/performance/conversion`` with fresh bot-manager cookies (``bm_sv``
signed for today) and a new ``_aaj``; dead -> 302 to ``/login?redirect_url=...``.

**Strikes.** A GraphQL request of a live session is a strike when it has no
``bm_sv`` signed for this session and today (``no_bm_sv``), or lacks one of the
dashboard's headers (``headers``, see :func:`header_problem`); one strike per
request, the first reason found. A struck request is answered normally (Akamai
flags silently); the third ends the session until the host logs in again.

**Rotation.** Every ``rotate_every``-th GraphQL request of a live session is
answered with a new ``_aaj`` as well (:func:`rotates`).

**Lifecycle off.** Only ``_user_attributes`` + ``_aat`` and revocation count;
the preflight still answers live (so a fetcher that preflights works), nothing
is struck or rotated.

:class:`SessionStore` keeps what must outlive a request (per account: login
generation, strikes, revoked flag, token and request counters, and the
preflight/strike counts ``/_sim/requests`` shows), in memory, or with a state dir
as one JSON file replaced atomically on every change.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.airbnb.cookies import AUTH_COOKIES

STRIKES_TO_END = 3
DEFAULT_ROTATE_EVERY = 5
AAJ = "_aaj"
BM_SV = "bm_sv"
AIRBED_SESSION_ID = "_airbed_session_id"

LIVE_LANDING = "/hosting/performance/conversion"
LOGIN_REDIRECT = "/login?redirect_url=" + quote("/hosting/insights", safe="")

# Far beyond any simulated month: simulated days pass in seconds of real time, so a
# short real Max-Age would end cookies the simulated rules still call valid.
COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Airbnb marks its auth cookies HttpOnly; page scripts read the bot-manager ones.
HTTPONLY_COOKIES = frozenset(AUTH_COOKIES)

# The dashboard's fixed-value headers on every GraphQL request (names case-insensitive).
FIXED_HEADERS: Mapping[str, str] = {
    "sec-fetch-mode": "cors",
    "sec-fetch-site": "same-origin",
    "sec-fetch-dest": "empty",
    "x-airbnb-supports-airlock-v2": "true",
    "x-niobe-short-circuited": "true",
}
NON_EMPTY_HEADERS: tuple[str, ...] = (
    "accept-language",
    "x-airbnb-client-trace-id",
    "x-client-request-id",
    "x-airbnb-api-key",
    "user-agent",
)
_CHROME_MAJOR = re.compile(r"Chrome/(\d+)")
_BRAND_VERSION = re.compile(r'"(?:Google Chrome|Chromium)";\s*v="(\d+)"')


class StrikeReason(enum.StrEnum):
    NO_BM_SV = "no_bm_sv"
    HEADERS = "headers"


class Dead(enum.StrEnum):
    """Why a session is not live (for logs and tests; never sent to a client)."""

    REVOKED = "revoked"
    OLD_LOGIN = "old_login"
    STRUCK_OUT = "struck_out"
    NO_AAJ = "no_aaj"
    STALE_AAJ = "stale_aaj"


# -- keys and tokens ------------------------------------------------------------------------


def session_key(seed: int) -> bytes:
    """The HMAC key of every token a simulator with this seed issues."""
    return hashlib.sha256(f"sync-airbnb-sim:{seed}:session-key".encode()).digest()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def airbed_session_id(key: bytes, account_id: str, generation: int) -> str:
    return _mac(key, f"airbed|{account_id}|{generation}")[:32]


def nonce(key: bytes, account_id: str, generation: int, counter: int) -> str:
    # From a counter rather than os.urandom: the same seed and history give the same tokens.
    return _mac(key, f"nonce|{account_id}|{generation}|{counter}")[:12]


def sign_token(
    key: bytes, account_id: str, session_id: str, kind: str, issue_day: date, token_nonce: str
) -> str:
    mac = _mac(key, f"{account_id}|{session_id}|{kind}|{issue_day:%Y%m%d}|{token_nonce}")
    return f"{issue_day:%Y%m%d}.{token_nonce}.{mac[:32]}"


def token_issue_day(
    key: bytes, token: str | None, account_id: str, session_id: str, kind: str
) -> date | None:
    """The day ``token`` was issued, when this simulator signed it for this session and kind."""
    if not token:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    day_text, token_nonce, _ = parts
    try:
        issue_day = datetime.strptime(day_text, "%Y%m%d").date()
    except ValueError:
        return None
    expected = sign_token(key, account_id, session_id, kind, issue_day, token_nonce)
    return issue_day if hmac.compare_digest(expected, token) else None


def aaj_fresh(issue_day: date, today: date) -> bool:
    """An ``_aaj`` is valid on the day it was issued and the next day."""
    return 0 <= (today - issue_day).days <= 1


# -- cookies --------------------------------------------------------------------------------


def _derived(key: bytes, label: str, account_id: str, generation: int, n: int = 32) -> str:
    return _mac(key, f"{label}|{account_id}|{generation}")[:n]


def auth_cookies(
    key: bytes,
    account_id: str,
    session_token: str,
    user_attributes: str,
    generation: int,
    aaj: str,
) -> dict[str, str]:
    """The auth group of a login, in Airbnb's order."""
    jitney = _derived(key, "jitney", account_id, generation)
    return {
        AIRBED_SESSION_ID: airbed_session_id(key, account_id, generation),
        AAJ: aaj,
        "_aat": session_token,
        "auth_jitney_session_id": (
            f"{jitney[:8]}-{jitney[8:12]}-{jitney[12:16]}-{jitney[16:20]}-{jitney[20:32]}"
        ),
        "hli": "1",
        "li": "1",
        "_user_attributes": user_attributes,
        "bev": f"1700000000_{session_token[:16]}",
    }


def bot_manager_cookies(
    key: bytes, account_id: str, session_id: str, today: date, counter: int
) -> dict[str, str]:
    """What a page load gets from Akamai: ``bm_sv`` signed for today, the rest plausible."""
    seen = _mac(key, f"akamai|{account_id}|{session_id}|{today}|{counter}")
    return {
        "ak_bmsc": f"{seen[:32].upper()}~000000000000000000000000000000~{seen[32:64]}",
        BM_SV: sign_token(key, account_id, session_id, "bm_sv", today, seen[:12]),
        "bm_sz": f"{seen[12:44].upper()}~YAAQ{seen[44:60]}",
        "_abck": f"{seen[:32].upper()}~0~{seen[32:]}~-1~-1~-1",
    }


def analytics_cookies(key: bytes, account_id: str) -> dict[str, str]:
    digits = str(int(_mac(key, f"ga|{account_id}")[:12], 16))
    return {
        "_ga": f"GA1.1.{digits[:10]}.1700000000",
        "_gcl_au": f"1.1.{digits[-9:]}.1700000000",
        "muxData": f"mux_viewer_id={_mac(key, f'mux|{account_id}')[:32]}&msn=0.5&sid=0",
    }


def browser_cookies(
    key: bytes,
    account_id: str,
    session_token: str,
    user_attributes: str,
    generation: int,
    today: date,
    counter: int = 0,
) -> dict[str, str]:
    """Every cookie of a browser that logged in (login ``generation``) and loaded a page today."""
    session_id = airbed_session_id(key, account_id, generation)
    aaj = sign_token(
        key, account_id, session_id, "aaj", today, nonce(key, account_id, generation, counter)
    )
    return {
        **auth_cookies(key, account_id, session_token, user_attributes, generation, aaj),
        **bot_manager_cookies(key, account_id, session_id, today, counter),
        **analytics_cookies(key, account_id),
    }


def format_cookie_header(cookies: Mapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def cookie_domain(host: str | None) -> str | None:
    """``Domain`` for a ``Set-Cookie`` answering a request to ``host`` (its Host header).

    None for an IP address or a single-label name (``localhost``, compose's
    ``simulator``): a client's jar refuses such domains, and without the attribute
    the cookie belongs to exactly that host.
    """
    if not host:
        return None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    labels = [label for label in name.split(".") if label]
    if len(labels) < 2:
        return None
    return "." + ".".join(labels[-2:])


def set_cookie_header(name: str, value: str, domain: str | None, secure: bool) -> str:
    """One ``Set-Cookie`` value; ``Secure`` only over HTTPS (clients drop it over plain http)."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={COOKIE_MAX_AGE_S}"]
    if domain:
        parts.append(f"Domain={domain}")
    if secure:
        parts.append("Secure")
    if name in HTTPONLY_COOKIES:
        parts.append("HttpOnly")
    return "; ".join(parts)


# -- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the rules need to know of an account's stored session."""

    generation: int = 0
    strikes: int = 0
    revoked: bool = False


def dead_reason(
    key: bytes,
    account_id: str,
    cookies: Mapping[str, str],
    session: SessionView,
    today: date,
) -> Dead | None:
    """None when the session is live (the account and ``_aat`` are already checked)."""
    if session.revoked:
        return Dead.REVOKED
    session_id = airbed_session_id(key, account_id, session.generation)
    if not hmac.compare_digest(cookies.get(AIRBED_SESSION_ID, ""), session_id):
        return Dead.OLD_LOGIN
    if session.strikes >= STRIKES_TO_END:
        return Dead.STRUCK_OUT
    issued = token_issue_day(key, cookies.get(AAJ), account_id, session_id, "aaj")
    if issued is None:
        return Dead.NO_AAJ
    if not aaj_fresh(issued, today):
        return Dead.STALE_AAJ
    return None


def header_problem(headers: Mapping[str, str]) -> str | None:
    """The first of the dashboard's headers missing or wrong, or None when all are there."""
    lower = {name.lower(): value for name, value in headers.items()}
    for name, value in FIXED_HEADERS.items():
        if lower.get(name, "").strip().lower() != value:
            return name
    for name in NON_EMPTY_HEADERS:
        if not lower.get(name, "").strip():
            return name
    referer = lower.get("referer", "")
    path = re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", referer, flags=re.IGNORECASE)
    if not path.startswith("/hosting/"):
        return "referer"
    chrome = _CHROME_MAJOR.search(lower["user-agent"])
    if chrome is not None:
        majors = _BRAND_VERSION.findall(lower.get("sec-ch-ua", ""))
        if chrome.group(1) not in majors:
            return "sec-ch-ua"
    return None


def strike_reason(
    key: bytes,
    account_id: str,
    session_id: str,
    cookies: Mapping[str, str],
    headers: Mapping[str, str],
    today: date,
) -> StrikeReason | None:
    """Why Akamai would flag this GraphQL request of a live session, or None."""
    if token_issue_day(key, cookies.get(BM_SV), account_id, session_id, "bm_sv") != today:
        return StrikeReason.NO_BM_SV
    if header_problem(headers) is not None:
        return StrikeReason.HEADERS
    return None


def rotates(request_number: int, every: int) -> bool:
    """Whether the ``request_number``-th (1-based) GraphQL answer of a session rotates ``_aaj``."""
    return every > 0 and request_number > 0 and request_number % every == 0


# -- the store ------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionRecord:
    generation: int = 0
    strikes: int = 0
    revoked: bool = False
    # Tokens issued in this login: the counter their nonces come from.
    issued: int = 0
    # GraphQL requests of this login, for rotation.
    requests: int = 0
    # Shown by /_sim/requests and cleared by DELETE /_sim/requests; the session's own
    # strikes above are not (clearing counts must not revive a struck session).
    preflights: int = 0
    strike_reasons: dict[str, int] = field(
        default_factory=lambda: {reason.value: 0 for reason in StrikeReason}
    )

    def view(self) -> SessionView:
        return SessionView(self.generation, self.strikes, self.revoked)


class SessionStore:
    """Per-account session state; with ``path`` it is kept in that JSON file across restarts."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._records: dict[str, SessionRecord] = {}
        if path is not None and path.is_file():
            raw: dict[str, dict[str, Any]] = json.loads(path.read_text())
            self._records = {account_id: SessionRecord(**rec) for account_id, rec in raw.items()}

    def get(self, account_id: str) -> SessionRecord:
        return self._records.get(account_id) or SessionRecord()

    def update(self, account_id: str, record: SessionRecord) -> None:
        self._records[account_id] = record
        self._save()

    def records(self) -> dict[str, SessionRecord]:
        return dict(self._records)

    def reset_counts(self) -> None:
        for account_id, rec in self._records.items():
            self._records[account_id] = dataclasses.replace(
                rec, preflights=0, strike_reasons={reason.value: 0 for reason in StrikeReason}
            )
        self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        payload = {a: dataclasses.asdict(rec) for a, rec in sorted(self._records.items())}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        # rename is atomic: a reader (or a kill -9) sees the old file or the new one.
        os.replace(tmp, self._path)
