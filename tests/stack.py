"""The whole data path as real processes, for end-to-end tests.

A :class:`Stack` starts the simulator (as Airbnb), schedulers, fetchers and
writers with ``sync-airbnb`` subprocesses, registers simulated accounts
directly in the database (credentials encrypted as the admin API would), and
reads back jobs and rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson

from shared.airbnb import cookies
from shared.crypto import CredentialCipher
from shared.metric_tables import METRIC_TABLES
from tests.infra import ServiceLauncher, ServiceProcess, free_port

FINAL = ("succeeded", "partial", "failed")
# The browser the simulated hosts' cookies come from: the fetcher's client hints and its
# TLS impersonation follow it, and the simulator checks that they agree.
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)


@dataclass
class Simulator:
    proc: ServiceProcess
    url: str
    seed: int
    accounts: list[dict[str, Any]]

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def send(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body) as resp,
        ):
            resp.raise_for_status()
            return await resp.json(content_type=None)

    async def requests(self) -> dict[str, Any]:
        return await self.get("/_sim/requests")


@dataclass
class Stack:
    launcher: ServiceLauncher
    database_url: str
    secret_keys: str
    today: dt.date
    env: dict[str, str] = field(default_factory=dict)
    simulator: Simulator | None = None

    def service_env(self, **extra: str) -> dict[str, str]:
        env = {"SYNC_AIRBNB_TODAY": self.today.isoformat(), **self.env, **extra}
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
        port = port or free_port()
        env = {"SYNC_AIRBNB_TODAY": self.today.isoformat(), **extra_env}
        if faults:
            env["SIM_FAULTS"] = orjson.dumps(faults).decode()
        proc = self.launcher.start(
            [
                "simulator",
                "--port",
                str(port),
                "--accounts",
                str(accounts),
                "--listings",
                str(listings),
                "--seed",
                str(seed),
            ],
            env=env,
        )
        proc.wait_for_log(r"simulator listening on")
        url = f"http://127.0.0.1:{port}"
        sim = Simulator(proc, url, seed, [])
        sim.accounts = await sim.get("/_sim/accounts")
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
