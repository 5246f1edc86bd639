"""Storage: bytes per listing-year on plain PostgreSQL and in JetStream, at one daily
incremental sync.

Run ``python -m benchmarks.bench_storage [--listings N] [--days D]``. The data is what a
year of daily incremental syncs leaves, generated inside PostgreSQL by
``benchmarks.bench_insights.load`` (the metrics tables, accounts of 10 listings), plus
the bookkeeping the scheduler and the writer write for the same syncs, also in SQL: one
``sync_jobs`` row per account and scrape day (succeeded, incremental, its window from
``shared.airbnb.windows.sync_window``), one ``sync_job_listings`` row per job and
listing (committed), one ledger row (``sync_committed_chunks``) per job, listing, table
and chunk (the chunk count is the fetcher's own cut, ``services.fetcher.pipeline.
row_batches``, of a real day's rows), one ``scheduler_runs`` row per day. Then
``VACUUM ANALYZE`` and ``CHECKPOINT``, and per table ``pg_total_relation_size``,
``pg_relation_size`` (heap), ``pg_indexes_size`` and its rows.

Steady state: the metrics are kept ``RETENTION_METRICS`` (5 years), so they grow by
the measured listing-year each year; final jobs and their listings are kept
``RETENTION_JOBS_DAYS`` (400 > 365: a year and 35 days held); the ledger
``RETENTION_LEDGER_DAYS`` (30). JetStream: the last ``max_age`` (7 days) of every
message the fetcher publishes for these syncs, encoded as it encodes them (RowBatch
chunks of the rows just read back, ListingResult, JobEvent started) and the fetch
progress KV bucket (7-day TTL), published to a nats-server with the project's streams;
``stream info`` bytes. The sync requests' stream is a work queue: a request is removed
once a fetcher acks it, so at steady state it holds the requests not yet fetched (at
most a day's, printed as such).

Everything is extrapolated linearly to ``--extrapolate`` listings (1,000,000). The
floor printed beside each metrics table is its rows' data alone: the bytes of the
column values (``pg_column_size`` of each row's values, no tuple header, no page
overhead, no index), what no row store can go under.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_insights import LAST_SCRAPE_DAY, LISTINGS_PER_ACCOUNT, Sizes, load
from benchmarks.common import database, emit, machine, nats_server, note

METRIC_TABLES = ("chart_query", "list_of_metrics", "chart_summary")
GIB = 2**30


async def _windows(days: list[dt.date]) -> list[tuple[dt.date, dt.date, dt.date]]:
    from services.scheduler.settings import SchedulerSettings
    from shared.airbnb.windows import sync_window

    settings = SchedulerSettings.model_construct().window_settings()
    out = []
    for d in days:
        w = sync_window(d, first_run=False, settings=settings)
        out.append((d, w.start, w.end))
    return out


async def _day_rows(conn: Any, table: str, listing: str, day: dt.date) -> list[dict[str, Any]]:
    """One listing's rows of one scrape day, as the fetcher's pivots made them."""
    from shared.metric_tables import EXTRA_METRICS_COLUMN
    from shared.metric_tables import METRIC_TABLES as SPECS

    cols = SPECS[table].column_names  # type: ignore[index]
    rows = await conn.fetch(
        f"SELECT {', '.join(cols)} FROM airbnb.{table}"
        " WHERE airbnb_listing_id = $1 AND time = ($2::date)::timestamp AT TIME ZONE 'UTC'",
        listing,
        day,
    )
    out = []
    for r in rows:
        row = dict(r)
        extra = row.get(EXTRA_METRICS_COLUMN)
        row[EXTRA_METRICS_COLUMN] = orjson.loads(extra) if isinstance(extra, str) else extra
        out.append(row)
    return out


async def bookkeeping(url: str, sizes: Sizes, chunks: dict[str, int]) -> dict[str, float]:
    """The year's jobs, job listings, ledger and daily runs, as the services write them."""
    import asyncpg

    days = [sizes.first_day + dt.timedelta(days=i) for i in range(sizes.days)]
    windows = await _windows(days)
    conn = await asyncpg.connect(url)
    seconds: dict[str, float] = {}
    try:
        await conn.execute("SET synchronous_commit = off")
        rows = {t: await conn.fetchval(f"SELECT count(*) FROM airbnb.{t}") for t in METRIC_TABLES}
        per = {t: max(1, round(rows[t] / (sizes.listings * sizes.days))) for t in METRIC_TABLES}
        per_listing = sum(per.values())
        started = time.perf_counter()
        # Created at 05:00 (the cron), started a minute later, finished a few minutes on.
        await conn.execute(
            """
            INSERT INTO airbnb.sync_jobs (
                job_id, account_id, kind, trigger, dedup_key, scrape_day, window_start,
                window_end, status, listings_total, listings_succeeded, listings_failed,
                rows_written, created_at, started_at, finished_at, updated_at)
            SELECT gen_random_uuid(), a.account_id, 'incremental', 'schedule',
                   a.account_id || ':' || w.d || ':incremental', w.d, w.ws, w.we, 'succeeded',
                   n.listings, n.listings, 0, n.listings * $4::int,
                   w.d + time '05:00', w.d + time '05:01', w.d + time '05:09', w.d + time '05:09'
            FROM unnest($1::date[], $2::date[], $3::date[]) AS w(d, ws, we)
            CROSS JOIN airbnb.accounts a
            CROSS JOIN LATERAL (SELECT count(*)::int AS listings FROM airbnb.listings l
                                WHERE l.account_id = a.account_id) n
            ORDER BY w.d, a.account_id
            """,
            [w[0] for w in windows],
            [w[1] for w in windows],
            [w[2] for w in windows],
            per_listing,
        )
        seconds["sync_jobs"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO airbnb.sync_job_listings (
                job_id, airbnb_listing_id, status, chunks_expected, chunks_committed,
                rows_written, started_at, finished_at)
            SELECT j.job_id, l.airbnb_listing_id, 'committed', $1::int, $1::int, $2::int,
                   j.started_at, j.finished_at
            FROM airbnb.sync_jobs j JOIN airbnb.listings l USING (account_id)
            ORDER BY j.scrape_day, j.account_id, l.airbnb_listing_id
            """,
            sum(chunks.values()),
            per_listing,
        )
        seconds["sync_job_listings"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO airbnb.sync_committed_chunks (
                job_id, airbnb_listing_id, table_name, chunk_no, row_count, committed_at)
            SELECT jl.job_id, jl.airbnb_listing_id, t.name, c.no, t.per / t.chunks,
                   jl.finished_at
            FROM airbnb.sync_job_listings jl
            CROSS JOIN unnest($1::text[], $2::int[], $3::int[]) AS t(name, chunks, per)
            CROSS JOIN LATERAL generate_series(0, t.chunks - 1) AS c(no)
            """,
            list(METRIC_TABLES),
            [chunks[t] for t in METRIC_TABLES],
            [per[t] for t in METRIC_TABLES],
        )
        seconds["sync_committed_chunks"] = round(time.perf_counter() - started, 1)
        await conn.execute(
            """
            INSERT INTO airbnb.scheduler_runs
                (scrape_day, leader, started_at, finished_at, accounts, jobs_created)
            SELECT d, 'scheduler-0', d + time '05:00', d + time '05:00:07', $2, $2
            FROM unnest($1::date[]) AS d
            """,
            days,
            sizes.accounts,
        )
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return seconds


