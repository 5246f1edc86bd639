"""The admin API's request and response bodies, as pydantic models.

These models are the single source of the contract: handlers validate with
them, responses are dumped through them, and ``openapi.py`` builds the OpenAPI
document from their JSON schemas. A constraint lives here once (a ``pattern``,
a length, a bound), so the document and the validation cannot disagree.

Patterns are ASCII-only on purpose: the cookie, the client version and the user
agent go into HTTP headers sent to Airbnb, so control characters (header
injection) and NUL (which PostgreSQL text refuses) are rejected at the edge.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.messages import JobStatus, SyncKind
from shared.metric_tables import TableName

# Airbnb's user ids are positive integers written without leading zeros: "0007" and "7"
# would be two accounts of one host, and "0" is no host at all.
ACCOUNT_ID_PATTERN = r"^[1-9][0-9]{0,31}$"
# Printable ASCII, no leading or trailing space.
PRINTABLE_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
# A Cookie header (printable ASCII) holding a non-empty `_user_attributes` cookie, which
# Airbnb needs to tell whose insights to return.
COOKIE_PATTERN = r"^([\x20-\x3a\x3c-\x7e]*;)* *_user_attributes=[\x21-\x3a\x3c-\x7e][\x20-\x7e]*$"

# One cookie of the list form: a name is a token (no space, '=' or ';'); a value is
# printable ASCII without ';' (it is joined into a Cookie header) and without edge spaces
# (a Cookie header would lose them), possibly empty.
COOKIE_NAME_PATTERN = r"^[\x21-\x3a\x3c\x3e-\x7e]+$"
COOKIE_VALUE_PATTERN = r"^([\x21-\x3a\x3c-\x7e]([\x20-\x3a\x3c-\x7e]*[\x21-\x3a\x3c-\x7e])?)?$"
MAX_COOKIE_HEADER = 8192
# A logged-in airbnb.com holds some 40 cookies; 200 leaves room without being unbounded.
MAX_COOKIE_ITEMS = 200

# What a 422 says instead of pydantic's "String should match pattern '...'"; keyed by field.
PATTERN_HINTS: dict[str, str] = {
    "account_id": "must be Airbnb's numeric user id: 1 to 32 digits, not starting with 0",
    "airbnb_cookie": "must be a Cookie header (printable ASCII) holding the _user_attributes "
    "cookie with a value, or a list of {name, value} objects",
    "name": "must be a cookie name: printable ASCII without spaces, '=' or ';'",
    "value": "must be a cookie value: printable ASCII without ';' or leading/trailing spaces",
    "x_client_version": "must be printable ASCII without leading or trailing spaces",
    "user_agent": "must be printable ASCII without leading or trailing spaces",
    "customer_id": "must be printable ASCII without leading or trailing spaces",
}

MAX_PAGE_SIZE = 500
# Bounded so that OFFSET never overflows PostgreSQL's bigint (a 500, not a 422).
MAX_OFFSET = 1_000_000_000

AccountId = Annotated[str, StringConstraints(pattern=ACCOUNT_ID_PATTERN)]
CookieHeader = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_COOKIE_HEADER, pattern=COOKIE_PATTERN)
]
CookieName = Annotated[str, StringConstraints(max_length=256, pattern=COOKIE_NAME_PATTERN)]
CookieValue = Annotated[str, StringConstraints(max_length=4096, pattern=COOKIE_VALUE_PATTERN)]
ClientVersion = Annotated[str, StringConstraints(max_length=200, pattern=PRINTABLE_PATTERN)]
UserAgent = Annotated[str, StringConstraints(max_length=1000, pattern=PRINTABLE_PATTERN)]
CustomerId = Annotated[str, StringConstraints(max_length=200, pattern=PRINTABLE_PATTERN)]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Offset = Annotated[int, Field(ge=0, le=MAX_OFFSET, description="rows to skip")]


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _optional(**kwargs: Any) -> Any:
    """Absent means "leave as it is": the default None is internal, not part of the schema
    (which would otherwise say ``default: null`` for a field that must not be null)."""
    return Field(default=None, json_schema_extra=_drop_default, **kwargs)


def _cookie_field(description: str, *, required: bool = False) -> Any:
    # repr=False and exclude=True: the cookie never shows in a repr (a log line, a traceback)
    # nor in model_dump(); code reads the attribute explicitly, once, to encrypt it.
    if required:
        return Field(repr=False, exclude=True, description=description)
    return _optional(repr=False, exclude=True, description=description)


class CookieItem(BaseModel):
    """One cookie as a browser's cookie API returns it (``chrome.cookies.getAll``,
    ``document.cookie`` parsed, a devtools export): only name and value are used, and the
    other keys such an API returns (domain, path, expires, httpOnly...) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: CookieName
    value: CookieValue = Field(repr=False)


