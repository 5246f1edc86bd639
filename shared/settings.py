"""Settings from the environment, validated once at start.

Each service declares the settings it needs by composing the groups below, and
calls :func:`load_settings`. A missing or malformed value ends the process with
one line that names the variable and what is wrong, and exit code 2: a service
that starts with a bad configuration only fails later, and less clearly.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated, Literal, NoReturn, TypeVar
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    FilePath,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EXIT_CONFIG = 2


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=False)

    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    sync_airbnb_today: dt.date | None = Field(default=None, validation_alias="SYNC_AIRBNB_TODAY")
    shutdown_timeout_s: float = Field(default=8.0, gt=0, validation_alias="SHUTDOWN_TIMEOUT_S")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        level = v.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    def today(self) -> dt.date:
        """'Today' for windows and scrape days: pinned by SYNC_AIRBNB_TODAY, else the UTC date."""
        return self.sync_airbnb_today or dt.datetime.now(dt.UTC).date()


class DatabaseSettings(BaseServiceSettings):
    database_url: str = Field(validation_alias="DATABASE_URL")
    db_pool_min: int = Field(default=1, ge=0, validation_alias="DB_POOL_MIN")
    db_pool_max: int = Field(default=10, ge=1, validation_alias="DB_POOL_MAX")
    # Bounds on every database wait, so a PostgreSQL that is down or hung is an error
    # within seconds (the admin answers 503) rather than a request that waits for ever:
    # each statement (client command_timeout and server statement_timeout), and the wait
    # for a pool connection, a new connection's connect included.
    db_statement_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, validation_alias="DB_STATEMENT_TIMEOUT_S"
    )
    db_acquire_timeout_s: float = Field(
        default=5.0, gt=0, le=3600, validation_alias="DB_ACQUIRE_TIMEOUT_S"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, v: str) -> str:
        return validate_database_url(v)


class NatsSettings(BaseServiceSettings):
    nats_url: str = Field(validation_alias="NATS_URL")
    # How long JetStream waits for an ack before redelivering to another replica. Workers
    # send in-progress acks well within it; a process killed mid-work is noticed after it.
    jetstream_ack_wait_s: float = Field(
        default=60.0, ge=1, le=3600, validation_alias="JETSTREAM_ACK_WAIT_S"
    )
    # What nats-py buffers while it reconnects (its default, 2 MiB); 0 disables the buffer,
    # so a publish, an ack or a nak fails at once while NATS is away.
    nats_reconnect_buffer_bytes: int = Field(
        default=2 * 1024 * 1024, ge=0, validation_alias="NATS_RECONNECT_BUFFER_BYTES"
    )
    # Copies of every stream (consumers and the KV bucket follow it) on a NATS cluster:
    # 3 survives the loss of one node. Provisioning raises a stream to it but never lowers
    # one (topology.replicas_to_apply), so a service with a stale or missing setting
    # cannot undo a raise.
    jetstream_replicas: int = Field(default=1, ge=1, le=5, validation_alias="JETSTREAM_REPLICAS")

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, v: str) -> str:
        for server in v.split(","):
            parts = urlsplit(server.strip())
            if parts.scheme not in {"nats", "tls", "ws", "wss"} or not parts.hostname:
                raise ValueError("must be nats://host:port (comma-separated for a cluster)")
        return v

    @property
    def nats_servers(self) -> list[str]:
        return nats_servers(self.nats_url)


class SecretSettings(BaseServiceSettings):
    secret_keys: CsvList = Field(validation_alias="SECRET_KEYS")

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("is empty; give at least one Fernet key (comma-separated)")
        for i, key in enumerate(v, start=1):
            try:
                Fernet(key.encode())
            except ValueError:
                raise ValueError(
                    f"key #{i} is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        return v


class HttpListenerSettings(BaseServiceSettings):
    """The health/metrics listener every service runs; 0 picks a free port."""

    http_host: str = Field(default="127.0.0.1", validation_alias="HTTP_HOST")
    http_port: int = Field(default=0, ge=0, le=65535, validation_alias="HTTP_PORT")


class AirbnbSettings(BaseServiceSettings):
    airbnb_base_url: str = Field(
        default="https://www.airbnb.com", validation_alias="AIRBNB_BASE_URL"
    )
    airbnb_min_interval_s: float = Field(
        default=2.0, ge=0, validation_alias="AIRBNB_MIN_INTERVAL_S"
    )
    # A random [0, jitter * interval) added to every interval, so accounts paced alike do
    # not fire in lockstep. 0.1 keeps the mean interval within 5 % of AIRBNB_MIN_INTERVAL_S
    # (the paced target is 1.10x the floor) while still de-synchronising requests.
    airbnb_pacing_jitter: float = Field(
        default=0.1, ge=0, le=1, validation_alias="AIRBNB_PACING_JITTER"
    )
    airbnb_request_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="AIRBNB_REQUEST_TIMEOUT_S"
    )
    airbnb_max_attempts: int = Field(default=5, ge=1, validation_alias="AIRBNB_MAX_ATTEMPTS")
    # The public key Airbnb's web app embeds in every page (not a secret); a setting so a
    # new web-app key needs no release.
    airbnb_api_key: str = Field(
        default="d306zoyjsyarp7ifhu67rjxn52tv0t20",
        min_length=8,
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+$",
        validation_alias="AIRBNB_API_KEY",
    )
    # A PEM file of certificate authorities to trust for AIRBNB_BASE_URL instead of the
    # system's (the simulator's throwaway certificate, a corporate proxy's CA).
    airbnb_ca_file: FilePath | None = Field(default=None, validation_alias="AIRBNB_CA_FILE")
    airbnb_accept_language: str = Field(
        default="en-US,en;q=0.9",
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        validation_alias="AIRBNB_ACCEPT_LANGUAGE",
    )
    # browser: the preflight, a cookie jar that follows Set-Cookie, rotations saved back
    # (docs/sessions.md). replay: the stored cookie sent verbatim, nothing saved: only
    # for tests that show how that loses a session within a day or two.
    airbnb_session_mode: Literal["browser", "replay"] = Field(
        default="browser", validation_alias="AIRBNB_SESSION_MODE"
    )

    @field_validator("airbnb_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s):// URL")
        return v.rstrip("/")


class WindowSettingsMixin(BaseServiceSettings):
    first_run_weeks_back: int = Field(default=25, ge=0, validation_alias="FIRST_RUN_WEEKS_BACK")
    incremental_weeks_back: int = Field(default=1, ge=0, validation_alias="INCREMENTAL_WEEKS_BACK")
    weeks_ahead: int = Field(default=5, ge=0, validation_alias="WEEKS_AHEAD")


class MigrateSettings(DatabaseSettings):
    # auto: hypertables where TimescaleDB is usable (available and preloaded), else plain
    # tables and a log line saying why; require: exit 2 before any migration unless it is
    # usable; off: never use it.
    timescaledb: Literal["auto", "require", "off"] = Field(
        default="auto", validation_alias="TIMESCALEDB"
    )
    timescale_compress_after: str = Field(
        default="7 days", validation_alias="TIMESCALE_COMPRESS_AFTER"
    )
    timescale_retention: str = Field(
        default="5 years",
        validation_alias=AliasChoices("TIMESCALE_RETENTION", "TIMESCALE_DROP_AFTER"),
    )


def nats_servers(url: str) -> list[str]:
    """NATS_URL as nats-py's server list: one URL, or several comma-separated (a cluster)."""
    return [server.strip() for server in url.split(",") if server.strip()]


def validate_database_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError("must be a postgresql:// URL")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("names no host (postgresql://user@host:port/db)")
    return v


S = TypeVar("S", bound=BaseSettings)


def _describe(error: ValidationError, settings_cls: type[BaseSettings]) -> str:
    problems = []
    for err in error.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        info = settings_cls.model_fields.get(field)
        alias = info.validation_alias if info else None
        if isinstance(alias, AliasChoices):
            alias = alias.choices[0]
        name = alias if isinstance(alias, str) else field.upper()
        msg = "is required but not set" if err["type"] == "missing" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        problems.append(f"{name} {msg}")
    return "; ".join(problems)


def load_settings(settings_cls: type[S], service: str) -> S:
    """Read settings or end the process with one line naming the bad variable, exit code 2."""
    try:
        return settings_cls()
    except ValidationError as exc:
        die(f"sync-airbnb {service}: configuration error: {_describe(exc, settings_cls)}")


def die(line: str) -> NoReturn:
    print(line, file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)
