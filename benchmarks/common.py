"""What the benchmarks share: real servers, the JSON line, timing and RSS sampling.

The servers come from the test suite's helpers (tests/infra.py), never a copy of them:
PostgreSQL is ``DATABASE_URL`` when it is set, else an embedded server; either way each
benchmark creates a scratch database of its own, applies the migrations, and drops it
at the end. NATS is always a ``nats-server`` of our own (fresh streams, nothing left
over from another run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil


def emit(line: dict[str, Any]) -> None:
    """One benchmark result: one JSON line on stdout."""
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """Progress for the human watching: stderr, so stdout stays JSON lines only."""
    err = sys.__stderr__ or sys.stderr
    err.write(f"[bench] {text}\n")
    err.flush()


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Best per-call time: the least disturbed run is the closest to the true cost."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


@dataclass(frozen=True)
class Database:
    url: str
    embedded: bool
    server_version: str


@contextlib.contextmanager
def database(workdir: Path, prefix: str = "sync_airbnb_bench") -> Iterator[Database]:
    """A scratch database with the migrations applied, on DATABASE_URL's server or an
    embedded one; dropped (and the embedded server stopped) on exit."""
    import asyncpg

    from shared.migrate import apply_migrations
    from tests.infra import create_database, drop_database, new_database_name, start_postgres

    server = start_postgres(workdir / "pg")
    name = new_database_name(prefix)
    try:
        url = asyncio.run(create_database(server, name))
        try:
            apply_migrations(url)

            async def version() -> str:
                conn = await asyncpg.connect(url)
                try:
                    return str(await conn.fetchval("SHOW server_version"))
                finally:
                    await conn.close()

            yield Database(url, server.embedded is not None, asyncio.run(version()))
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(server, name))
    finally:
        server.stop()


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    from tests.infra import NatsServer

    server = NatsServer(workdir / "nats")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
    }


@dataclass
class RssSampler:
    """Peak RSS of some processes, sampled every ``interval_s`` on a thread of its own."""

    pids: dict[str, int]
    interval_s: float = 0.05
    peak: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > self.peak.get(name, 0):
                self.peak[name] = rss
            self.samples.setdefault(name, []).append((time.monotonic(), rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def peak_mib(self) -> dict[str, float]:
        return {name: round(rss / 2**20, 1) for name, rss in sorted(self.peak.items())}