CookieList = Annotated[list[CookieItem], Field(min_length=1, max_length=MAX_COOKIE_ITEMS)]


def _one_cookie_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One error for ``airbnb_cookie``, named after the field alone and holding no value.

    Without it a union reports each member's failure under a member tag
    (``airbnb_cookie.constrained-str``, ``airbnb_cookie.list[CookieItem].0.value``), which
    says less to the operator than the form they used and the item that is wrong.
    """
    try:
        return handler(value)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
        in_list = [e for e in errors if str(e["loc"][0]).startswith("list[")]
        if isinstance(value, str):
            err = next(e for e in errors if e not in in_list)
            reason = _hint("airbnb_cookie", err)
        elif isinstance(value, list):
            err = in_list[0]
            rest = err["loc"][1:]
            if not rest:
                reason = _hint("", err)
            else:
                where = f"item {rest[0]}" + (f" {'.'.join(map(str, rest[1:]))}" if rest[1:] else "")
                reason = f"{where}: {_hint(str(rest[-1]), err)}"
        else:
            raise PydanticCustomError(
                "cookie_type",
                "must be a Cookie header string or a list of name/value objects",
            ) from None
        # The reason goes in as context: a template would take its braces for placeholders.
        raise PydanticCustomError(err["type"], "{reason}", {"reason": reason}) from None


def _hint(field: str, err: Any) -> str:
    if err["type"] == "string_pattern_mismatch" and field in PATTERN_HINTS:
        return PATTERN_HINTS[field]
    return str(err["msg"])


# A Cookie header string, or the list form; every account write takes either.
AirbnbCookie = Annotated[CookieHeader | CookieList, WrapValidator(_one_cookie_error)]


class Body(BaseModel):
    """A request body: unknown fields are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- accounts -----------------------------------------------------------------------------


class AccountCreate(Body):
    """Create an account, or update the one with this account_id."""

    account_id: AccountId = Field(description="the Airbnb host's user id (digits)")
    airbnb_cookie: AirbnbCookie = _cookie_field(
        "the Airbnb session's cookies: a Cookie header, or a list of {name, value} objects "
        "(a browser's cookie API; other keys are ignored). Only the auth cookies are kept "
        "(_airbed_session_id, _aat and _user_attributes are required, and _user_attributes "
        "must name this account_id), stored encrypted, never returned",
        required=True,
    )
    x_client_version: ClientVersion = Field(description="Airbnb's X-Client-Version header")
    user_agent: UserAgent = Field(description="the browser User-Agent that goes with the cookie")
    customer_id: CustomerId | None = Field(default=None, description="your own customer id")
    is_active: bool = Field(default=True, description="false: kept, but never synced")


class AccountPatch(Body):
    """Change some fields; absent fields stay as they are, ``customer_id: null`` clears it.

    Only customer_id may be null: the other fields are required columns, so a null is
    a type error (422), not a silent no-op.
    """

    airbnb_cookie: AirbnbCookie = _cookie_field(
        "new cookies, in either form of AccountCreate.airbnb_cookie; when they differ from "
        "the stored ones they replace them, bump credentials_version and clear the "
        "needs-new-credentials mark"
    )
    x_client_version: ClientVersion = _optional()
    user_agent: UserAgent = _optional()
    customer_id: CustomerId | None = None
    is_active: bool = _optional()