async def table_sizes(url: str) -> dict[str, dict[str, int]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            """
            SELECT c.relname AS name, pg_total_relation_size(c.oid) AS total,
                   pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS indexes,
                   pg_total_relation_size(c.oid) - pg_relation_size(c.oid)
                       - pg_indexes_size(c.oid) AS toast_and_maps
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'airbnb' AND c.relkind = 'r'
            ORDER BY pg_total_relation_size(c.oid) DESC
            """
        )
        out: dict[str, dict[str, int]] = {}
        for r in found:
            rows = await conn.fetchval(f"SELECT count(*) FROM airbnb.{r['name']}")
            out[r["name"]] = {
                "rows": rows,
                "total": r["total"],
                "heap": r["heap"],
                "indexes": r["indexes"],
                "toast_and_maps": r["toast_and_maps"],
            }
        for t in METRIC_TABLES:
            # The values alone: every column's bytes, no tuple header, page or index.
            cols = await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass"
                " AND attnum > 0 AND NOT attisdropped",
                f"airbnb.{t}",
            )
            expr = " + ".join(f"coalesce(pg_column_size({c['attname']}), 0)" for c in cols)
            out[t]["values_only"] = int(
                await conn.fetchval(f"SELECT sum({expr})::bigint FROM airbnb.{t}")
            )
        return out
    finally:
        await conn.close()


