"""The whole system on one machine: infrastructure, ``migrate``, then every service.

:class:`LocalStack` is what ``up`` and ``demo`` share. ``start`` brings up, in
order: any extra children (the demo's simulator), NATS (``NATS_URL`` or an
embedded nats-server) and PostgreSQL (``DATABASE_URL`` or an embedded server)
side by side, the database if missing, ``migrate``, then admin, scheduler,
fetchers and writers, and waits for the admin's readiness. ``stop`` takes it
down in reverse: services and extras, NATS, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TypeVar

import aiohttp

from services.launcher.embedded import (
    DATABASE_NAME,
    EmbeddedPostgres,
    choose_port,
    ensure_database,
    nats_binary,
    nats_spec,
    nats_url,
    port_free,
    wait_for_port,
    with_database,
)
from services.launcher.settings import LauncherSettings
from services.launcher.state import Secrets, StateBusy, StateDir, load_or_create_secrets, lock
from services.launcher.supervisor import ChildSpec, Notice, Supervisor, service_argv
from shared.settings import EXIT_CONFIG

T = TypeVar("T")


class Stopped(Exception):
    """A stop signal (or a fatal child) arrived while the stack was starting."""


class StackError(Exception):
    """The stack cannot start; ``code`` is the exit code to end with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class StackInfo:
    state: StateDir
    secrets: Secrets
    database_url: str
    nats_url: str
    admin_url: str  # http://host:port, no trailing slash
    embedded_postgres: bool
    embedded_nats: bool
    services: tuple[str, ...]


def service_names(fetchers: int, writers: int) -> list[str]:
    return [
        "admin",
        "scheduler",
        *(f"fetcher-{i}" for i in range(1, fetchers + 1)),
        *(f"writer-{i}" for i in range(1, writers + 1)),
    ]


def command_of(name: str) -> str:
    """``fetcher-2`` -> ``fetcher``: the sync-airbnb command a child name runs."""
    return name.split("-", 1)[0]


def admin_display_host(env: Mapping[str, str]) -> str:
    host = env.get("ADMIN_HOST", "")
    return "127.0.0.1" if host in {"", "0.0.0.0", "::"} else host


def sync_hint(info: StackInfo) -> str:
    """The `sync` command line for this stack (the embedded URLs are not in the user's env)."""
    env = []
    if info.embedded_nats:
        env.append(f"NATS_URL={info.nats_url}")
    if info.embedded_postgres:
        # Quoted: the URL holds '?'. With it, `--wait` also sees a job that ended before.
        env.append(f"DATABASE_URL='{info.database_url}'")
    return " ".join([*env, "sync-airbnb sync ACCOUNT_ID --wait"])


def banner(info: StackInfo) -> list[str]:
    """What ``up`` says once everything is ready: where things are, how to stop."""
    state = info.state
    lines = [f"state directory: {state.root}"]
    s = info.secrets
    if s.generated:
        lines.append(f"generated {', '.join(s.generated)} into {s.path} (mode 0600); kept there")
    kept = [v for v in s.from_file if v not in s.generated]
    if kept:
        lines.append(f"{', '.join(kept)}: from {s.path}")
    if info.embedded_postgres:
        lines.append(
            f"embedded PostgreSQL (data in {state.pgdata}): DATABASE_URL={info.database_url}"
        )
    else:
        lines.append("PostgreSQL: DATABASE_URL from the environment")
    if info.embedded_nats:
        lines.append(f"embedded NATS (store in {state.nats_store}): NATS_URL={info.nats_url}")
    else:
        lines.append("NATS: NATS_URL from the environment")
    key_at = (
        f"ADMIN_API_KEYS in {s.path}"
        if "ADMIN_API_KEYS" in s.from_file
        else "ADMIN_API_KEYS from the environment"
    )
    lines.append(
        f"admin API: {info.admin_url}/api/v1 (docs {info.admin_url}/docs); "
        f"send X-API-Key: one of {key_at}"
    )
    lines.append(f"dashboard: {info.admin_url}/ui/ (it asks for one of the same keys)")
    lines.append(f"trigger a sync: {sync_hint(info)}")
    lines.append(f"running: {', '.join(info.services)}; Ctrl-C or SIGTERM stops everything")
    return lines