class ValidateQuery(Query):
    validate_: bool = Field(
        default=False,
        alias="validate",
        description="true: a fetcher tries `airbnb_cookie` against Airbnb first (its preflight "
        "and one ListingsSectionQuery), and nothing is saved unless the session is live "
        "(422 credentials_rejected, or 503 with Retry-After when no fetcher answers). "
        "Ignored when the body carries no airbnb_cookie",
    )


class CredentialsCheckOut(Out):
    outcome: Literal["live"] = Field(description="the session works (others are a 422)")
    listings: int = Field(description="the listings Airbnb reports for the session")


class AccountOut(Out):
    account_id: str
    customer_id: str | None
    x_client_version: str
    user_agent: str
    is_active: bool
    needs_credentials: bool = Field(
        description="Airbnb rejected the session; sync resumes when the cookie changes"
    )
    credentials_invalid_at: dt.datetime | None
    credentials_error: str | None
    credentials_version: int = Field(
        description="1 at creation, +1 on every change of the stored cookies: new ones "
        "given through this API, or rotated ones a sync saved back"
    )
    credentials_rotated_at: dt.datetime | None = Field(
        description="when a sync last saved back cookies Airbnb rotated (null: never)"
    )
    last_sync_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None
    credentials_check: CredentialsCheckOut | None = Field(
        default=None,
        description="what a fetcher found of the cookie, in the answer to a write with "
        "validate=true that carried one; null otherwise",
    )


class AccountListQuery(Query):
    limit: Limit = 50
    offset: Offset = 0
    active: bool | None = Field(default=None, description="only active (true) or inactive")
    deleted: bool = Field(
        default=False, description="false: live accounts only; true: soft-deleted ones only"
    )
    customer_id: CustomerId | None = None


class AccountPage(Out):
    items: list[AccountOut]
    total: int
    limit: int
    offset: int


# --- syncs --------------------------------------------------------------------------------


class SyncTriggerBody(Body):
    full: bool = Field(default=False, description="re-fetch the first-run window")


TriggerStatus = Literal["pending", "refused"] | JobStatus


class TriggerLinks(Out):
    trigger: str = Field(description="this trigger: follow it until it has a job")
    job: str | None = Field(description="its job, once the scheduler queued it")


class TriggerOut(Out):
    """A manual trigger: stored in JetStream, then handled by a scheduler.

    ``pending`` until a scheduler handled it (none may be running: it is handled when one
    starts); then its job's status with ``job_id``, or ``refused`` with ``error``.
    """

    trigger_id: uuid.UUID
    account_id: str
    full: bool
    requested_at: dt.datetime
    status: TriggerStatus
    handled_at: dt.datetime | None = None
    job_id: uuid.UUID | None = None
    error: str | None = Field(
        default=None,
        description="when refused: not_found, deleted, inactive, needs_credentials, "
        "invalid_request",
    )
    detail: str | None = None
    links: TriggerLinks


class ListingError(Out):
    listing_id: str
    error: str | None


class JobListingOut(Out):
    listing_id: str
    status: Literal["pending", "committed", "failed"]
    chunks_expected: int | None
    chunks_committed: int
    rows_written: int
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobOut(Out):
    job_id: uuid.UUID
    account_id: str
    kind: SyncKind
    trigger: str
    status: JobStatus
    scrape_day: dt.date
    window_start: dt.date
    window_end: dt.date
    listings_total: int | None
    listings_succeeded: int
    listings_failed: int
    listings_pending: int | None = Field(description="null until the fetcher announced them")
    rows_written: int
    error: str | None
    errors: list[ListingError] = Field(description="the listings that failed, and why")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime
    duration_s: float | None = Field(description="started to finished (or to now while running)")


class JobDetail(JobOut):
    listings: list[JobListingOut]


class JobListQuery(Query):
    limit: Limit = 20
    offset: Offset = 0


class JobPage(Out):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


# --- export -------------------------------------------------------------------------------


# pydantic reads a number given for a date or a time, even as text ("0", "86400"), as a Unix
# timestamp, so ?as_of=0 was 1970-01-01. A query's dates are ISO dates only (the document's
# format: date), its times never a bare number (format: date-time).
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")


