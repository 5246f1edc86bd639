"""The admin as a real process while PostgreSQL is away, stopped or hung (SIGSTOP):
every route that uses the database answers 503 with ``Retry-After`` within its
timeouts (DB_STATEMENT_TIMEOUT_S, DB_ACQUIRE_TIMEOUT_S), never 500 and never after a
wait without bound, and it serves again once the server is back.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from shared.migrate import apply_migrations
from tests.cookies import browser_cookie
from tests.infra import (
    PostgresServer,
    ServiceLauncher,
    create_database,
    new_database_name,
    start_embedded_postgres,
    wait_until,
)
from tests.system.test_admin_process import KEY, new_account_id, run_schemathesis, start_admin

STATEMENT_TIMEOUT_S = 2.0
ACQUIRE_TIMEOUT_S = 2.0
# The longest a request may take on a hung server: a connection's acquire, one
# statement, and the release (which inherits the acquire's timeout), plus slack for a
# loaded machine.
BOUND_S = ACQUIRE_TIMEOUT_S + STATEMENT_TIMEOUT_S + ACQUIRE_TIMEOUT_S + 3.0

pytestmark = pytest.mark.own_postgres


@dataclass
class OwnPostgres:
    server: PostgresServer
    url: str
    pgdata: Path

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every backend: stopping the postmaster alone leaves the
        pool's open connections served."""
        pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        master = psutil.Process(pid)
        return [master, *master.children(recursive=True)]


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    server = start_embedded_postgres(tmp_path / "pg")
    try:
        url = await create_database(server, new_database_name("sync_airbnb_outage"))
        await asyncio.to_thread(apply_migrations, url)
        yield OwnPostgres(server, url, tmp_path / "pg" / "pgdata")
    finally:
        server.stop()


@dataclass
class Answer:
    what: str
    status: int
    retry_after: str | None
    error: str | None
    elapsed_s: float