async def jetstream(url: str, nats_url: str, sizes: Sizes, days: int) -> dict[str, Any]:
    """The last ``days`` scrape days of the fetcher's messages, as it publishes them."""
    import asyncpg
    import nats

    from services.fetcher import pipeline
    from services.fetcher.announced import encode_listings
    from services.fetcher.sync import KV_PUBLISHED
    from shared import topology
    from shared.airbnb.flatteners import Listing
    from shared.messages import JobEvent, encode

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await topology.provision(js)
    kv = await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
    conn = await asyncpg.connect(url)
    chunks: dict[str, int] = dict.fromkeys(METRIC_TABLES, 0)
    published = 0
    try:
        jobs = await conn.fetch(
            "SELECT j.job_id, j.account_id, j.scrape_day, j.finished_at,"
            " array_agg(l.airbnb_listing_id ORDER BY l.airbnb_listing_id) AS listings,"
            " array_agg(l.airbnb_internal_name ORDER BY l.airbnb_listing_id) AS internal,"
            " array_agg(l.listing_name ORDER BY l.airbnb_listing_id) AS names"
            " FROM airbnb.sync_jobs j JOIN airbnb.listings l USING (account_id)"
            " WHERE j.scrape_day > $1 GROUP BY j.job_id ORDER BY j.scrape_day, j.account_id",
            LAST_SCRAPE_DAY - dt.timedelta(days=days),
        )
        for job in jobs:
            listings = [
                Listing(lid, internal, name)
                for lid, internal, name in zip(
                    job["listings"], job["internal"], job["names"], strict=True
                )
            ]
            job_id: uuid.UUID = job["job_id"]
            await kv.put(topology.fetch_listings_key(job_id), encode_listings(listings, None))
            event = JobEvent(
                job_id=job_id,
                account_id=job["account_id"],
                event="started",
                listings_total=len(listings),
                listing_ids=[x.listing_id for x in listings],
                at=job["finished_at"],
            )
            await js.publish(
                topology.SYNC_EVENTS,
                encode(event),
                headers={"Nats-Msg-Id": topology.job_event_msg_id(job_id, "started")},
            )
            for listing in listings:
                tables = {
                    t: await _day_rows(conn, t, listing.listing_id, job["scrape_day"])
                    for t in METRIC_TABLES
                }
                batches = pipeline.row_batches(
                    job_id=job_id,
                    account_id=job["account_id"],
                    listing_id=listing.listing_id,
                    scrape_day=job["scrape_day"],
                    tables=tables,  # type: ignore[arg-type]
                    max_bytes=512 * 1024,
                )
                for b in batches:
                    chunks[b.table] += 1
                    await js.publish(
                        topology.rows_subject(b.table),
                        encode(b),
                        headers={
                            "Nats-Msg-Id": topology.row_batch_msg_id(
                                b.job_id, b.listing_id, b.table, b.chunk_no
                            )
                        },
                    )
                result = pipeline.published_result(
                    job_id=job_id,
                    account_id=job["account_id"],
                    listing=listing,
                    tables=tables,  # type: ignore[arg-type]
                    batches=batches,
                )
                await js.publish(
                    topology.SYNC_PROGRESS,
                    encode(result),
                    headers={
                        "Nats-Msg-Id": topology.listing_result_msg_id(job_id, listing.listing_id)
                    },
                )
                await kv.put(topology.fetch_progress_key(job_id, listing.listing_id), KV_PUBLISHED)
                published += 1
        # A day of requests, as the scheduler publishes them (removed once fetched).
        from services.scheduler.plan import Account, Windows, plan_job, sync_request
        from services.scheduler.settings import SchedulerSettings

        settings = SchedulerSettings.model_construct()
        windows = Windows.for_day(LAST_SCRAPE_DAY, settings.window_settings())
        token = "gAAAAA" + "x" * 134  # a Fernet token of a short cookie is ~140 characters
        for a in range(sizes.accounts):
            account = Account(str(10**11 + a), token, "bench-client-version", "Mozilla/5.0")
            plan = plan_job(
                account,
                kind="incremental",
                trigger="schedule",
                scrape_day=LAST_SCRAPE_DAY,
                windows=windows,
                now=dt.datetime.now(dt.UTC),
            )
            await js.publish(
                topology.SYNC_REQUESTED,
                encode(sync_request(plan)),
                headers={"Nats-Msg-Id": topology.sync_request_msg_id(plan.dedup_key)},
            )
        streams: dict[str, Any] = {}
        for info in await js.streams_info():
            cfg = info.config
            streams[cfg.name or "?"] = {
                "bytes": info.state.bytes,
                "messages": info.state.messages,
                "retention": str(getattr(cfg.retention, "value", cfg.retention)),
                "max_age_days": round((cfg.max_age or 0) / 86_400, 2),
                "duplicate_window_s": cfg.duplicate_window,
            }
        return {"streams": streams, "listing_days": published, "chunks_per_table": chunks}
    finally:
        await conn.close()
        await nc.drain()


