"""Settings of ``sync-airbnb up`` and ``sync-airbnb demo``.

Every variable of the services themselves (``SECRET_KEYS``, ``ADMIN_PORT``...)
passes through to the children; these are only what the launcher decides with.
``DATABASE_URL`` and ``NATS_URL`` are optional here: unset means embedded.

=============================  ==========================  =====================================
variable                       default                     meaning
=============================  ==========================  =====================================
``SYNC_AIRBNB_STATE_DIR``      ``$XDG_DATA_HOME/sync-      embedded PostgreSQL data, NATS store,
                               airbnb`` (else ``~/.local/  generated secrets, demo logs
                               share/sync-airbnb``)
``UP_FETCHERS``                2                           fetcher processes
``UP_WRITERS``                 1                           writer processes
``UP_NATS_PORT``               4222 (a free port if taken  the embedded nats-server's port
                               and not set explicitly)
``ADMIN_PORT``                 8000 (likewise)             the admin's port
``UP_STOP_TIMEOUT_S``          15                          SIGTERM to SIGKILL, per child
``UP_RESTART_BACKOFF_MAX_S``   30                          cap of the restart backoff
``UP_READY_TIMEOUT_S``         120                         wait for PostgreSQL, NATS, admin
``DEMO_SEED``                  1                           the demo simulator's seed
``DEMO_TIMEOUT_S``             600                         wait for the demo's syncs
=============================  ==========================  =====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from shared.settings import BaseServiceSettings, validate_database_url

DEFAULT_ADMIN_PORT = 8000
DEFAULT_NATS_PORT = 4222


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The XDG data directory of sync-airbnb: ``$XDG_DATA_HOME/sync-airbnb``."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sync-airbnb"


class LauncherSettings(BaseServiceSettings):
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    nats_url: str | None = Field(default=None, validation_alias="NATS_URL")
    state_dir: Path | None = Field(default=None, validation_alias="SYNC_AIRBNB_STATE_DIR")
    admin_port: int = Field(
        default=DEFAULT_ADMIN_PORT, ge=0, le=65535, validation_alias="ADMIN_PORT"
    )
    up_fetchers: int = Field(default=2, ge=1, le=64, validation_alias="UP_FETCHERS")
    up_writers: int = Field(default=1, ge=1, le=64, validation_alias="UP_WRITERS")
    up_nats_port: int = Field(
        default=DEFAULT_NATS_PORT, ge=0, le=65535, validation_alias="UP_NATS_PORT"
    )
    # How long a child gets between SIGTERM and SIGKILL; above the services' own
    # SHUTDOWN_TIMEOUT_S (8 s), so a graceful stop is never cut short.
    up_stop_timeout_s: float = Field(
        default=15.0, gt=0, le=600, validation_alias="UP_STOP_TIMEOUT_S"
    )
    up_restart_backoff_max_s: float = Field(
        default=30.0, ge=1, le=3600, validation_alias="UP_RESTART_BACKOFF_MAX_S"
    )
    # How long `up` waits for PostgreSQL, NATS and the admin's readiness at start.
    up_ready_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, validation_alias="UP_READY_TIMEOUT_S"
    )
    demo_seed: int = Field(default=1, validation_alias="DEMO_SEED")
    # How long the demo waits for its backfills before reporting what it has.
    demo_timeout_s: float = Field(default=600.0, gt=0, validation_alias="DEMO_TIMEOUT_S")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return validate_database_url(v) if v else None

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        for server in v.split(","):
            parts = urlsplit(server.strip())
            if parts.scheme not in {"nats", "tls", "ws", "wss"} or not parts.hostname:
                raise ValueError("must be nats://host:port (comma-separated for a cluster)")
        return v

    def resolved_state_dir(self) -> Path:
        return (self.state_dir or default_state_dir(os.environ)).expanduser().resolve()
