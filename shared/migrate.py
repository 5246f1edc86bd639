"""``sync-airbnb migrate``: apply the yoyo migrations in ``migrations/``.

Safe to run twice (yoyo records what it applied) and from several processes at
once: a PostgreSQL advisory lock, taken before yoyo touches its own tables,
serialises the migrators, and the ones that wait find nothing left to apply.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from yoyo import get_backend, read_migrations

from shared.logs import setup_logging
from shared.settings import MigrateSettings, load_settings

log = logging.getLogger("sync_airbnb.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
# Any fixed 64-bit number; it names "the migration lock" for every process.
ADVISORY_LOCK_KEY = 0x5A1B_2026


@dataclass(frozen=True, slots=True)
class TimescaleOptions:
    compress_after: str = "7 days"
    retention: str = "5 years"


# The options travel to migrations/0002_timescaledb.py on the connection yoyo runs it
# on, as session settings: a migration is a module yoyo imports, so it takes no
# arguments, and a module-level global would be hidden state shared by every caller.
_OPTION_SETTINGS = {
    "compress_after": "sync_airbnb.timescale_compress_after",
    "retention": "sync_airbnb.timescale_retention",
}


def set_timescale_options(cursor: Any, options: TimescaleOptions) -> None:
    """Put ``options`` on the session of ``cursor``'s connection (for its migrations)."""
    for name, setting in _OPTION_SETTINGS.items():
        cursor.execute("SELECT set_config(%s, %s, false)", (setting, getattr(options, name)))


def timescale_options(cursor: Any) -> TimescaleOptions:
    """The options :func:`apply_migrations` put on this session; the defaults elsewhere.

    Read by migrations/0002_timescaledb.py while it runs."""
    found: dict[str, str] = {}
    for name, setting in _OPTION_SETTINGS.items():
        cursor.execute("SELECT current_setting(%s, true)", (setting,))
        row = cursor.fetchone()
        if row is not None and row[0]:
            found[name] = row[0]
    return TimescaleOptions(**found)


def _yoyo_url(database_url: str) -> str:
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in {"postgres", "postgresql"} else database_url


def apply_migrations(database_url: str, timescale: TimescaleOptions | None = None) -> list[str]:
    """Apply pending migrations; return the ids applied by this call."""
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with psycopg.connect(database_url, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            backend = get_backend(_yoyo_url(database_url))
            try:
                with backend.transaction():
                    set_timescale_options(backend.cursor(), timescale or TimescaleOptions())
                with backend.lock():
                    pending = backend.to_apply(migrations)
                    backend.apply_migrations(pending)
            finally:
                backend.connection.close()
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        applied = [m.id for m in pending]
        _log_timescale_status(lock_conn)
    return applied


def _log_timescale_status(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    if row is None:
        log.info(
            "TimescaleDB is not available on this server: the metrics tables are plain "
            "PostgreSQL tables (no hypertables, compression or retention policies)",
            extra={"timescaledb": False},
        )
    else:
        log.info(
            "TimescaleDB %s: the metrics tables are hypertables on time",
            row[0],
            extra={"timescaledb": True},
        )


def main(args: argparse.Namespace) -> int:
    settings = load_settings(MigrateSettings, "migrate")
    setup_logging("migrate", settings.log_level)
    applied = apply_migrations(
        settings.database_url,
        TimescaleOptions(settings.timescale_compress_after, settings.timescale_retention),
    )
    log.info(
        "migrations applied: %s",
        ", ".join(applied) if applied else "none pending",
        extra={"applied": applied},
    )
    return 0