async def chunks_of_a_day(url: str) -> dict[str, int]:
    """How many RowBatch chunks one listing's day makes per table (the fetcher's cut)."""
    import asyncpg

    from services.fetcher import pipeline

    conn = await asyncpg.connect(url)
    try:
        listing = await conn.fetchval("SELECT min(airbnb_listing_id) FROM airbnb.listings")
        tables = {t: await _day_rows(conn, t, listing, LAST_SCRAPE_DAY) for t in METRIC_TABLES}
    finally:
        await conn.close()
    batches = pipeline.row_batches(
        job_id=uuid.uuid4(),
        account_id="1",
        listing_id=listing,
        scrape_day=LAST_SCRAPE_DAY,
        tables=tables,  # type: ignore[arg-type]
        max_bytes=512 * 1024,
    )
    out = dict.fromkeys(METRIC_TABLES, 0)
    for b in batches:
        out[b.table] += 1
    return out


def summarise(
    sizes: Sizes, tables: dict[str, dict[str, int]], js: dict[str, Any], target: int
) -> dict[str, Any]:
    """Per listing-year, per listing at steady state, and at ``target`` listings."""
    from services.scheduler.settings import SchedulerSettings

    s = SchedulerSettings.model_construct()
    year_share = {
        # what retention keeps at steady state, as a multiple of the days measured
        "sync_committed_chunks": s.retention_ledger_days / sizes.days,
        "sync_jobs": s.retention_jobs_days / sizes.days,
        "sync_job_listings": s.retention_jobs_days / sizes.days,
        "scheduler_runs": s.retention_jobs_days / sizes.days,  # never deleted: a row a day
    }
    scale = 365 / sizes.days
    per_listing_year = {
        name: {k: round(v * scale / sizes.listings) for k, v in t.items() if k != "rows"}
        | {"rows": round(t["rows"] * scale / sizes.listings, 1)}
        for name, t in tables.items()
    }
    metrics_year = sum(tables[t]["total"] for t in METRIC_TABLES) * scale / sizes.listings
    bookkeeping_steady = sum(
        tables[t]["total"] * share / sizes.listings
        for t, share in year_share.items()
        if t in tables
    )
    streams = js["streams"]
    per_day = js["listing_days"] / sizes.listings  # days of messages held per listing
    results_steady = streams["AIRBNB_SYNC_RESULTS"]["bytes"] / sizes.listings * (7 / per_day)
    kv = streams.get("KV_airbnb_fetch_progress", {}).get("bytes", 0)
    kv_steady = kv / sizes.listings * (7 / per_day)
    requests_day = streams["AIRBNB_SYNC_REQUESTS"]["bytes"] / sizes.listings
    per_listing = {
        "metrics_per_year": round(metrics_year),
        "bookkeeping_steady": round(bookkeeping_steady),
        "jetstream_results_7d": round(results_steady),
        "jetstream_kv_7d": round(kv_steady),
        "jetstream_requests_1d_max": round(requests_day),
    }
    at_target = {
        "metrics_gib_per_year": round(metrics_year * target / GIB, 1),
        "metrics_gib_at_5_years": round(metrics_year * 5 * target / GIB, 1),
        "bookkeeping_gib_steady": round(bookkeeping_steady * target / GIB, 1),
        "jetstream_gib_steady": round(
            (results_steady + kv_steady + requests_day) * target / GIB, 1
        ),
    }
    floors = {
        t: {
            "values_only_per_listing_year": round(
                tables[t]["values_only"] * scale / sizes.listings
            ),
            "ratio_total_vs_values": round(tables[t]["total"] / tables[t]["values_only"], 2),
        }
        for t in METRIC_TABLES
    }
    return {
        "per_listing_year": per_listing_year,
        "per_listing_bytes": per_listing,
        "floors": floors,
        "at_listings": target,
        "at_target": at_target,
        "retention_share_of_year": year_share,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=100, help="listings (100)")
    parser.add_argument("--days", type=int, default=365, help="scrape days (365)")
    parser.add_argument("--stream-days", type=int, default=7, help="days of messages (7)")
    parser.add_argument(
        "--extrapolate", type=int, default=1_000_000, help="listings to extrapolate to"
    )
    args = parser.parse_args(argv)
    if args.listings % LISTINGS_PER_ACCOUNT:
        parser.error(f"--listings must be a multiple of {LISTINGS_PER_ACCOUNT}")
    sizes = Sizes(args.listings, args.days)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        workdir = Path(tmp)
        with database(workdir) as db, nats_server(workdir) as nats_url:
            started = time.perf_counter()
            meta = asyncio.run(load(db.url, sizes))
            chunks = asyncio.run(chunks_of_a_day(db.url))
            note(f"storage: chunks per listing-day {chunks}")
            seconds = asyncio.run(bookkeeping(db.url, sizes, chunks))
            tables = asyncio.run(table_sizes(db.url))
            js = asyncio.run(jetstream(db.url, nats_url, sizes, args.stream_days))
            line: dict[str, Any] = {
                "benchmark": "storage",
                "listings": sizes.listings,
                "accounts": sizes.accounts,
                "days": sizes.days,
                "chunks_per_listing_day": chunks,
                "tables": tables,
                "jetstream": js,
                **summarise(sizes, tables, js, args.extrapolate),
                "load_s": meta.get("load_s"),
                "bookkeeping_s": seconds,
                "seconds": round(time.perf_counter() - started, 1),
                "postgres": db.server_version,
                "embedded_postgres": db.embedded,
                "timescaledb": False,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                **machine(),
            }
        emit(line)
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
