"""Settings of ``sync-airbnb fetcher``."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from shared.settings import AirbnbSettings, HttpListenerSettings, NatsSettings, SecretSettings

KIB = 1024
# The largest FETCHER_CHUNK_MAX_BYTES: a chunk's dead letter carries it inline as base64
# (4/3: 960 KiB), and the reason, headers and envelope fit in the rest of NATS's default
# 1 MiB max_payload. A server with a smaller limit gets smaller chunks (``chunk_limit``),
# whose dead letters keep them by reference when they no longer fit inline.
CHUNK_MAX_BYTES_CAP = 720 * KIB
# bench_fleet: 1,000 paced accounts (2 s) in one fetcher under 300 MiB and half a core.
DEFAULT_CONCURRENCY = 1000
MAX_CONCURRENCY = 20_000


class FetcherSettings(NatsSettings, SecretSettings, AirbnbSettings, HttpListenerSettings):
    # Account syncs one process holds at once; it pulls only as many requests as it has
    # free slots, so replicas share the queue instead of hoarding it. A paced sync is
    # nearly all waiting (one request per AIRBNB_MIN_INTERVAL_S), so this is a memory
    # budget, not a CPU one: each sync in flight holds its curl session and the rows of
    # the listing it is fetching (benchmarks/bench_fleet.py measures both per account).
    fetcher_concurrency: int = Field(
        default=DEFAULT_CONCURRENCY,
        ge=1,
        le=MAX_CONCURRENCY,
        validation_alias="FETCHER_CONCURRENCY",
    )
    # Upper bound of one encoded RowBatch. NATS refuses messages over max_payload (1 MiB by
    # default); the smaller of this and the server's limit (minus header room) is used.
    fetcher_chunk_max_bytes: int = Field(
        default=512 * KIB,
        ge=4 * KIB,
        validation_alias="FETCHER_CHUNK_MAX_BYTES",
    )
    # A sync that fails as a whole (ListingsSectionQuery keeps failing, NATS unavailable) is
    # redelivered after base * 2**(deliveries - 1) seconds, at most cap.
    fetcher_retry_base_s: float = Field(default=5.0, gt=0, validation_alias="FETCHER_RETRY_BASE_S")
    fetcher_retry_cap_s: float = Field(default=300.0, gt=0, validation_alias="FETCHER_RETRY_CAP_S")
    # In-progress acks while a sync runs; must stay well under the consumer's ack_wait (60 s).
    fetcher_heartbeat_s: float = Field(
        default=15.0, gt=0, le=30, validation_alias="FETCHER_HEARTBEAT_S"
    )
    # Credential checks (airbnb.credentials.check) one process runs at once, beside its
    # syncs; more wait for a slot within their deadline.
    fetcher_check_concurrency: int = Field(
        default=4, ge=1, le=100, validation_alias="FETCHER_CHECK_CONCURRENCY"
    )
    # One check's deadline, slot wait included. Below the admin's ADMIN_VALIDATE_TIMEOUT_S
    # (15 s by default), so a slow Airbnb is answered "unavailable" before the admin gives up.
    fetcher_check_timeout_s: float = Field(
        default=10.0, gt=0, le=60, validation_alias="FETCHER_CHECK_TIMEOUT_S"
    )

    @field_validator("fetcher_chunk_max_bytes")
    @classmethod
    def _chunk_fits_a_dead_letter(cls, v: int) -> int:
        if v > CHUNK_MAX_BYTES_CAP:
            raise ValueError(
                f"must be at most {CHUNK_MAX_BYTES_CAP} ({CHUNK_MAX_BYTES_CAP // KIB} KiB), "
                "so that a chunk's dead letter can carry it"
            )
        return v

    @field_validator("fetcher_retry_cap_s")
    @classmethod
    def _cap_not_below_base(cls, v: float, info: ValidationInfo) -> float:
        base = info.data.get("fetcher_retry_base_s")
        if base is not None and v < base:
            raise ValueError("must be >= FETCHER_RETRY_BASE_S")
        return v
