"""Fetcher CPU per Airbnb response: flatten, pivot, encode and publish, beside ``orjson.loads``.

Run ``python -m benchmarks.bench_fetcher [--listings N] [--repeat R]``. The bodies are one
listing's whole first-run poll plan, answered by the simulator's own response builders
(the code that answers ``sync-airbnb simulator``), so sizes and shapes are those the
fetcher sees. Per listing the benchmark does what ``services.fetcher.sync`` does after
each body arrives: ``pipeline.flatten_response`` per body (part ``flatten``), then
``pivot_listing`` (``pivot``), ``row_batches`` and ``published_result`` (``encode``:
the cut into chunks and the messages), and the JetStream publishes of every chunk and
the ListingResult, each encoded on the way out and its ack awaited (``publish``), to a
real ``nats-server`` with the project's streams (``topology.provision``).

The figure is this process's CPU time (``time.process_time``: the nats-server's work is
not ours) per response; the baseline is the CPU time of ``orjson.loads`` of the same
bodies, measured in the same run. Target: at most 3x.

The host is shared, so the speed of both moves from one moment to the next. The rounds
are therefore interleaved, ``loads, pipeline, loads, pipeline, ..., loads`` (``--repeat``
pipeline rounds of ``--listings`` listings each, one more loads round), and each pipeline
round is divided by the mean of the two loads rounds around it: a ratio taken over about
a tenth of a second in which both saw the same host. ``ratio`` is the median of those
ratios (``ok`` is judged on it), next to their min and max; the µs figures are the best
round of each kind, and the breakdown is that of the best pipeline round.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import emit, machine, nats_server, note
from services.fetcher import pipeline
from services.fetcher.app import chunk_limit
from services.fetcher.settings import FetcherSettings
from services.fetcher.sync import publish_batches, publish_result
from services.simulator.data import build_world
from services.simulator.protocol import parse_request
from services.simulator.responses import build_response
from shared import topology
from shared.airbnb.flatteners import Listing
from shared.airbnb.payloads import PlannedRequest, plan_listing_requests
from shared.airbnb.windows import sync_window

SEED = 7
TODAY = dt.date(2025, 7, 11)
TARGET_RATIO = 3.0


def listing_bodies() -> tuple[Listing, list[tuple[PlannedRequest, bytes]]]:
    """One listing's first-run poll plan and the simulator's answer to each request."""
    account = build_world(1, 1, SEED).accounts[0]
    sim = account.listings[0]
    listing = Listing(sim.listing_id, sim.internal_name, sim.listing_name)
    window = sync_window(TODAY, first_run=True)
    out = []
    for request in plan_listing_requests(listing.listing_id, window, TODAY):
        parsed = parse_request(request.query.operation_name, orjson.dumps(request.body))
        out.append((request, orjson.dumps(build_response(SEED, account, parsed, TODAY, "t"))))
    return listing, out


async def run(nats_url: str, listings: int, repeat: int) -> dict[str, Any]:
    import nats

    listing, bodies = listing_bodies()
    parsed = [(request, orjson.loads(body)) for request, body in bodies]
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await topology.provision(js)
    default_max = FetcherSettings.model_fields["fetcher_chunk_max_bytes"].default
    max_bytes = chunk_limit(default_max, nc.max_payload)
    account_id = "1000001"
    parts = {"flatten": 0.0, "pivot": 0.0, "encode": 0.0, "publish": 0.0}

    def loads_round() -> float:
        started = time.process_time()
        for _ in range(listings):
            for _, body in bodies:
                orjson.loads(body)
        return time.process_time() - started

    async def pipeline_round() -> tuple[float, dict[str, float]]:
        spent = dict.fromkeys(parts, 0.0)
        started = time.process_time()
        for _ in range(listings):
            job_id = uuid.uuid4()
            t0 = time.process_time()
            flattened = [pipeline.flatten_response(request, body) for request, body in parsed]
            t1 = time.process_time()
            tables = pipeline.pivot_listing(
                flattened, account_id=account_id, listing=listing, scrape_day=TODAY
            )
            t2 = time.process_time()
            batches = pipeline.row_batches(
                job_id=job_id,
                account_id=account_id,
                listing_id=listing.listing_id,
                scrape_day=TODAY,
                tables=tables,
                max_bytes=max_bytes,
            )
            result = pipeline.published_result(
                job_id=job_id,
                account_id=account_id,
                listing=listing,
                tables=tables,
                batches=batches,
            )
            t3 = time.process_time()
            await publish_batches(js, batches)
            await publish_result(js, result)
            t4 = time.process_time()
            spent["flatten"] += t1 - t0
            spent["pivot"] += t2 - t1
            spent["encode"] += t3 - t2
            spent["publish"] += t4 - t3
        return time.process_time() - started, spent

    try:
        await pipeline_round()  # warm: connections, caches, the stream's first blocks
        loads_s = [loads_round()]
        rounds: list[tuple[float, dict[str, float]]] = []
        for _ in range(repeat):
            rounds.append(await pipeline_round())
            loads_s.append(loads_round())
        rows = {t: len(r) for t, r in tables_of(parsed, listing, account_id).items()}
    finally:
        await nc.drain()
    responses = listings * len(bodies)
    ratios = sorted(
        total / ((before + after) / 2)
        for (total, _), before, after in zip(rounds, loads_s, loads_s[1:], strict=False)
    )
    ratio = statistics.median(ratios)
    best, best_parts = min(rounds, key=lambda r: r[0])
    loads_best = min(loads_s)
    return {
        "benchmark": "fetcher_cpu_per_response",
        "responses": responses,
        "responses_per_listing": len(bodies),
        "rows_per_listing": rows,
        "body_bytes_mean": round(sum(len(b) for _, b in bodies) / len(bodies)),
        "pipeline_us_per_response": round(best / responses * 1e6, 1),
        "parts_us_per_response": {k: round(v / responses * 1e6, 1) for k, v in best_parts.items()},
        "orjson_loads_us_per_response": round(loads_best / responses * 1e6, 1),
        "ratio": round(ratio, 2),
        "ratio_min": round(ratios[0], 2),
        "ratio_max": round(ratios[-1], 2),
        "target_ratio": TARGET_RATIO,
        "ok": ratio <= TARGET_RATIO,
        "repeat": repeat,
        **machine(),
    }


def tables_of(
    parsed: list[tuple[PlannedRequest, Any]], listing: Listing, account_id: str
) -> dict[str, list[Any]]:
    flattened = [pipeline.flatten_response(r, b) for r, b in parsed]
    return pipeline.pivot_listing(  # type: ignore[return-value]
        flattened, account_id=account_id, listing=listing, scrape_day=TODAY
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=20, help="listings per round (20)")
    parser.add_argument(
        "--repeat", type=int, default=11, help="pipeline rounds, each between two loads rounds (11)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fetcher-") as tmp, nats_server(Path(tmp)) as url:
        note("fetcher: CPU per response")
        emit(asyncio.run(run(url, args.listings, args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
