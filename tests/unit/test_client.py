"""The Airbnb client's pure parts: the HTTP policy (classification, backoff, Retry-After)
and the browser it presents (client hints, impersonation target, cookie domain).

The client's behaviour against scripted answers and against the simulator process is in
tests/system/test_client.py."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from services.simulator import responses as sim_responses
from services.simulator.faults import AuthForm
from shared.airbnb import browser
from shared.airbnb.client import cookie_domain
from shared.airbnb.http_policy import (
    Kind,
    backoff_delay,
    classify,
    classify_preflight,
    parse_retry_after,
)

CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)
NOW = datetime(2025, 7, 11, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("0", 0.0),
        ("3", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("86400", 120.0),
        ("Fri, 11 Jul 2025 12:00:10 GMT", 10.0),
        ("Fri, 11 Jul 2025 11:00:00 GMT", 0.0),
        ("Sat, 12 Jul 2025 12:00:00 GMT", 120.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW, cap_s=120.0) == expected


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(1)
    for attempt in range(1, 80):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        assert backoff_delay(attempt, 0.5, 30.0, lambda: 0.0) == 0.0
        assert backoff_delay(attempt, 0.5, 30.0, lambda: 0.999999) == pytest.approx(
            ceiling, rel=1e-5
        )
        assert 0 <= backoff_delay(attempt, 0.5, 30.0, rng.random) <= ceiling
    with pytest.raises(ValueError):
        backoff_delay(0, 0.5, 30.0, rng.random)


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


GOOD = _json({"data": {"porygon": {"getPerformanceComponents": {"components": []}}}})
LOGIN_HTML = b"<!DOCTYPE html><html><head><title>Log in - Airbnb</title></head></html>"


@pytest.mark.parametrize(
    ("status", "content_type", "body", "kind", "reason"),
    [
        (200, "application/json", GOOD, Kind.OK, "ok"),
        (401, "application/json", b"{}", Kind.AUTH, "http_401"),
        (403, "text/html", b"<html>Forbidden</html>", Kind.AUTH, "http_403"),
        (
            200,
            "application/json",
            _json({"errors": [{"extensions": {"errorType": "authentication_required"}}]}),
            Kind.AUTH,
            "authentication_required",
        ),
        (
            400,
            "application/json",
            _json({"errors": [{"extensions": {"errorType": "authentication_required"}}]}),
            Kind.AUTH,
            "authentication_required",
        ),
        (
            200,
            "application/json",
            _json({"data": {"porygon": {"getPerformanceComponents": None}}}),
            Kind.AUTH,
            "null_components",
        ),
        (200, "text/html; charset=utf-8", LOGIN_HTML, Kind.AUTH, "login_page"),
        (200, None, b"  <html><body><a href='/login'>x</a></body></html>", Kind.AUTH, "login_page"),
        (429, "application/json", b"{}", Kind.RATE_LIMITED, "rate_limited"),
        (503, "text/html", LOGIN_HTML, Kind.TRANSIENT, "http_5xx"),
        (500, "application/json", b"{}", Kind.TRANSIENT, "http_5xx"),
        (200, "application/json", GOOD[:20], Kind.MALFORMED, "malformed_json"),
        (200, "text/html", b"<html><body>Oops</body></html>", Kind.MALFORMED, "malformed_json"),
        (200, "application/json", b"[1, 2]", Kind.UNEXPECTED, "http_200 with a JSON list"),
        (
            400,
            "application/json",
            _json({"errors": [{"message": "PersistedQueryNotFound"}], "data": None}),
            Kind.REJECTED,
            "http_400: PersistedQueryNotFound",
        ),
        (404, "text/html", b"<html>Not found</html>", Kind.REJECTED, None),
        # What aiohttp's parser (and a front like Airbnb's) answers to a header over its limit.
        (
            400,
            "text/plain; charset=utf-8",
            b"400, message:\n  Got more than 8190 bytes when reading: Header value is too long.",
            Kind.REJECTED,
            "http_400 with a body that is not JSON",
        ),
        (431, None, b"", Kind.REJECTED, "http_431 with a body that is not JSON"),
        (413, "application/json", b"[]", Kind.REJECTED, "http_413 with a JSON list"),
        (400, "application/json", b"{}", Kind.REJECTED, "http_400: no error message"),
        (
            200,
            "application/json",
            _json({"errors": [{"message": "Listing not found"}], "data": None}),
            Kind.UNEXPECTED,
            "GraphQL error: Listing not found",
        ),
    ],
)
def test_classify(
    status: int, content_type: str | None, body: bytes, kind: Kind, reason: str | None
) -> None:
    verdict = classify(status, content_type, body)
    assert verdict.kind is kind
    if reason is not None:
        assert verdict.reason == reason
    assert (verdict.payload is not None) == (kind is Kind.OK)


def test_a_rejected_request_is_never_retried() -> None:
    assert not Kind.REJECTED.retryable


@pytest.mark.parametrize(
    ("status", "location", "kind", "reason"),
    [
        (400, None, Kind.REJECTED, "preflight http_400 at /hosting/insights"),
        (431, None, Kind.REJECTED, "preflight http_431 at /hosting/insights"),
        (404, None, Kind.REJECTED, "preflight http_404 at /hosting/insights"),
        (401, None, Kind.AUTH, "http_401"),
        (403, None, Kind.AUTH, "http_403"),
        (429, None, Kind.RATE_LIMITED, "rate_limited"),
        (503, None, Kind.TRANSIENT, "http_5xx"),
        (302, "/login?redirect_url=x", Kind.AUTH, "login_redirect"),
        (200, None, Kind.OK, "live"),
    ],
)
def test_classify_preflight(status: int, location: str | None, kind: Kind, reason: str) -> None:
    step = classify_preflight("https://www.airbnb.com/hosting/insights", status, location)
    assert (step.kind, step.reason) == (kind, reason)


@pytest.mark.parametrize("form", list(AuthForm))
def test_every_expired_form_of_the_simulator_is_an_auth_failure(form: AuthForm) -> None:
    reply = sim_responses.expired_session(form, "trace")
    assert classify(reply.status, reply.content_type, reply.body).kind is Kind.AUTH


# -- the browser the client presents -------------------------------------------------------


def test_client_hints_agree_with_the_user_agent() -> None:
    mac = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/152.0.0.0 Safari/537.36"
    )
    hints = browser.client_hints(mac)
    assert hints["Sec-CH-UA"].count('v="152"') == 2
    assert hints["Sec-CH-UA-Platform"] == '"macOS"'
    assert hints["Sec-CH-UA-Mobile"] == "?0"
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
    assert browser.client_hints(firefox) == {}
    assert "Sec-CH-UA" not in browser.graphql_headers(
        base_url="https://www.airbnb.com",
        referer="https://www.airbnb.com/hosting/",
        user_agent=firefox,
        x_client_version="v",
        api_key="k",
        trace_id="t",
    )


def test_impersonation_target_follows_the_user_agent_chrome_version() -> None:
    targets = ["chrome99", "chrome120", "chrome146", "chrome152", "safari17_0", "chrome131_android"]
    assert browser.impersonate_target(CHROME_UA, targets) == "chrome146"
    assert browser.impersonate_target(CHROME_UA.replace("146", "150"), targets) == "chrome146"
    assert browser.impersonate_target(CHROME_UA.replace("146", "90"), targets) == "chrome"
    assert browser.impersonate_target("pytest", targets) == "chrome"


def test_auth_cookies_are_scoped_to_airbnb_s_domain() -> None:
    assert cookie_domain("https://www.airbnb.com") == ".airbnb.com"
    assert cookie_domain("https://www.airbnb.co.uk") == ".airbnb.co.uk"
    assert cookie_domain("http://127.0.0.1:8080") == "127.0.0.1"
    assert cookie_domain("http://sim.internal:8080") == "sim.internal"
