"""Settings of ``sync-airbnb admin`` (and of ``sync-airbnb rotate-keys``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.settings import CsvList, DatabaseSettings, NatsSettings, SecretSettings


class AdminSettings(DatabaseSettings, NatsSettings, SecretSettings):
    admin_api_keys: CsvList = Field(validation_alias="ADMIN_API_KEYS")
    admin_host: str = Field(default="0.0.0.0", validation_alias="ADMIN_HOST")
    admin_port: int = Field(default=8000, ge=0, le=65535, validation_alias="ADMIN_PORT")
    # Request bodies are small JSON documents; anything larger is refused with 413 before
    # it is read into memory.
    admin_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, validation_alias="ADMIN_MAX_BODY_BYTES"
    )
    # Empty: CORS is off (no Access-Control-* header is ever sent). "*" allows any origin.
    admin_cors_origins: CsvList = Field(default_factory=list, validation_alias="ADMIN_CORS_ORIGINS")
    # Origins that may call POST /api/v1/connect, and only it, from a browser: the browser
    # extension's chrome-extension://<id> (its id is in chrome://extensions). Empty: none.
    admin_connect_origins: CsvList = Field(
        default_factory=list, validation_alias="ADMIN_CONNECT_ORIGINS"
    )
    # How long a connect token lives unless its creator says otherwise, in days.
    admin_connect_token_days: int = Field(
        default=7, ge=1, le=90, validation_alias="ADMIN_CONNECT_TOKEN_DAYS"
    )
    # The X-Client-Version of an account POST /connect creates when the extension sent none
    # (it cannot read the dashboard's build); the fetcher sends it to Airbnb as the header.
    admin_connect_client_version: str = Field(
        default="connect",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        validation_alias="ADMIN_CONNECT_CLIENT_VERSION",
    )
    # false (the default): /metrics needs X-API-Key like the API, since the admin is the one
    # service exposed to operators; true opens it for a Prometheus without the key.
    admin_metrics_public: bool = Field(default=False, validation_alias="ADMIN_METRICS_PUBLIC")
    # true (the default): /docs and /api/v1/openapi.json answer without X-API-Key, since the
    # document holds no secrets; false puts both (and /docs' assets) behind the key.
    admin_docs_public: bool = Field(default=True, validation_alias="ADMIN_DOCS_PUBLIC")
    # How long POST /accounts/{id}/sync waits for JetStream to store the trigger (503
    # after it); then it waits up to 2 s of it for the scheduler's job id (pending after).
    sync_trigger_timeout_s: float = Field(
        default=5.0, gt=0, le=60, validation_alias="SYNC_TRIGGER_TIMEOUT_S"
    )
    # How long a write with validate=true waits for a fetcher's credential check (503 with
    # Retry-After after it, nothing saved). Above the fetchers' FETCHER_CHECK_TIMEOUT_S
    # (10 s by default), so a slow Airbnb is their answer, not this timeout.
    admin_validate_timeout_s: float = Field(
        default=15.0, gt=0, le=120, validation_alias="ADMIN_VALIDATE_TIMEOUT_S"
    )
    # How long the outbox relay waits for JetStream to store one account event before the
    # pass fails (its rows stay unpublished and the next pass sends them).
    event_publish_timeout_s: float = Field(
        default=5.0, gt=0, le=60, validation_alias="EVENT_PUBLISH_TIMEOUT_S"
    )
    # The relay's poll: how late an event may go out if its commit notification was lost
    # (normally a commit wakes the relay at once).
    admin_outbox_poll_s: float = Field(
        default=1.0, gt=0, le=60, validation_alias="ADMIN_OUTBOX_POLL_S"
    )
    # The longest date range one export may span, in days (inclusive of both ends).
    export_max_days: int = Field(default=400, ge=1, le=3660, validation_alias="EXPORT_MAX_DAYS")
    # Rows the export's server-side cursor fetches per round trip.
    export_fetch_rows: int = Field(
        default=2000, ge=10, le=100_000, validation_alias="EXPORT_FETCH_ROWS"
    )
    # Failed authentications a client address may make at once (services/admin/scopes.py,
    # FailureBuckets), and how many a minute come back after; past them, 429 with
    # Retry-After. The buckets of at most ADMIN_AUTH_FAILURES_MAX_CLIENTS addresses are kept.
    admin_auth_failures_burst: int = Field(
        default=10, ge=1, le=1_000_000, validation_alias="ADMIN_AUTH_FAILURES_BURST"
    )
    admin_auth_failures_per_minute: float = Field(
        default=6.0, gt=0, le=1_000_000, validation_alias="ADMIN_AUTH_FAILURES_PER_MINUTE"
    )
    admin_auth_failures_max_clients: int = Field(
        default=100_000, ge=1, le=10_000_000, validation_alias="ADMIN_AUTH_FAILURES_MAX_CLIENTS"
    )

    @field_validator("admin_api_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("is empty; give at least one API key (comma-separated)")
        if any(len(k) < 8 for k in v):
            raise ValueError("holds a key shorter than 8 characters")
        return v
