"""Errors the admin API answers with, always as a JSON :class:`~services.admin.models.ErrorBody`.

Handlers and the plain classes behind them raise :class:`ApiError`; the error
middleware renders it. A pydantic ``ValidationError`` becomes a 422 that names
each field and what is wrong with it, and never echoes the input: the input may
be a cookie.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from services.admin.models import PATTERN_HINTS, ErrorBody, FieldError


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, human detail."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        fields: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.fields = list(fields) if fields is not None else None
        self.headers = headers or {}
        self.reason = reason

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=self.code, detail=self.detail, reason=self.reason, fields=self.fields
        )


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {key} does not exist")


def conflict(code: str, detail: str) -> ApiError:
    return ApiError(409, code, detail)


# What every 503 asks the client to wait before trying again: a dependency (NATS,
# PostgreSQL) is away, and a client that retries at once only adds to the load.
RETRY_AFTER_S = 5


def unavailable(code: str, detail: str) -> ApiError:
    """The one way to a 503, so that every one carries ``Retry-After``."""
    return ApiError(503, code, detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def _message(err: dict[str, object]) -> str:
    field = str(err["loc"][-1]) if err["loc"] else ""  # type: ignore[index]
    msg = str(err["msg"])
    # Only pydantic's own wording (which quotes the regex) is replaced: a validator that
    # wrote its own message for a pattern error (models._one_cookie_error) keeps it.
    if (
        err["type"] == "string_pattern_mismatch"
        and field in PATTERN_HINTS
        and msg.startswith("String should match pattern")
    ):
        return PATTERN_HINTS[field]
    return msg.removeprefix("Value error, ")


def field_error(field: str, message: str, type_: str, where: str = "body") -> ApiError:
    """The 422 of :func:`validation_error` for one field that failed a check the models
    cannot make (one that needs the database, or the path's account id)."""
    return ApiError(
        422,
        "validation_error",
        f"invalid {where}: {field}",
        fields=[FieldError(field=field, message=message, type=type_)],
    )


def validation_error(exc: ValidationError, where: str) -> ApiError:
    """422 naming every field in error; ``where`` ("body", "query") names the root."""
    fields = [
        FieldError(
            field=".".join(str(p) for p in err["loc"]) or where,
            message=_message(err),  # type: ignore[arg-type]
            type=err["type"],
        )
        # include_input=False: the rejected value (perhaps a cookie) never leaves the process.
        for err in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    names = ", ".join(dict.fromkeys(f.field for f in fields))
    return ApiError(422, "validation_error", f"invalid {where}: {names}", fields=fields)