@dataclass
class LocalStack:
    settings: LauncherSettings
    supervisor: Supervisor
    stopping: asyncio.Event
    notice: Notice
    # Variables every child gets on top of the environment (the demo's simulator URL...).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    _postgres: EmbeddedPostgres | None = None
    _postgres_start: asyncio.Task[str] | None = None
    _nats_started: bool = False
    _lock: IO[str] | None = None

    async def start(self, extra_children: Sequence[ChildSpec] = ()) -> StackInfo:
        settings = self.settings
        state = StateDir(settings.resolved_state_dir())
        state.prepare()
        try:
            self._lock = lock(state)
        except StateBusy as exc:
            raise StackError(str(exc)) from None
        secrets = load_or_create_secrets(state, os.environ)
        env = {**os.environ, **secrets.values, **self.extra_env}

        for spec in extra_children:
            self.supervisor.start(ChildSpec(spec.name, spec.argv, {**env, **spec.env}))

        # NATS first (a child, not blocking), then PostgreSQL (blocking, in a thread):
        # the two start side by side.
        if settings.nats_url:
            url_nats, nats_port = settings.nats_url, None
        else:
            explicit = "UP_NATS_PORT" in os.environ
            nats_port = choose_port(settings.up_nats_port, explicit=explicit)
            if explicit and not port_free(nats_port):
                # Else the wait below would find the other server and take it for ours.
                raise StackError(f"UP_NATS_PORT {nats_port} is in use", EXIT_CONFIG)
            self.supervisor.start(nats_spec(nats_binary(), nats_port, state.nats_store, env))
            self._nats_started = True
            url_nats = nats_url(nats_port)

        if settings.database_url:
            database_url = settings.database_url
        else:
            self._postgres = EmbeddedPostgres(state.pgdata)
            self.notice(f"starting the embedded PostgreSQL in {state.pgdata}")
            # Not cancellable (a thread): stop() waits for it, so no server is left behind.
            self._postgres_start = asyncio.create_task(asyncio.to_thread(self._postgres.start))
            try:
                admin_url = await asyncio.shield(self._postgres_start)
            except Exception as exc:
                raise StackError(f"the embedded PostgreSQL did not start: {exc}") from None
            database_url = with_database(admin_url, DATABASE_NAME)
        self._check_stopping()

        if nats_port is not None and not await self._guard(
            wait_for_port(nats_port, settings.up_ready_timeout_s)
        ):
            raise StackError(f"the embedded nats-server did not listen on port {nats_port}")
        try:
            await self._guard(ensure_database(database_url, settings.up_ready_timeout_s))
        except RuntimeError as exc:
            raise StackError(str(exc)) from None

        env = {**env, "DATABASE_URL": database_url, "NATS_URL": url_nats}
        rc = await self._guard(
            self.supervisor.run(ChildSpec("migrate", service_argv("migrate"), env))
        )
        self._check_stopping()
        if rc != 0:
            raise StackError(f"migrate failed (exit code {rc}); see its output above", rc)

        explicit = "ADMIN_PORT" in os.environ
        admin_port = choose_port(settings.admin_port, explicit=explicit, host="")
        if explicit and not port_free(admin_port, host=""):
            raise StackError(f"ADMIN_PORT {admin_port} is in use", EXIT_CONFIG)
        names = service_names(settings.up_fetchers, settings.up_writers)
        for name in names:
            child_env = {**env, "ADMIN_PORT": str(admin_port)}
            if name != "admin":
                # Replicas cannot share a fixed port: each picks a free one and logs it.
                child_env["HTTP_PORT"] = "0"
            self.supervisor.start(ChildSpec(name, service_argv(command_of(name)), child_env))

        admin_url = f"http://{admin_display_host(os.environ)}:{admin_port}"
        if not await self._guard(wait_ready(admin_url, settings.up_ready_timeout_s)):
            self.notice(
                f"the admin is not ready after {settings.up_ready_timeout_s:g}s "
                f"({admin_url}/health/ready); carrying on, the services keep retrying"
            )
        return StackInfo(
            state=state,
            secrets=secrets,
            database_url=database_url,
            nats_url=url_nats,
            admin_url=admin_url,
            embedded_postgres=self._postgres is not None,
            embedded_nats=nats_port is not None,
            services=tuple(names),
        )

    async def stop(self) -> None:
        """Services (and extras) first, then NATS, then PostgreSQL."""
        await self.supervisor.stop([n for n in self.supervisor.names() if n != "nats"])
        if self._nats_started:
            await self.supervisor.stop(["nats"])
        if self._postgres_start is not None:
            with contextlib.suppress(Exception):
                await self._postgres_start
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.stop)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _check_stopping(self) -> None:
        if self.stopping.is_set() or self.supervisor.fatal.is_set():
            raise Stopped()

    async def _guard(self, aw: Awaitable[T]) -> T:
        """``aw``, unless a stop signal or a fatal child comes first (then Stopped)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.stopping.wait())
        fatal = asyncio.ensure_future(self.supervisor.fatal.wait())
        try:
            await asyncio.wait({task, stop, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            fatal.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise Stopped()
        return task.result()


async def wait_ready(base_url: str, timeout_s: float, path: str = "/health/ready") -> bool:
    """Poll ``base_url + path`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(base_url + path) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.2)
    return False