def requests_for(aid: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """list, get, create, trigger, export and the read API: each a database route."""
    new = new_account_id()
    body = {
        "account_id": new,
        "airbnb_cookie": browser_cookie(new, "outage"),
        "x_client_version": "v1",
        "user_agent": "UA",
    }
    return {
        "list": ("GET", "/api/v1/accounts", {}),
        "get": ("GET", f"/api/v1/accounts/{aid}", {}),
        "create": ("POST", "/api/v1/accounts", {"json": body}),
        "trigger": ("POST", f"/api/v1/accounts/{aid}/sync", {"json": {"full": False}}),
        "export": (
            "GET",
            f"/api/v1/accounts/{aid}/metrics/export",
            {"params": {"start_date": "2025-01-01", "end_date": "2025-01-02"}},
        ),
        "insights": (
            "GET",
            f"/api/v1/accounts/{aid}/insights",
            {"params": {"metric": "p3_impressions", "from": "2025-01-01", "to": "2025-01-31"}},
        ),
        "portfolio": ("GET", "/api/v1/portfolio", {"params": {"end": "2025-01-31"}}),
    }


async def ask_all(base: str, aid: str) -> list[Answer]:
    async def ask(http: aiohttp.ClientSession, what: str, req: tuple[str, str, Any]) -> Answer:
        method, path, kw = req
        started = time.monotonic()
        async with http.request(method, f"{base}{path}", headers=KEY, **kw) as resp:
            body = await resp.json() if resp.content_type == "application/json" else {}
            return Answer(
                what,
                resp.status,
                resp.headers.get("Retry-After"),
                body.get("error") if isinstance(body, dict) else None,
                time.monotonic() - started,
            )

    timeout = aiohttp.ClientTimeout(total=120)  # far past BOUND_S: the test measures it
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return list(await asyncio.gather(*(ask(http, w, r) for w, r in requests_for(aid).items())))


def assert_unavailable(answers: list[Answer]) -> None:
    print("; ".join(f"{a.what} {a.status} {a.error} in {a.elapsed_s:.2f}s" for a in answers))
    for a in answers:
        assert a.status == 503, a
        assert a.error == "database_unavailable", a
        assert a.retry_after is not None and int(a.retry_after) > 0, a
        assert a.elapsed_s < BOUND_S, a


async def create_account(base: str) -> str:
    aid = new_account_id()
    body = {
        "account_id": aid,
        "airbnb_cookie": browser_cookie(aid, "before"),
        "x_client_version": "v1",
        "user_agent": "UA",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/api/v1/accounts", headers=KEY, json=body) as resp,
    ):
        assert resp.status == 201, await resp.text()
    return aid


async def serves_again(base: str, aid: str) -> None:
    async def back() -> bool:
        answers = await ask_all(base, aid)
        return all(a.status < 500 for a in answers)

    await wait_until(back, within=30, what="the admin serving again")
    statuses = {a.what: a.status for a in await ask_all(base, aid)}
    assert statuses == {
        "list": 200,
        "get": 200,
        "create": 201,
        "trigger": 202,
        "export": 200,
        "insights": 200,
        "portfolio": 200,
    }


async def test_postgres_stopped_answers_503_with_retry_after(
    launcher: ServiceLauncher, own_postgres: OwnPostgres
) -> None:
    admin = start_admin(
        launcher,
        DATABASE_URL=own_postgres.url,
        DB_STATEMENT_TIMEOUT_S=str(STATEMENT_TIMEOUT_S),
        DB_ACQUIRE_TIMEOUT_S=str(ACQUIRE_TIMEOUT_S),
    )
    aid = await create_account(admin.base)
    await asyncio.to_thread(own_postgres.server.stop)
    assert_unavailable(await ask_all(admin.base, aid))
    assert_unavailable(await ask_all(admin.base, aid))  # the pool's connections all gone
    await asyncio.to_thread(own_postgres.server.resume)
    await serves_again(admin.base, aid)
    assert admin.proc.proc.poll() is None  # the same process throughout


async def test_postgres_hung_answers_503_within_the_timeouts(
    launcher: ServiceLauncher, own_postgres: OwnPostgres
) -> None:
    admin = start_admin(
        launcher,
        DATABASE_URL=own_postgres.url,
        DB_STATEMENT_TIMEOUT_S=str(STATEMENT_TIMEOUT_S),
        DB_ACQUIRE_TIMEOUT_S=str(ACQUIRE_TIMEOUT_S),
    )
    aid = await create_account(admin.base)
    frozen = own_postgres.processes()
    for proc in frozen:
        proc.send_signal(signal.SIGSTOP)
    try:
        assert_unavailable(await ask_all(admin.base, aid))
        assert_unavailable(await ask_all(admin.base, aid))
    finally:
        for proc in frozen:
            proc.send_signal(signal.SIGCONT)
    await serves_again(admin.base, aid)
    assert admin.proc.proc.poll() is None  # the same process throughout


async def test_schemathesis_with_postgres_stopped_for_part_of_the_run(
    launcher: ServiceLauncher, own_postgres: OwnPostgres
) -> None:
    """Up, stopped, up again: while it is stopped every answer is one the document lists
    for its operation (schemathesis' status, header and schema checks), 5xx only ever a
    503 with Retry-After; before and after, no 5xx at all."""
    admin = start_admin(
        launcher,
        DATABASE_URL=own_postgres.url,
        DB_STATEMENT_TIMEOUT_S=str(STATEMENT_TIMEOUT_S),
        DB_ACQUIRE_TIMEOUT_S=str(ACQUIRE_TIMEOUT_S),
    )
    started = time.monotonic()
    before = await asyncio.to_thread(run_schemathesis, admin.base, 4)
    await asyncio.to_thread(own_postgres.server.stop)
    down = await asyncio.to_thread(run_schemathesis, admin.base, 10, database_down=True)
    await asyncio.to_thread(own_postgres.server.resume)

    async def back() -> bool:
        return all(a.status < 500 for a in await ask_all(admin.base, new_account_id()))

    await wait_until(back, within=30, what="the admin serving again")
    after = await asyncio.to_thread(run_schemathesis, admin.base, 4)
    print(
        f"schemathesis in {time.monotonic() - started:.1f}s: up {before.statuses}, "
        f"stopped {down.statuses}, up again {after.statuses}"
    )
    assert not [s for s in (*before.statuses, *after.statuses) if s >= 500]
    assert {s for s in down.statuses if s >= 500} == {503}
    assert down.cases >= 200
    assert "Traceback" not in admin.proc.output()
