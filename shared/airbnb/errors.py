"""Typed failures of the Airbnb layer. Messages never carry credentials."""

from __future__ import annotations


class AirbnbError(Exception):
    """Base of every error raised by the Airbnb layer."""


class AuthError(AirbnbError):
    """The session is expired or rejected; retrying cannot help until credentials change."""


class RateLimitedError(AirbnbError):
    """HTTP 429 that outlived the retry budget."""


class TransientError(AirbnbError):
    """Timeouts, connection errors and 5xx that outlived the retry budget."""


class UnexpectedResponseError(AirbnbError):
    """Airbnb answered with a status or body the client does not understand (4xx, not JSON)."""


class RejectedRequestError(UnexpectedResponseError):
    """A 4xx that is neither an expired session nor 429: the same request fails every time."""


class MalformedResponseError(AirbnbError):
    """A JSON response that lacks a path the flatteners need."""

    def __init__(self, path: str, detail: str = "missing") -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"malformed Airbnb response: {path}: {detail}")


class WindowError(AirbnbError, ValueError):
    """A requested slice lies outside what Airbnb serves (past today + 182 days)."""
