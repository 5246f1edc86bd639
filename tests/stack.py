"""The whole data path as real processes, for end-to-end tests.

A :class:`Stack` starts the simulator (as Airbnb), schedulers, fetchers and
writers with ``sync-airbnb`` subprocesses, registers simulated accounts
directly in the database (credentials encrypted as the admin API would), and
reads back jobs and rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from shared.airbnb import cookies
from shared.crypto import CredentialCipher
from shared.metric_tables import METRIC_TABLES
from shared.migrate import apply_migrations
from tests.infra import (
    NatsServer,
    PostgresServer,
    ServiceLauncher,
    ServiceProcess,
    create_database,
    drop_database,
    new_database_name,
)

FINAL = ("succeeded", "partial", "failed")
# A cron that never fires on a test's scrape day (31 December, 23:59 UTC).
NO_DAILY_RUN = "59 23 31 12 *"
# The browser the simulated hosts' cookies come from: the fetcher's client hints and its
# TLS impersonation follow it, and the simulator checks that they agree.
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)
# A process killed mid-work is noticed after seconds, not minutes; the rest heartbeat.
FAST_RECOVERY_ENV = {
    "JETSTREAM_ACK_WAIT_S": "4",
    "FETCHER_HEARTBEAT_S": "1",
    "FETCHER_RETRY_BASE_S": "0.5",
    "FETCHER_RETRY_CAP_S": "2",
    "WRITER_DB_RETRY_MAX_S": "2",
}


@dataclass
class Simulator:
    """A ``sync-airbnb simulator`` process (Airbnb, as the tests see it) and its control API.

    Every test that needs the simulator as a process starts it with :meth:`start`: through
    the ``start_simulator`` fixture (tests/conftest.py), or :meth:`Stack.start_simulator`.
    """

    proc: ServiceProcess
    url: str
    seed: int
    accounts: list[dict[str, Any]]
    verify: ssl.SSLContext | bool = True  # what checks its certificate, when it serves HTTPS

    @classmethod
    async def start(
        cls,
        launcher: ServiceLauncher,
        *,
        seed: int,
        accounts: int = 2,
        listings: int = 3,
        today: dt.date | None = None,
        faults: dict[str, Any] | None = None,
        port: int = 0,
        tls_dir: Path | None = None,
        **env: str,
    ) -> Simulator:
        """Start it and wait until it listens (on ``port``, or on the port it announces).

        ``today`` pins its clock (``SYNC_AIRBNB_TODAY``), ``faults`` its fault injection
        (``SIM_FAULTS``), ``tls_dir`` makes it serve HTTPS with a certificate written there;
        ``env`` is more environment (``SIM_STATE_DIR=...``).
        """
        args = [
            *("simulator", "--port", str(port), "--accounts", str(accounts)),
            *("--listings", str(listings), "--seed", str(seed)),
        ]
        if tls_dir is not None:
            args += ["--tls-dir", str(tls_dir)]
        if today is not None:
            env = {"SYNC_AIRBNB_TODAY": today.isoformat(), **env}
        if faults:
            env = {**env, "SIM_FAULTS": orjson.dumps(faults).decode()}
        proc = launcher.start(args, env=env)
        url = proc.wait_for_log(r"simulator listening on (https?://127\.0\.0\.1:\d+)").group(1)
        verify = ssl.create_default_context(cafile=tls_dir / "cert.pem") if tls_dir else True
        sim = cls(proc, url, seed, [], verify)
        sim.accounts = await sim.get("/_sim/accounts")
        return sim

    async def get(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + path, ssl=self.verify) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    async def send(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body, ssl=self.verify) as resp,
        ):
            resp.raise_for_status()
            return await resp.json(content_type=None)

    async def requests(self, account_id: str | None = None) -> dict[str, Any]:
        """What it counted: per account, or of one account (nothing yet: a total of 0)."""
        counts = await self.get("/_sim/requests")
        if account_id is None:
            return dict(counts)
        return dict(counts.get(account_id, {"total": 0, "listings": {}}))

    async def faults(self, patch: dict[str, Any]) -> None:
        """Change its fault injection (``POST /_sim/faults``)."""
        await self.send("POST", "/_sim/faults", patch)


StartSimulator = Callable[..., Awaitable[Simulator]]
"""The ``start_simulator`` fixture: ``await start_simulator(seed=..., **options)``."""


@dataclass
class Stack:
    launcher: ServiceLauncher
    database_url: str
    secret_keys: str
    today: dt.date
    env: dict[str, str] = field(default_factory=dict)
    simulator: Simulator | None = None
    nats: NatsServer | None = None

    def service_env(self, **extra: str) -> dict[str, str]:
        env = {
            "SYNC_AIRBNB_TODAY": self.today.isoformat(),
            # No daily run, and no catch-up of one at start, unless a test asks: the session
            # database holds other tests' accounts, and a run would sync them all.
            "SCHEDULE_CRON": NO_DAILY_RUN,
            **self.env,
            **extra,
        }
        if self.simulator:
            env["AIRBNB_BASE_URL"] = self.simulator.url
        return env

    async def start_simulator(
        self,
        accounts: int,
        listings: int,
        seed: int,
        faults: dict[str, Any] | None = None,
        port: int | None = None,
        **extra_env: str,
    ) -> Simulator:
        """The stack's simulator (:meth:`Simulator.start`) on the stack's day; the services
        started after it are pointed at it."""
        sim = await Simulator.start(
            self.launcher,
            seed=seed,
            accounts=accounts,
            listings=listings,
            today=self.today,
            faults=faults,
            port=port or 0,
            **extra_env,
        )
        self.simulator = sim
        return sim

    def start(self, command: str, **env: str) -> ServiceProcess:
        proc = self.launcher.start([command], env=self.service_env(**env))
        proc.wait_for_log(rf"{command} ready, listening", timeout=30)
        return proc

    async def register(self, db: asyncpg.Connection, accounts: Iterable[dict[str, Any]]) -> None:
        """Insert the accounts as the admin API would store them: the auth cookies only."""
        cipher = CredentialCipher(self.secret_keys.split(","))
        await db.executemany(
            """
            INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,
                                         user_agent)
            VALUES ($1, $2, 'test-client', $3)
            ON CONFLICT (account_id) DO NOTHING
            """,
            [
                (
                    a["account_id"],
                    cipher.encrypt(cookies.intake(a["cookie"], a["account_id"])),
                    CHROME_UA,
                )
                for a in accounts
            ],
        )


@contextlib.asynccontextmanager
async def isolated_stack(
    workdir: Path,
    postgres: PostgresServer,
    secret_keys: str,
    today: dt.date,
    *,
    database_prefix: str,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """A :class:`Stack` with a nats-server and a migrated database of its own, both gone
    afterwards. A scheduler backfills every never-synced account of its database at start
    and services replay what their streams hold, so a test that counts jobs or messages
    must see only its own; ``env`` is more environment for every service."""
    nats_server = NatsServer(workdir / "nats")
    nats_server.start()
    name = new_database_name(database_prefix)
    url = await create_database(postgres, name)
    apply_migrations(url)
    base_env = {
        "NATS_URL": nats_server.url,
        "DATABASE_URL": url,
        "SECRET_KEYS": secret_keys,
        "AIRBNB_MIN_INTERVAL_S": "0",
        "HTTP_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    launcher = ServiceLauncher(base_env=base_env, logdir=workdir)
    try:
        yield Stack(launcher, url, secret_keys, today, nats=nats_server)
    finally:
        launcher.cleanup()
        nats_server.stop()
        await drop_database(postgres, name)


async def wait_for_jobs(
    db: asyncpg.Connection,
    account_ids: Sequence[str],
    *,
    scrape_day: dt.date,
    timeout: float = 120,
    statuses: Sequence[str] = FINAL,
) -> list[asyncpg.Record]:
    """Wait until every account has a job of that scrape day in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await db.fetch(
            "SELECT * FROM airbnb.sync_jobs WHERE account_id = ANY($1) AND scrape_day = $2 "
            "ORDER BY account_id, created_at",
            list(account_ids),
            scrape_day,
        )
        done = {j["account_id"] for j in jobs if j["status"] in statuses}
        if done >= set(account_ids):
            return jobs
        if time.monotonic() > deadline:
            summary = [(j["account_id"], j["status"], j["listings_total"]) for j in jobs]
            raise TimeoutError(f"jobs not finished after {timeout}s: {summary}")
        await asyncio.sleep(0.25)


async def dump_rows(
    db: asyncpg.Connection, account_ids: Sequence[str]
) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every metrics row of these accounts: table -> key -> all columns."""
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    for table in METRIC_TABLES.values():
        rows = await db.fetch(
            f"SELECT * FROM {table.qualified_name} WHERE account_id = ANY($1)", list(account_ids)
        )
        out[table.name] = {tuple(r[k] for k in table.key): dict(r) for r in rows}
    return out