def _iso_date(value: object) -> object:
    if isinstance(value, (int, float)) or (
        isinstance(value, str) and not _ISO_DATE.fullmatch(value)
    ):
        raise PydanticCustomError("date_parsing", "Input should be a date, YYYY-MM-DD")
    return value


def _not_a_timestamp(value: object) -> object:
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise PydanticCustomError(
            "datetime_parsing", "Input should be a time in RFC 3339, not a number"
        )
    return value


QueryDate = Annotated[dt.date, BeforeValidator(_iso_date)]


class ExportQuery(Query):
    """An inclusive date range of one table; chart_query filters on metric_date, the others
    on window_start. The span limit is EXPORT_MAX_DAYS, checked by the handler."""

    start_date: QueryDate
    end_date: QueryDate
    format: Literal["csv", "json"] = "csv"
    table: TableName = "chart_query"

    @field_validator("end_date")
    @classmethod
    def _ordered(cls, end: dt.date, info: ValidationInfo) -> dt.date:
        # On end_date, so that the 422 names the field; start_date is validated first.
        start = info.data.get("start_date")
        if start is not None and start > end:
            raise ValueError("must not be before start_date")
        return end


# --- insights (docs/insights.md) ---------------------------------------------------------

# The chart_query metrics the read API serves, by column stem, and what kind each is: a
# count is summed over a period, a rate is never (see AGGREGATION_DOC).
MetricName = Literal["p3_impressions", "conversion_rate"]
MetricKind = Literal["count", "rate"]
Granularity = Literal["day", "week", "month"]
PointSource = Literal["daily", "sum_of_days", "airbnb_window", "view_weighted"]
PortfolioFlag = Literal[
    "page_views_7d", "page_views_28d", "conversion_rate_7d", "conversion_rate_28d"
]
# Airbnb's listing ids are numbers; any printable id is looked up (404 when unknown).
ListingId = Annotated[str, StringConstraints(max_length=64, pattern=PRINTABLE_PATTERN)]
# About three years: one request stays one bounded query (a point per day at most).
MAX_INSIGHTS_DAYS = 1096
MAX_FORWARD_DAYS = 366
# The dates the read API takes: wide enough for any data Airbnb has (it opened in 2008),
# narrow enough that a period's week or month and the portfolio's 56 days never step
# outside Python's dates (0001..9999), which would be a 500.
FIRST_DATE = dt.date(1970, 1, 1)
LAST_DATE = dt.date(2999, 12, 31)
ReadDate = Annotated[dt.date, Field(ge=FIRST_DATE, le=LAST_DATE), BeforeValidator(_iso_date)]

AGGREGATION_DOC = (
    "Each date's value is the latest scrape on or before `as_of` (no `as_of`: the latest). "
    "Counts (p3_impressions: page views) are summed over a period. A rate "
    "(conversion_rate) over a week or month is Airbnb's own figure for that window where "
    "one was scraped that covers the period exactly (list_of_metrics, else chart_summary; "
    "one listing, unclipped periods only), else the mean of the daily rates weighted by "
    "that day's page views (own by own views, similar by similar views), never a plain "
    "mean. Weeks are ISO weeks, Monday..Sunday: Airbnb's 7-day windows (Sunday..Saturday "
    "in its own numbering, which is one day off the chart's dates) cover exactly "
    "Monday..Sunday of the chart's dates, so a weekly rate can be Airbnb's figure. Months "
    "are calendar months. Periods are clipped to [from, to]; periods without data are "
    "left out. Without `listing_id` the account's listings are combined per day: counts "
    "summed, rates weighted by each listing-day's page views."
)


def _span_error(start: dt.date | None, end: dt.date, max_days: int, start_name: str) -> None:
    """Raised on the end field, so that the 422 names it; the start is validated first."""
    if start is None:
        return
    if start > end:
        raise ValueError(f"must not be before {start_name}")
    if (end - start).days + 1 > max_days:
        raise PydanticCustomError(
            "range_too_long",
            "the range spans {days} days; at most {max_days} are allowed",
            {"days": (end - start).days + 1, "max_days": max_days},
        )


