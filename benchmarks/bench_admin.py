"""Load on ``GET /api/v1/accounts/{id}`` of a real ``sync-airbnb admin`` process.

Run ``python -m benchmarks.bench_admin [--duration S] [--concurrency C]``. It starts
the admin service (and, unless ``DATABASE_URL`` and ``NATS_URL`` are set, its own
nats-server and PostgreSQL, as the tests do), creates one account, loads that
account's GET for ``--duration`` seconds (30 by default) and prints one JSON line:
throughput (requests per second) and latency percentiles in milliseconds.

The load comes from ``wrk`` when it is on PATH, otherwise from an aiohttp client in a
separate process (so the generator never shares an event loop or a core's GIL with
the server). Only loopback addresses are used; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet

API_KEY = "bench-key-0001"
VENV_BIN = Path(sys.executable).parent


# --- the load generators ------------------------------------------------------------------------


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def _aiohttp_load(url: str, concurrency: int, duration: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = non_2xx = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": API_KEY}) as http:
        # Warm the connections (and the server's pool) before the clock starts.
        await asyncio.gather(*(http.get(url) for _ in range(concurrency)))
        deadline = time.perf_counter() + duration

        async def user() -> None:
            nonlocal errors, non_2xx
            while (start := time.perf_counter()) < deadline:
                try:
                    async with http.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            non_2xx += 1
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "non_2xx": non_2xx,
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(_percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "max_ms": round((latencies[-1] if latencies else float("nan")) * 1000, 2),
    }


def _load_process(url: str, concurrency: int, duration: float, out: Any) -> None:
    out.send(asyncio.run(_aiohttp_load(url, concurrency, duration)))
    out.close()


def run_aiohttp(url: str, concurrency: int, duration: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_process, args=(url, concurrency, duration, send))
    proc.start()
    try:
        if not recv.poll(duration + 60):
            raise RuntimeError("the load generator did not report in time")
        return recv.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(wrk: str, url: str, concurrency: int, duration: float) -> dict[str, Any]:
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{int(duration)}s",
            "--latency",
            "-H",
            f"X-API-Key: {API_KEY}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    pct = {
        p: _wrk_ms(v, u)
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": total,
        "errors": sum(map(int, errors.groups())) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "elapsed_s": duration,
        "throughput_rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": pct.get("50"),
        "p90_ms": pct.get("90"),
        "p99_ms": pct.get("99"),
    }


# --- the system under test ----------------------------------------------------------------------


@contextlib.contextmanager
def infrastructure(workdir: Path) -> Iterator[tuple[str, str]]:
    """(DATABASE_URL, NATS_URL): the environment's, or servers of our own."""
    db_url, nats_url = os.environ.get("DATABASE_URL"), os.environ.get("NATS_URL")
    if db_url and nats_url:
        yield db_url, nats_url
        return
    # The test suite's helpers: a nats-server binary and an embedded PostgreSQL.
    from shared.migrate import apply_migrations
    from tests.infra import NatsServer, new_database_name, start_postgres

    nats = NatsServer(workdir / "nats")
    nats.start()
    pg = start_postgres(workdir)
    try:
        import asyncpg

        name = new_database_name("sync_airbnb_bench")

        async def create() -> None:
            conn = await asyncpg.connect(pg.admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        url = pg.database_url(name)
        apply_migrations(url)
        yield url, nats.url
    finally:
        pg.stop()
        nats.stop()


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_admin(db_url: str, nats_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "NATS_URL": nats_url,
        "SECRET_KEYS": Fernet.generate_key().decode(),
        "ADMIN_API_KEYS": API_KEY,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "sync-airbnb"), "admin"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"admin exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if _http("GET", f"http://127.0.0.1:{port}/health/ready")[0] == 200:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("admin did not become ready in 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (30)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (32)")
    parser.add_argument(
        "--tool",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator; auto = wrk when on PATH, else aiohttp",
    )
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    tool = args.tool if args.tool != "auto" else ("wrk" if wrk else "aiohttp")
    if tool == "wrk" and not wrk:
        parser.error("wrk is not on PATH")

    from tests.infra import free_port

    with (
        tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp,
        infrastructure(Path(tmp)) as (
            db_url,
            nats_url,
        ),
    ):
        port = free_port()
        admin = start_admin(db_url, nats_url, port, Path(tmp) / "admin.log")
        try:
            base = f"http://127.0.0.1:{port}/api/v1/accounts"
            account_id = str(random.randint(10**14, 10**15 - 1))
            status, body = _http(
                "POST",
                base,
                {
                    "account_id": account_id,
                    "airbnb_cookie": "_user_attributes=bench",
                    "x_client_version": "bench",
                    "user_agent": "bench",
                },
            )
            if status not in (200, 201):
                raise RuntimeError(f"creating the account failed: {status} {body[:200]!r}")
            url = f"{base}/{account_id}"
            if tool == "wrk":
                result = run_wrk(wrk, url, args.concurrency, args.duration)  # type: ignore[arg-type]
            else:
                result = run_aiohttp(url, args.concurrency, args.duration)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(admin.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                admin.wait(timeout=15)
    line = {
        "bench": "admin_get_account",
        "route": "GET /api/v1/accounts/{account_id}",
        "tool": tool,
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        **result,
    }
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 0 if result["requests"] and not result["errors"] and not result["non_2xx"] else 1


if __name__ == "__main__":
    sys.exit(main())
