"""``sync-airbnb migrate``: apply the yoyo migrations in ``migrations/``.

Safe to run twice (yoyo records what it applied) and from several processes at
once: a PostgreSQL advisory lock, taken before yoyo touches its own tables,
serialises the migrators, and the ones that wait find nothing left to apply.

Whether the metrics tables become TimescaleDB hypertables is decided here, once, before
any migration runs (``TIMESCALEDB=auto|require|off``, docs/timescaledb.md): a server
that has the extension but does not preload it ends a CREATE EXTENSION with a FATAL
error, which would close yoyo's connection half-way, after 0001 was applied.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from yoyo import get_backend, read_migrations

from shared.logs import setup_logging
from shared.metric_tables import SCHEMA
from shared.settings import MigrateSettings, die, load_settings

log = logging.getLogger("sync_airbnb.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
# Any fixed 64-bit number; it names "the migration lock" for every process.
ADVISORY_LOCK_KEY = 0x5A1B_2026

TimescaleMode = Literal["auto", "require", "off"]


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
# The decision of apply_migrations ("on" or "off"), on the same session.
_USE_SETTING = "sync_airbnb.timescaledb"


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


def set_timescaledb_use(cursor: Any, use: bool) -> None:
    """Put the decision of :func:`apply_migrations` on the session of ``cursor``."""
    cursor.execute("SELECT set_config(%s, %s, false)", (_USE_SETTING, "on" if use else "off"))


def timescaledb_in_use(cursor: Any) -> bool:
    """Whether the migrations running on this session make hypertables.

    What :func:`apply_migrations` decided; on a session it did not prepare (yoyo run by
    hand), what ``TIMESCALEDB=auto`` would decide."""
    cursor.execute("SELECT current_setting(%s, true)", (_USE_SETTING,))
    row = cursor.fetchone()
    if row is not None and row[0] in {"on", "off"}:
        return bool(row[0] == "on")
    return decide_timescaledb("auto", probe_timescaledb(cursor)).use


# --- whether to use TimescaleDB -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimescaleProbe:
    """What the server says of TimescaleDB, from its catalogs: nothing is created."""

    available: str | None  # the version its control file offers, if the server has one
    installed: str | None  # the version created in this database, if any
    preloaded: bool  # the running server loaded the library at start


@dataclass(frozen=True, slots=True)
class TimescaleDecision:
    use: bool
    why_not: str = ""  # when not used: why
    remedy: str = ""  # when not used: what turns it on
    warn: bool = False  # the server has TimescaleDB, and yet it is not used


_RESTART = "restart PostgreSQL"


def decide_timescaledb(mode: TimescaleMode, probe: TimescaleProbe) -> TimescaleDecision:
    """Use TimescaleDB or not, and why not: the rule of ``TIMESCALEDB`` (pure)."""
    preload = "set shared_preload_libraries = 'timescaledb' in postgresql.conf"
    if mode == "off":
        return TimescaleDecision(False, "TIMESCALEDB=off", "unset TIMESCALEDB")
    if probe.available is None and probe.installed is None:
        return TimescaleDecision(
            False,
            "TimescaleDB is not available on this server (no timescaledb extension)",
            f"install TimescaleDB on the server, {preload}, {_RESTART}",
        )
    if not probe.preloaded:
        return TimescaleDecision(
            False,
            "the timescaledb extension is installed on this server but not preloaded "
            "(shared_preload_libraries does not name timescaledb)",
            f"{preload}, {_RESTART}",
            warn=True,
        )
    return TimescaleDecision(True)


def preload_names(setting: str) -> set[str]:
    """The library names in a ``shared_preload_libraries`` value (pure).

    ``'pg_stat_statements, "$libdir/timescaledb"'`` gives
    ``{"pg_stat_statements", "timescaledb"}``."""
    names = set()
    for part in setting.split(","):
        name = part.strip().strip('"').rsplit("/", 1)[-1]
        if name:
            names.add(name.removesuffix(".so"))
    return names


def probe_timescaledb(cursor: Any) -> TimescaleProbe:
    """Read the catalogs: is the extension available, created here, preloaded?

    shared_preload_libraries is readable only by superusers (and pg_read_all_settings);
    the loader's own setting ``timescaledb.disable_load``, which exists once the
    library is loaded, answers for any role."""
    cursor.execute(
        """
        SELECT
          (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
          (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
          (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
          EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load')
        """
    )
    available, installed, preload, loader = cursor.fetchone()
    preloaded = bool(loader) or "timescaledb" in preload_names(preload or "")
    return TimescaleProbe(available, installed, preloaded)


class TimescaleUnavailable(RuntimeError):
    """``TIMESCALEDB=require`` on a server where TimescaleDB cannot be used."""

    def __init__(self, decision: TimescaleDecision) -> None:
        super().__init__(decision.why_not)
        self.decision = decision


def _create_extension(database_url: str) -> TimescaleDecision:
    """CREATE EXTENSION, before any migration: a refusal (no privilege, say) then leaves
    nothing half-applied. On its own connection, since some failures are FATAL."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        message = exc.diag.message_primary or type(exc).__name__
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            remedy = "let a superuser run CREATE EXTENSION timescaledb in this database"
        else:
            remedy = "fix what the server reports (its log has the details)"
        return TimescaleDecision(
            False, f"CREATE EXTENSION timescaledb failed: {message}", remedy, warn=True
        )
    return TimescaleDecision(True)


# --- hypertables ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compression:
    segmentby: str
    orderby: str


# How each metrics table is compressed once its chunks are older than compress_after;
# None: not at all. chart_summary holds one row per listing and 28-day chart slice of a
# scrape day, about 14 per listing in a 7-day chunk: segments that short come out bigger
# compressed than not (ratio 0.75 measured on TimescaleDB 2.28.3, docs/timescaledb.md).
COMPRESSION: dict[str, Compression | None] = {
    "chart_query": Compression("account_id, airbnb_listing_id", "metric_date DESC"),
    "chart_summary": None,
    "list_of_metrics": Compression("account_id, airbnb_listing_id", "window_start DESC"),
}
CHUNK_INTERVAL = "7 days"

Statement = tuple[str, tuple[str, ...]]


def hypertable_sql(table: str, options: TimescaleOptions) -> list[Statement]:
    """The statements that make ``airbnb.<table>`` a hypertable with its policies (pure).

    No default index: the primary key leads with account_id and ends with time, and
    serves every read (0003); TimescaleDB's default ``time DESC`` index only costs the
    writer (25-30 % slower COPY measured on 2.28.3). The DROP INDEX clears one that an
    earlier create_hypertable made."""
    name = f"{SCHEMA}.{table}"
    statements: list[Statement] = [
        (
            "SELECT create_hypertable(%s, 'time', "
            f"chunk_time_interval => INTERVAL '{CHUNK_INTERVAL}', "
            "create_default_indexes => FALSE, migrate_data => TRUE, if_not_exists => TRUE)",
            (name,),
        ),
        (f"DROP INDEX IF EXISTS {default_time_index(table)}", ()),
    ]
    compression = COMPRESSION[table]
    if compression is not None:
        statements += [
            (
                f"ALTER TABLE {name} SET (timescaledb.compress, "
                f"timescaledb.compress_segmentby = '{compression.segmentby}', "
                f"timescaledb.compress_orderby = '{compression.orderby}')",
                (),
            ),
            (
                "SELECT add_compression_policy(%s, %s::interval, if_not_exists => TRUE)",
                (name, options.compress_after),
            ),
        ]
    statements.append(
        (
            "SELECT add_retention_policy(%s, %s::interval, if_not_exists => TRUE)",
            (name, options.retention),
        )
    )
    return statements


def default_time_index(table: str) -> str:
    """The index create_hypertable makes on ``time DESC`` unless told not to."""
    return f"{SCHEMA}.{table}_time_idx"


def uncompress_sql(table: str) -> list[Statement]:
    """The statements that turn compression off on a hypertable that has it (pure)."""
    name = f"{SCHEMA}.{table}"
    return [
        ("SELECT remove_compression_policy(%s, if_exists => TRUE)", (name,)),
        ("SELECT decompress_chunk(c, if_compressed => TRUE) FROM show_chunks(%s) c", (name,)),
        (f"ALTER TABLE {name} SET (timescaledb.compress = FALSE)", ()),
    ]


def render(statements: Iterable[Statement]) -> str:
    """The statements as a psql script, their parameters as literals (for the docs)."""

    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    lines = []
    for sql, params in statements:
        lines.append(sql.replace("%s", "{}").format(*map(literal, params)) + ";")
    return "\n".join(lines)


def _execute(cursor: Any, statements: Iterable[Statement]) -> None:
    for sql, params in statements:
        cursor.execute(sql, params or None)


def _hypertables(cursor: Any) -> set[str]:
    cursor.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = %s",
        (SCHEMA,),
    )
    return {row[0] for row in cursor.fetchall()}


def ensure_hypertables(cursor: Any, options: TimescaleOptions) -> list[str]:
    """Make each metrics table that is not one yet a hypertable; the ones it made.

    Run by migration 0002, and by every migrate that uses TimescaleDB: a deployment that
    began on plain tables gets its hypertables once TimescaleDB is turned on."""
    made = []
    existing = _hypertables(cursor)
    for table in COMPRESSION:
        if table not in existing:
            _execute(cursor, hypertable_sql(table, options))
            made.append(table)
    return made


def uncompress_if_compressed(cursor: Any, table: str) -> bool:
    """Turn compression off on ``airbnb.<table>`` if it is a hypertable that has it."""
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if cursor.fetchone() is None:
        return False
    cursor.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = %s AND hypertable_name = %s",
        (SCHEMA, table),
    )
    row = cursor.fetchone()
    if row is None or not row[0]:
        return False
    _execute(cursor, uncompress_sql(table))
    return True


# --- the run --------------------------------------------------------------------------------


def _yoyo_url(database_url: str) -> str:
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in {"postgres", "postgresql"} else database_url


def _decide(conn: psycopg.Connection, database_url: str, mode: TimescaleMode) -> TimescaleDecision:
    if mode == "off":  # never touches TimescaleDB, not even its catalogs
        return decide_timescaledb(mode, TimescaleProbe(None, None, False))
    probe = probe_timescaledb(conn.cursor())
    decision = decide_timescaledb(mode, probe)
    if decision.use and probe.installed is None:
        decision = _create_extension(database_url)
    if not decision.use and mode == "require":
        raise TimescaleUnavailable(decision)
    return decision


def apply_migrations(
    database_url: str,
    timescale: TimescaleOptions | None = None,
    mode: TimescaleMode = "auto",
) -> list[str]:
    """Apply pending migrations; return the ids applied by this call.

    Raises :class:`TimescaleUnavailable` before applying anything when ``mode`` is
    ``require`` and TimescaleDB cannot be used."""
    options = timescale or TimescaleOptions()
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with psycopg.connect(database_url, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            decision = _decide(lock_conn, database_url, mode)
            backend = get_backend(_yoyo_url(database_url))
            try:
                with backend.transaction():
                    set_timescale_options(backend.cursor(), options)
                    set_timescaledb_use(backend.cursor(), decision.use)
                with backend.lock():
                    pending = backend.to_apply(migrations)
                    backend.apply_migrations(pending)
            finally:
                backend.connection.close()
            made = []
            if decision.use:
                with lock_conn.transaction():
                    made = ensure_hypertables(lock_conn.cursor(), options)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        applied = [m.id for m in pending]
        _log_timescale_status(lock_conn, decision, mode, made)
    return applied


def _log_timescale_status(
    conn: psycopg.Connection, decision: TimescaleDecision, mode: TimescaleMode, made: list[str]
) -> None:
    if decision.use:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        if made:
            log.info(
                "TimescaleDB turned on: made hypertables of %s",
                ", ".join(made),
                extra={"timescaledb": True, "hypertables_made": made},
            )
        log.info(
            "TimescaleDB %s: the metrics tables are hypertables on time",
            row[0] if row else "?",
            extra={"timescaledb": True},
        )
    elif mode == "off":
        log.info(
            "TIMESCALEDB=off: TimescaleDB is not used; new metrics tables are plain "
            "PostgreSQL tables",
            extra={"timescaledb": False},
        )
    else:
        log.log(
            logging.WARNING if decision.warn else logging.INFO,
            "%s: the metrics tables are plain PostgreSQL tables (no hypertables, "
            "compression or retention policies); to use TimescaleDB, %s, and run migrate "
            "again with TIMESCALEDB=require (TIMESCALEDB=off silences this line)",
            decision.why_not,
            decision.remedy,
            extra={"timescaledb": False},
        )


def main(args: argparse.Namespace) -> int:
    settings = load_settings(MigrateSettings, "migrate")
    setup_logging("migrate", settings.log_level)
    try:
        applied = apply_migrations(
            settings.database_url,
            TimescaleOptions(settings.timescale_compress_after, settings.timescale_retention),
            settings.timescaledb,
        )
    except TimescaleUnavailable as exc:
        die(
            f"sync-airbnb migrate: TIMESCALEDB=require: {exc.decision.why_not}; "
            f"{exc.decision.remedy} (or set TIMESCALEDB=auto for plain tables). "
            "Nothing was migrated."
        )
    log.info(
        "migrations applied: %s",
        ", ".join(applied) if applied else "none pending",
        extra={"applied": applied},
    )
    return 0