class InsightsQuery(Query):
    metric: MetricName = Field(
        description="p3_impressions (page views, a count) or conversion_rate (a rate)"
    )
    from_: ReadDate = Field(alias="from", description="first date (chart date), inclusive")
    to: ReadDate = Field(
        description=f"last date, inclusive; at most {MAX_INSIGHTS_DAYS} days from `from`"
    )
    granularity: Granularity = Field(
        default="day", description="day, ISO week (Monday..Sunday) or calendar month"
    )
    listing_id: ListingId | None = _optional(
        description="one listing; absent: all the account's listings combined"
    )
    as_of: ReadDate | None = _optional(
        description="each date's value as the latest scrape on or before this day showed it"
    )

    @field_validator("to")
    @classmethod
    def _range(cls, to: dt.date, info: ValidationInfo) -> dt.date:
        _span_error(info.data.get("from_"), to, MAX_INSIGHTS_DAYS, "from")
        return to


class InsightPoint(Out):
    period_start: dt.date = Field(description="first day of the period, clipped to `from`")
    period_end: dt.date = Field(description="last day of the period, clipped to `to`")
    days: int = Field(description="days of the period with data")
    own: int | float | None
    similar: int | float | None
    own_source: PointSource | None = Field(
        description="daily: the day's value (listings combined without listing_id); "
        "sum_of_days: a count summed; airbnb_window: Airbnb's figure for the window; "
        "view_weighted: daily rates weighted by page views"
    )
    similar_source: PointSource | None
    scraped_at: dt.datetime = Field(description="the latest scrape among the rows used")


class InsightsOut(Out):
    # "from" is a Python keyword: the field is from_, spelled "from" on the wire.
    model_config = ConfigDict(frozen=True, serialize_by_alias=True, validate_by_name=True)

    account_id: str
    listing_id: str | None
    metric: MetricName
    kind: MetricKind
    granularity: Granularity
    from_: dt.date = Field(alias="from")
    to: dt.date
    as_of: dt.date | None
    aggregation: str = Field(description="the rule these points follow, in one sentence")
    points: list[InsightPoint]


class ForwardQuery(Query):
    listing_id: ListingId
    stay_from: ReadDate = Field(description="first stay date, inclusive")
    stay_to: ReadDate = Field(
        description=f"last stay date, inclusive; at most {MAX_FORWARD_DAYS} days"
    )
    metric: MetricName = "p3_impressions"

    @field_validator("stay_to")
    @classmethod
    def _range(cls, stay_to: dt.date, info: ValidationInfo) -> dt.date:
        _span_error(info.data.get("stay_from"), stay_to, MAX_FORWARD_DAYS, "stay_from")
        return stay_to


class ForwardScrape(Out):
    scraped_at: dt.datetime
    lead_days: int = Field(description="stay date minus the scrape day (negative: after it)")
    own: int | float | None
    similar: int | float | None
    own_change: int | float | None = Field(
        description="own minus the previous scrape's own; null for the first scrape"
    )
    similar_change: int | float | None


class ForwardStayDate(Out):
    stay_date: dt.date
    scrapes: list[ForwardScrape] = Field(description="every scrape of the date, oldest first")


class ForwardOut(Out):
    account_id: str
    listing_id: str
    metric: MetricName
    kind: MetricKind
    stay_dates: list[ForwardStayDate] = Field(description="ascending; dates without rows left out")


class PortfolioQuery(Query):
    customer_id: CustomerId | None = _optional(description="absent: every account")
    drop_threshold: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="flag a listing whose own figure fell by more than this share "
        "(0.2: more than 20 %) from the prior period",
    )
    as_of: ReadDate | None = _optional(
        description="each date's value as the latest scrape on or before this day showed it"
    )
    end: ReadDate | None = _optional(
        description="last day of the periods; absent: the admin's today (SYNC_AIRBNB_TODAY "
        "when set, else the UTC date) minus one day"
    )


