"""Settings of ``sync-airbnb writer``."""

from __future__ import annotations

from pydantic import Field

from shared.settings import DatabaseSettings, HttpListenerSettings, NatsSettings


class WriterSettings(DatabaseSettings, NatsSettings, HttpListenerSettings):
    # One batch is one transaction: bigger batches amortise the per-table round trips,
    # smaller ones bound the work redone after a failure.
    writer_batch_max_messages: int = Field(
        default=500, ge=1, le=10_000, validation_alias="WRITER_BATCH_MAX_MESSAGES"
    )
    # How long a batch may wait to fill up after its first message arrived.
    writer_batch_max_wait_s: float = Field(
        default=0.5, gt=0, le=60, validation_alias="WRITER_BATCH_MAX_WAIT_S"
    )
    # Cap of the exponential backoff while PostgreSQL is unreachable.
    writer_db_retry_max_s: float = Field(
        default=10.0, gt=0, le=300, validation_alias="WRITER_DB_RETRY_MAX_S"
    )
