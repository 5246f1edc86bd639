"""Writer upsert throughput against a multi-row INSERT and against a bare COPY.

Run ``python -m benchmarks.bench_writer [--sizes 1000,10000,100000] [--repeat N]``.
For each table (chart_query, list_of_metrics), batch size and case it prints one JSON
line, all three measured in the same run on the same rows:

* ``writer``: the writer's own transaction, ``services.writer.store.commit_batch``
  (ledger, rows, bookkeeping, completion check), on rows already converted by
  ``plan.convert_rows``, cut into chunks of 1,000 rows as RowBatch messages carry them;
* ``orm_insert`` (a): one multi-row ``INSERT ... VALUES ... ON CONFLICT (key) DO UPDATE``
  per batch, the way an ORM writes a list of objects. Its values are literals rendered
  in Python (as SQLAlchemy's ``literal_binds`` or psycopg2's ``execute_values`` do):
  bound parameters cap at 32,767 per statement, which 100,000 rows of 14-19 columns
  exceed. Its time includes the rendering; the statement alone is reported beside it;
* ``copy_floor`` (b): ``COPY`` of the same rows into an empty UNLOGGED table with no
  index or constraint (``CREATE UNLOGGED TABLE ... (LIKE ...)``): the floor.

Cases: ``empty`` (the table is truncated before each timed write: a new scrape day)
and ``update`` (the table holds the same keys with other values before each timed
write: a re-scrape of the same day; every row really changes). The writer's
``CopyStrategy`` is kept across the repeats as a writer process keeps it, so
``update`` is its steady state (the merge); the first update of a fresh strategy
(a failed direct COPY, then the merge) is reported as ``first_update_rows_per_s``.

Targets: ``writer`` at least 5x (a) and within 2x of (b). Each timed write starts
from the same state (truncate or re-seed, then VACUUM ANALYZE, none of it timed);
the best of ``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from benchmarks.common import Database, database, emit, machine, note
from services.writer import plan, store
from services.writer.sql import quote
from shared.airbnb.pivots import scrape_time
from shared.messages import RowBatch
from shared.metric_tables import METRIC_TABLES, MetricTable

TABLES = ("chart_query", "list_of_metrics")
CHUNK_ROWS = 1_000
ACCOUNT_ID = "424242"
SCRAPE_DAY = dt.date(2025, 7, 11)
BASE_DAY = dt.date(2020, 1, 5)
TARGET_VS_INSERT = 5.0  # writer rows/s >= 5x the ORM-style INSERT
TARGET_VS_FLOOR = 2.0  # COPY-floor rows/s <= 2x the writer


# --- rows ---------------------------------------------------------------------------------------


def make_rows(table: MetricTable, n: int, version: int) -> list[plan.Row]:
    """``n`` converted rows of ``table`` (column order), chunk i = listing i; the key of
    row j does not depend on ``version``, every metric value does."""
    time_ = scrape_time(SCRAPE_DAY)
    rows: list[plan.Row] = []
    for j in range(n):
        listing = str(10**17 + j // CHUNK_ROWS)
        day = BASE_DAY + dt.timedelta(days=j % CHUNK_ROWS)
        v = version + j % 97
        row: list[Any] = []
        for c in table.columns:
            name, kind = c.name, c.sql_type
            if name == "account_id":
                row.append(ACCOUNT_ID)
            elif name == "airbnb_listing_id":
                row.append(listing)
            elif name in ("metric_date", "window_start"):
                row.append(day)
            elif name == "window_end":
                row.append(day + dt.timedelta(days=6))
            elif name == "time":
                row.append(time_)
            elif name == "airbnb_internal_name":
                row.append(f"listing-{listing[-4:]}")
            elif kind == "double precision":
                row.append(v / 1013)
            elif kind == "bigint":
                row.append(1000 + v)
            elif kind == "text":
                row.append(f"{v / 10.13:.1f}%")
            elif kind == "jsonb":
                row.append({})
            else:
                raise AssertionError(f"{name}: {kind}")
        rows.append(row)
    return rows


# --- (a) the ORM way ----------------------------------------------------------------------------


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    t = type(value)
    if t is str:
        return "'" + value.replace("'", "''") + "'"
    if t is int or t is float:
        return repr(value)
    if t is dt.date or t is dt.datetime:
        return f"'{value.isoformat()}'"
    if t is dict:
        return "'" + orjson.dumps(value).decode().replace("'", "''") + "'"
    raise TypeError(t)


def orm_insert_sql(table: MetricTable, rows: list[plan.Row]) -> str:
    cols = ", ".join(quote(c) for c in table.column_names)
    key = set(table.key)
    updates = ", ".join(
        f"{quote(c)} = EXCLUDED.{quote(c)}" for c in table.column_names if c not in key
    )
    values = ",".join("(" + ",".join(map(_literal, row)) + ")" for row in rows)
    return (
        f"INSERT INTO {table.qualified_name} ({cols}) VALUES {values} "
        f"ON CONFLICT ({', '.join(quote(k) for k in table.key)}) DO UPDATE SET {updates}"
    )


# --- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, conn: asyncpg.Connection, repeat: int) -> None:
        self.conn = conn
        self.repeat = repeat
        self.strategy = plan.CopyStrategy()
        self.orm_execute_s = 0.0

    async def new_job(self) -> uuid.UUID:
        job_id = uuid.uuid4()
        await self.conn.execute(
            """
            INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key,
                scrape_day, window_start, window_end)
            VALUES ($1, $2, 'full', 'manual', $3, $4, $4, $4)
            """,
            job_id,
            ACCOUNT_ID,
            f"bench:{job_id}",
            SCRAPE_DAY,
        )
        return job_id

    def planned(self, table: str, job_id: uuid.UUID, rows: list[plan.Row]) -> list[plan.Planned]:
        batch = []
        for no, start in enumerate(range(0, len(rows), CHUNK_ROWS)):
            chunk = rows[start : start + CHUNK_ROWS]
            message = RowBatch.model_construct(
                job_id=job_id,
                account_id=ACCOUNT_ID,
                listing_id=chunk[0][1],
                table=table,
                chunk_no=no,
                scrape_day=SCRAPE_DAY,
                rows=[],
            )
            batch.append(plan.Planned(message, chunk))
        return batch

    async def reset(self, spec: MetricTable, seed: list[plan.Row] | None) -> None:
        await self.conn.execute(f"TRUNCATE {spec.qualified_name}")
        if seed is not None:
            await self.conn.copy_records_to_table(
                spec.name, schema_name="airbnb", records=seed, columns=spec.column_names
            )
        await self.conn.execute(f"VACUUM ANALYZE {spec.qualified_name}")

    async def best(
        self,
        prepare: Callable[[], Awaitable[object]],
        write: Callable[[object], Awaitable[None]],
    ) -> float:
        best = float("inf")
        for _ in range(self.repeat):
            arg = await prepare()
            started = time.perf_counter()
            await write(arg)
            best = min(best, time.perf_counter() - started)
        return best

    async def orm_s(self, spec: MetricTable, rows: list[plan.Row], prepare: Any) -> float:
        executes: list[float] = []

        async def write(_: object) -> None:
            text = orm_insert_sql(spec, rows)
            started = time.perf_counter()
            status = await self.conn.execute(text)
            executes.append(time.perf_counter() - started)
            assert status.endswith(f" {len(rows)}"), status

        total = await self.best(prepare, write)
        self.orm_execute_s = min(executes)
        return total

    async def floor_s(self, spec: MetricTable, rows: list[plan.Row]) -> float:
        floor = f"bench_floor_{spec.name}"
        await self.conn.execute(
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {floor} (LIKE {spec.qualified_name})"
        )

        async def prepare() -> None:
            await self.conn.execute(f"TRUNCATE {floor}")
            await self.conn.execute(f"VACUUM ANALYZE {floor}")

        async def write(_: object) -> None:
            await self.conn.copy_records_to_table(floor, records=rows, columns=spec.column_names)

        return await self.best(prepare, write)


async def measure(
    conn: asyncpg.Connection, db: Database, table: str, n: int, case: str, repeat: int
) -> dict[str, Any]:
    spec = METRIC_TABLES[table]  # type: ignore[index]
    seed = make_rows(spec, n, 0) if case == "update" else None
    rows = make_rows(spec, n, 1 if case == "update" else 0)
    bench = Bench(conn, repeat)

    async def prepare() -> None:
        await bench.reset(spec, seed)

    first_update_s = None
    if case == "update":
        # A fresh strategy: the direct COPY fails on the first existing row, then merges.
        await prepare()
        job = await bench.new_job()
        started = time.perf_counter()
        await store.commit_batch(conn, bench.planned(table, job, rows), bench.strategy)
        first_update_s = time.perf_counter() - started

    async def prepare_job() -> uuid.UUID:
        await prepare()
        return await bench.new_job()

    async def writer_write(job_id: Any) -> None:
        result = await store.commit_batch(conn, bench.planned(table, job_id, rows), bench.strategy)
        assert result.rows_copied == len(rows), result

    writer = await bench.best(prepare_job, writer_write)
    orm = await bench.orm_s(spec, rows, prepare)
    floor = await bench.floor_s(spec, rows)
    vs_insert = orm / writer
    vs_floor = writer / floor
    line: dict[str, Any] = {
        "benchmark": "writer_upsert",
        "table": table,
        "rows": n,
        "case": case,
        "writer_rows_per_s": round(n / writer),
        "orm_insert_rows_per_s": round(n / orm),
        "orm_insert_statement_only_rows_per_s": round(n / bench.orm_execute_s),
        "copy_floor_rows_per_s": round(n / floor),
        "ratio_vs_orm_insert": round(vs_insert, 2),
        "ratio_vs_orm_insert_statement_only": round(bench.orm_execute_s / writer, 2),
        "ratio_floor_over_writer": round(vs_floor, 2),
        "target": f">= {TARGET_VS_INSERT}x orm_insert, <= {TARGET_VS_FLOOR}x floor",
        "ok": vs_insert >= TARGET_VS_INSERT and vs_floor <= TARGET_VS_FLOOR,
    }
    if first_update_s is not None:
        line["first_update_rows_per_s"] = round(n / first_update_s)
    line.update(
        postgres=db.server_version, embedded_postgres=db.embedded, repeat=repeat, **machine()
    )
    return line


async def run(db: Database, sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db.url)
    await store.init_connection(conn)
    lines: list[dict[str, Any]] = []
    try:
        await conn.execute(
            "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
            " user_agent) VALUES ($1, 'x', 'bench', 'bench')",
            ACCOUNT_ID,
        )
        for table in TABLES:
            for n in sizes:
                for case in ("empty", "update"):
                    note(f"writer: {table} {n} rows, {case}")
                    line = await measure(conn, db, table, n, case, repeat)
                    emit(line)
                    lines.append(line)
    finally:
        await conn.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="batch sizes in rows (1000,10000,100000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure, best kept")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp, database(Path(tmp)) as db:
        lines = asyncio.run(run(db, sizes, args.repeat))
    return 0 if lines else 1


if __name__ == "__main__":
    raise SystemExit(main())