class PeriodFigures(Out):
    last_7: int | float | None = Field(description="[end-6, end]")
    prior_7: int | float | None = Field(description="[end-13, end-7]")
    last_28: int | float | None = Field(description="[end-27, end]")
    prior_28: int | float | None = Field(description="[end-55, end-28]")
    change_7: float | None = Field(
        description="(last_7 - prior_7) / prior_7; null when prior_7 is null or 0"
    )
    change_28: float | None


class SideFigures(Out):
    own: PeriodFigures
    similar: PeriodFigures


class Trend(Out):
    start: dt.date = Field(description="end - 27")
    page_views: list[int | None] = Field(description="28 days of own page views, oldest first")


class PortfolioListing(Out):
    account_id: str
    customer_id: str | None
    airbnb_listing_id: str
    airbnb_internal_name: str | None
    listing_name: str | None
    page_views: SideFigures = Field(description="sums over each period")
    conversion_rate: SideFigures = Field(
        description="page-view-weighted means over each period (never Airbnb's windows, so "
        "that the figures compare across listings)"
    )
    trend: Trend
    flags: list[PortfolioFlag] = Field(
        description="own change_7 or change_28 below -drop_threshold"
    )


class PortfolioOut(Out):
    customer_id: str | None
    end: dt.date
    as_of: dt.date | None
    drop_threshold: float
    listings: list[PortfolioListing]


class ListingOut(Out):
    airbnb_listing_id: str
    airbnb_internal_name: str | None
    listing_name: str | None
    last_synced_at: dt.datetime | None = Field(
        description="when the listing was last committed by a sync (null: never)"
    )
    last_job_status: Literal["pending", "committed", "failed"] | None = Field(
        description="the listing's status in the account's most recent job that included it"
    )
    last_job_id: uuid.UUID | None


class ListingsOut(Out):
    account_id: str
    items: list[ListingOut] = Field(description="by airbnb_listing_id")


# --- the audit trail ----------------------------------------------------------------------

# What an audit entry records (services/admin/audit.py says which change writes which).
AuditAction = Literal[
    "account_created",
    "account_updated",
    "credentials_replaced",
    "account_deactivated",
    "account_reactivated",
    "account_deleted",
    "account_restored",
    "sync_triggered",
    "key_created",
    "key_revoked",
    "connect_token_created",
    "connect_token_revoked",
    "account_connected",
]
# Bounded like the read API's dates: a time outside Python's years (after its offset is
# applied) would be a 500 where it is encoded for PostgreSQL.
FIRST_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LAST_TIME = dt.datetime(3000, 1, 1, tzinfo=dt.UTC)


class AuditQuery(Query):
    limit: Limit = 50
    offset: Offset = 0
    account_id: AccountId | None = Field(default=None, description="only this account's entries")
    action: AuditAction | None = Field(default=None, description="only entries of this action")
    since: (
        Annotated[
            AwareDatetime, Field(ge=FIRST_TIME, lt=LAST_TIME), BeforeValidator(_not_a_timestamp)
        ]
        | None
    ) = Field(
        default=None,
        description="only entries at or after this time (RFC 3339 with an offset, "
        "1970-01-01T00:00:00Z .. 2999-12-31T23:59:59Z)",
    )


class AuditEntryOut(Out):
    entry_id: int = Field(description="increasing in the order the entries were written")
    at: dt.datetime = Field(description="when the change's transaction began")
    actor: str = Field(
        description="the key's name; bootstrap:<n> for the n-th key of ADMIN_API_KEYS, "
        "connect-token:<id> for a connect token, cli for the command line"
    )
    actor_scope: str = Field(description="the actor's scope: admin, read, customer or connect")
    client: str = Field(
        description="where the request came from: the client's address; local:<os user> "
        "for the command line"
    )
    action: AuditAction
    account_id: str | None
    key_name: str | None = Field(description="the key created or revoked")
    fields: list[str] = Field(
        description="the names of the fields that changed; a cookie is 'credentials', "
        "and no value of it is ever recorded"
    )
    detail: dict[str, Any] | None = Field(
        description="what else the action says: old and new values of plain fields, the "
        "credentials version, a trigger's id; never a credential"
    )


