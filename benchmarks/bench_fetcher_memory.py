"""Fetcher memory while it syncs one account with many listings.

Run ``python -m benchmarks.bench_fetcher_memory [--listings 500] [--small 50]``. Two
first-run syncs of one simulated account, each through real processes (simulator,
scheduler, 1 fetcher, 1 writer; fresh nats-server and scratch database each, see
bench_end_to_end), one with ``--small`` listings and one with ``--listings``; the
fetcher's RSS is sampled every 50 ms. Targets: the fetcher's peak RSS under 150 MB
during the large sync, and no growth with the number of listings: the large sync's
peak within 10 MiB of the small one's (the baseline, measured in the same run), and
within 10 MiB between the first and last quarter of the large sync.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_end_to_end import backfill
from benchmarks.common import database, emit, machine, nats_server, note

TARGET_MB = 150.0  # MB as the issue says: 150e6 bytes
GROWTH_MIB = 10.0


def sync_once(listings: int, timeout_s: float) -> dict[str, Any]:
    note(f"fetcher memory: 1 account x {listings} listings")
    with tempfile.TemporaryDirectory(prefix="bench-fetcher-mem-") as tmp:
        workdir = Path(tmp)
        with database(workdir) as db, nats_server(workdir) as nats_url:
            return asyncio.run(
                backfill(
                    db.url,
                    nats_url,
                    workdir,
                    accounts=1,
                    listings=listings,
                    paced=False,
                    timeout_s=timeout_s,
                    fetchers=1,
                )
            )


def quarter_peaks(samples: list[tuple[float, int]]) -> tuple[float, float]:
    """Peak RSS (MiB) of the first and of the last quarter of the samples."""
    q = max(1, len(samples) // 4)
    first = max(rss for _, rss in samples[:q]) / 2**20
    last = max(rss for _, rss in samples[-q:]) / 2**20
    return first, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=500, help="listings of the large sync")
    parser.add_argument("--small", type=int, default=50, help="listings of the baseline sync")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per sync (1800)")
    args = parser.parse_args(argv)
    small = sync_once(args.small, args.timeout)
    large = sync_once(args.listings, args.timeout)
    small_peak = small["peak_rss_mib"]["fetcher_1"]
    large_peak = large["peak_rss_mib"]["fetcher_1"]
    first_q, last_q = quarter_peaks(large["_rss_samples"]["fetcher_1"])
    peak_mb = large_peak * 2**20 / 1e6
    growth = large_peak - small_peak
    emit(
        {
            "benchmark": "fetcher_memory",
            "listings": args.listings,
            "fetcher_peak_rss_mib": large_peak,
            "fetcher_peak_rss_mb": round(peak_mb, 1),
            "baseline_listings": args.small,
            "baseline_fetcher_peak_rss_mib": small_peak,
            "growth_vs_baseline_mib": round(growth, 1),
            "ratio_vs_baseline": round(large_peak / small_peak, 3),
            "first_quarter_peak_mib": round(first_q, 1),
            "last_quarter_peak_mib": round(last_q, 1),
            "sync_wall_s": large["wall_s"],
            "responses": large["responses"],
            "rows": large["rows"],
            "jobs": large["jobs"],
            "target": f"< {TARGET_MB} MB, growth < {GROWTH_MIB} MiB",
            "ok": peak_mb < TARGET_MB and growth < GROWTH_MIB and last_q - first_q < GROWTH_MIB,
            **machine(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
