"""What an Airbnb answer means and how long to wait before asking again (pure).

:func:`classify` turns one HTTP answer (status, content type, body bytes) into a
:class:`Verdict`; :func:`backoff_delay` and :func:`parse_retry_after` compute
waits. The client in :mod:`shared.airbnb.client` does the I/O and follows the
verdicts; keeping the decisions here lets them be tested without a network.

An expired session shows itself in four ways (captures README), and every one
of them is :attr:`Kind.AUTH`: HTTP 401 or 403; a JSON body whose
``errors[].extensions.errorType`` is ``authentication_required``; a body whose
``data.porygon.getPerformanceComponents`` is explicitly ``null``; an HTML login
page instead of JSON.

Any other 4xx (400, 404, 413, 431...) is :attr:`Kind.REJECTED`: Airbnb refused the
request as sent (a header block over its size limit, a persisted query it does not
know), and the same request gets the same answer however often it is sent, so the
client raises at once and the caller fails the listing or the sync, never retries.
"""

from __future__ import annotations

import email.utils
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson

from shared.backoff import capped_backoff

AUTH_ERROR_TYPE = "authentication_required"

# Words of a login page; an HTML body without them is a broken answer, not a logout.
_LOGIN_MARKERS = re.compile(rb"log\s*in|sign\s*in|/login|authenticat", re.IGNORECASE)
_HTML_START = re.compile(rb"\s*(<!doctype html|<html|<head|<body)", re.IGNORECASE)


class Kind(enum.Enum):
    OK = "ok"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    MALFORMED = "malformed_json"
    # A 4xx that is neither an expired session nor 429: permanent for this request.
    REJECTED = "rejected"
    UNEXPECTED = "unexpected"

    @property
    def retryable(self) -> bool:
        return self in {Kind.RATE_LIMITED, Kind.TRANSIENT, Kind.MALFORMED}


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    # Short, credential-free words for logs, metrics and exception messages.
    reason: str
    payload: dict[str, Any] | None = None


def _is_html(content_type: str | None, body: bytes) -> bool:
    return "html" in (content_type or "").lower() or bool(_HTML_START.match(body[:200]))


def looks_like_login_page(content_type: str | None, body: bytes) -> bool:
    return _is_html(content_type, body) and bool(_LOGIN_MARKERS.search(body))


def graphql_error_types(payload: dict[str, Any]) -> list[str]:
    errors = payload.get("errors")
    if not isinstance(errors, list):
        return []
    types: list[str] = []
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        if isinstance(extensions, dict) and isinstance(extensions.get("errorType"), str):
            types.append(extensions["errorType"])
    return types


def graphql_error_messages(payload: dict[str, Any], limit: int = 200) -> str:
    errors = payload.get("errors")
    if not isinstance(errors, list):
        return ""
    messages = [str(e.get("message", ""))[:limit] for e in errors if isinstance(e, dict)]
    return "; ".join(m for m in messages if m)


def components_explicitly_null(payload: dict[str, Any]) -> bool:
    data = payload.get("data")
    porygon = data.get("porygon") if isinstance(data, dict) else None
    return (
        isinstance(porygon, dict)
        and "getPerformanceComponents" in porygon
        and porygon["getPerformanceComponents"] is None
    )


def status_verdict(status: int) -> tuple[Kind, str] | None:
    """What the status alone says, whatever the body: rejected, rate limited, broken."""
    if status in (401, 403):
        return Kind.AUTH, f"http_{status}"
    if status == 429:
        return Kind.RATE_LIMITED, "rate_limited"
    if status >= 500:
        return Kind.TRANSIENT, "http_5xx"
    return None


def rejected_verdict(status: int) -> tuple[Kind, str] | None:
    """A 4xx left once the expired-session forms are ruled out: Airbnb refused the request.

    Asked after :func:`status_verdict` and the body's auth checks, so that 401, 403, 429
    and an ``authentication_required`` body in a 400 keep their own meaning.
    """
    if 400 <= status < 500:
        return Kind.REJECTED, f"http_{status}"
    return None