class AuditPage(Out):
    items: list[AuditEntryOut] = Field(description="newest first")
    total: int
    limit: int
    offset: int


# --- connect tokens (issue 16, item 4) ---------------------------------------------------

# A connect token's life when its creator gives none, and the longest it may be given: the
# host should connect within days, and a forgotten token should not stay a way in.
MAX_CONNECT_TOKEN_DAYS = 90
CONNECT_TOKEN_DOC = (
    "A connect token lets the browser extension send one host's Airbnb session to "
    "POST /connect; it is shown once (the database keeps its SHA-256 only)."
)


class ConnectTokenCreate(Body):
    """A connect token for the path's account."""

    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CONNECT_TOKEN_DAYS,
        description="days until it expires (default ADMIN_CONNECT_TOKEN_DAYS)",
        json_schema_extra=_drop_default,
    )


class NewAccountTokenCreate(ConnectTokenCreate):
    """A connect token for a new account of ``customer_id``: its first use creates the
    account (the id is the host's, from the session), later uses update that account only."""

    customer_id: CustomerId | None = Field(
        default=None, description="the customer the new account belongs to"
    )


class ConnectTokenOut(Out):
    token_id: uuid.UUID
    account_id: str | None = Field(
        description="the account it connects; null for a new-account token never used"
    )
    for_new_account: bool
    customer_id: str | None
    created_by: str = Field(description="the name of the key that created it")
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    used_at: dt.datetime | None = Field(description="the last accepted POST /connect")
    uses: int
    status: Literal["active", "expired", "revoked"]


class ConnectTokenCreated(ConnectTokenOut):
    token: str = Field(description="the token itself, shown this once")
    connect_link: str = Field(
        description="what to send the host: pasted into the extension's options, it sets "
        "both the server and the token (the token is in the fragment, which a browser "
        "never sends to a server)"
    )


class ConnectTokenList(Out):
    items: list[ConnectTokenOut] = Field(description="newest first")


class ConnectBody(Body):
    """What the browser extension sends: the Airbnb cookies and the browser they work in."""

    cookies: CookieList = Field(
        repr=False,
        exclude=True,
        description="the airbnb.com cookies as chrome.cookies returns them ({name, value}; "
        "other keys ignored); only the auth group is kept, encrypted, never returned",
    )
    user_agent: UserAgent = Field(description="the browser's User-Agent")
    x_client_version: ClientVersion | None = Field(
        default=None,
        description="Airbnb's X-Client-Version, when the extension knows it; absent keeps "
        "the account's, or ADMIN_CONNECT_CLIENT_VERSION for a new account",
        json_schema_extra=_drop_default,
    )
    account_id: AccountId | None = Field(
        default=None,
        description="the host id the extension read from _user_attributes; checked against "
        "the cookies and the token's account",
        json_schema_extra=_drop_default,
    )
    validate_: bool = Field(
        default=True,
        alias="validate",
        description="ask a fetcher to try the session first (nothing is saved when Airbnb "
        "refuses it)",
    )


class ConnectOut(Out):
    account_id: str
    created: bool = Field(description="the token's first use created the account")
    validated: bool = Field(description="a fetcher tried the session before it was saved")
    listings: int | None = Field(description="the listings the session sees (when validated)")
    credentials_version: int


# --- errors -------------------------------------------------------------------------------


class FieldError(Out):
    field: str = Field(description="dotted path of the field; 'body' for the body as a whole")
    message: str
    type: str


class ErrorBody(Out):
    error: str = Field(description="a stable machine-readable code")
    detail: str
    # credentials_rejected: what the fetcher found (expired, other_host, rejected)
    reason: str | None = None
    fields: list[FieldError] | None = None


# --- operational ------------------------------------------------------------------------------


class HealthOut(Out):
    status: Literal["ok"]
    service: str


class ReadyOut(Out):
    status: Literal["ready", "not ready"]
    checks: dict[str, Literal["ok", "down"]] = Field(
        description="each dependency (postgres, nats) and whether it answers"
    )
