"""The yoyo migrations against a real PostgreSQL: idempotence, concurrency, the column rule."""

from __future__ import annotations

import asyncpg
import psycopg

from shared.metric_tables import METRIC_TABLES, SCHEMA
from shared.migrate import (
    TimescaleOptions,
    apply_migrations,
    set_timescale_options,
    timescale_options,
)
from tests.infra import ServiceLauncher

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


async def test_migrations_apply_twice_with_tables_keys_and_column_rule(empty_database: str) -> None:
    assert apply_migrations(empty_database) == [
        "0001_schema",
        "0002_timescaledb",
        "0003_drop_export_indexes",
        "0004_credentials_version",
    ]
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
            # Every row the writer stores pays for each index: the primary key is the only
            # one (0003 dropped the export indexes; the key serves the export too).
            indexes = await conn.fetch(
                "SELECT indexrelid::regclass::text AS name, indisprimary FROM pg_index"
                " WHERE indrelid = $1::regclass",
                table.qualified_name,
            )
            assert [r["indisprimary"] for r in indexes] == [True], (table.name, indexes)
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


async def test_plain_postgres_path_logs_that_timescaledb_is_absent(
    empty_database: str, bare_launcher: ServiceLauncher
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
    finally:
        await conn.close()
    result = bare_launcher.run(["migrate"], env={"DATABASE_URL": empty_database})
    assert result.returncode == 0, result.stderr
    if available:
        assert "hypertables on time" in result.stderr
    else:
        assert "TimescaleDB is not available" in result.stderr
        assert "plain PostgreSQL tables" in result.stderr
    conn = await asyncpg.connect(empty_database)
    try:
        hypertables = await conn.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        )
    finally:
        await conn.close()
    assert hypertables == (1 if available else 0)


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
        assert [r["migration_id"] for r in applied] == [
            "0001_schema",
            "0002_timescaledb",
            "0003_drop_export_indexes",
            "0004_credentials_version",
        ]
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
    assert apply_migrations(empty_database, TimescaleOptions("1 day", "1 year"))[0] == "0001_schema"