def classify(status: int, content_type: str | None, body: bytes) -> Verdict:
    """What one HTTP answer from Airbnb means for the client."""
    if (by_status := status_verdict(status)) is not None:
        return Verdict(*by_status)
    if looks_like_login_page(content_type, body):
        return Verdict(Kind.AUTH, "login_page")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        if 200 <= status < 300:
            return Verdict(Kind.MALFORMED, "malformed_json")
        if (rejected := rejected_verdict(status)) is not None:
            return Verdict(rejected[0], f"{rejected[1]} with a body that is not JSON")
        return Verdict(Kind.UNEXPECTED, f"http_{status} with a body that is not JSON")
    if not isinstance(payload, dict):
        if (rejected := rejected_verdict(status)) is not None:
            return Verdict(rejected[0], f"{rejected[1]} with a JSON {type(payload).__name__}")
        return Verdict(Kind.UNEXPECTED, f"http_{status} with a JSON {type(payload).__name__}")
    if AUTH_ERROR_TYPE in graphql_error_types(payload):
        return Verdict(Kind.AUTH, AUTH_ERROR_TYPE)
    if components_explicitly_null(payload):
        return Verdict(Kind.AUTH, "null_components")
    if not 200 <= status < 300:
        detail = graphql_error_messages(payload) or "no error message"
        kind = Kind.REJECTED if rejected_verdict(status) is not None else Kind.UNEXPECTED
        return Verdict(kind, f"http_{status}: {detail}")
    if payload.get("data") is None:
        detail = graphql_error_messages(payload) or "no data"
        return Verdict(Kind.UNEXPECTED, f"GraphQL error: {detail}")
    return Verdict(Kind.OK, "ok", payload)


# Where Airbnb sends a browser whose session is dead.
LOGIN_PATHS = ("/login", "/authenticate", "/signup_login")
# Where a live session lands after /hosting/insights.
LIVE_PREFIX = "/hosting/"
MAX_PREFLIGHT_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class PreflightStep:
    """What one answer of the preflight's page load means.

    ``next_url`` set: a redirect to follow (kind OK). Otherwise kind OK means the
    dashboard page loaded (a live session); AUTH a login redirect or login page.
    """

    kind: Kind
    reason: str
    next_url: str | None = None


def _is_login_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in LOGIN_PATHS)


def classify_preflight(url: str, status: int, location: str | None) -> PreflightStep:
    """One hop of ``GET /hosting/insights``: follow, live, login (expired), or an error."""
    if (by_status := status_verdict(status)) is not None:
        return PreflightStep(*by_status)
    if 300 <= status < 400:
        if not location:
            return PreflightStep(Kind.UNEXPECTED, f"preflight http_{status} without Location")
        target = urljoin(url, location)
        if _is_login_path(urlsplit(target).path):
            return PreflightStep(Kind.AUTH, "login_redirect")
        return PreflightStep(Kind.OK, "redirect", target)
    path = urlsplit(url).path
    # By path, not by words: the dashboard page itself links to log-in and log-out pages.
    if _is_login_path(path):
        return PreflightStep(Kind.AUTH, "login_page")
    if 200 <= status < 300 and path.startswith(LIVE_PREFIX):
        return PreflightStep(Kind.OK, "live")
    if (rejected := rejected_verdict(status)) is not None:
        return PreflightStep(rejected[0], f"preflight {rejected[1]} at {path[:80]}")
    return PreflightStep(Kind.UNEXPECTED, f"preflight http_{status} at {path[:80]}")


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))].

    ``attempt`` is the attempt that just failed, from 1; ``rand`` returns [0, 1).
    Full jitter spreads the retries of many fetchers hit by the same outage.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    return rand() * capped_backoff(attempt, base_s, cap_s)


def parse_retry_after(value: str | None, now: datetime, cap_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped.

    None when the header is absent or unreadable; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)
