"""Every benchmark, one after the other: ``python -m benchmarks.run_all`` (or ``make bench``).

Each runs as its own process (``python -m benchmarks.<name>``), so one benchmark's
servers, caches and memory never colour the next; their JSON lines pass through to
stdout unchanged (one line per benchmark or case, each with its baseline or floor
measured in the same run, and the ratio), their progress notes to stderr. The exit
code is 1 if a benchmark failed to run or a line says ``"ok": false``.

``--only writer,scheduler`` runs some of them; ``--quick`` runs each at a small size
(a smoke test of the harness, not figures to record).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import orjson

from benchmarks.common import note

BENCHMARKS: dict[str, list[str]] = {
    "flatten": [],
    "fetcher": [],
    "writer": [],
    "scheduler": [],
    "fetcher_memory": [],
    "end_to_end": [],
    "admin": [],
    "insights": [],
    "storage": [],
    "fleet": [],
}
QUICK: dict[str, list[str]] = {
    "flatten": ["--repeat", "2"],
    "fetcher": ["--listings", "3", "--repeat", "2"],
    "writer": ["--sizes", "1000", "--repeat", "1"],
    "scheduler": ["--accounts", "2000", "--repeat", "1"],
    "fetcher_memory": ["--listings", "10", "--small", "5"],
    "end_to_end": ["--accounts", "4", "--listings", "2", "--skip-paced"],
    "admin": ["--duration", "3"],
    "insights": ["--listings", "20", "--days", "60", "--runs", "5"],
    "storage": ["--listings", "10", "--days", "30"],
    "fleet": ["--accounts", "20", "--listings", "1", "--interval", "0.2", "--simulators", "2"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a harness smoke test")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    failed: list[str] = []
    for name in names:
        extra = QUICK[name] if args.quick else BENCHMARKS[name]
        note(f"== bench_{name} {' '.join(extra)}")
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.bench_{name}", *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            try:
                if orjson.loads(line).get("ok") is False:
                    failed.append(f"{name}: target missed")
            except orjson.JSONDecodeError:
                failed.append(f"{name}: printed a line that is not JSON")
        if proc.wait() != 0:
            failed.append(f"{name}: exit code {proc.returncode}")
        note(f"== bench_{name} done in {time.monotonic() - started:.0f}s")
    for reason in failed:
        note(f"MISSED {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
