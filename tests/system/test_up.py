"""``sync-airbnb up``: choosing a port, the supervisor with real processes, and the whole
stack as a real process tree on embedded PostgreSQL and NATS.

The supervisor's pure rules and the state directory are in tests/unit/test_up.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from services.launcher.embedded import choose_port, port_free
from services.launcher.state import StateDir, parse_env_file
from services.launcher.supervisor import ChildSpec, Supervisor
from tests.infra import (
    ServiceLauncher,
    ServiceProcess,
    free_port,
    wait_until,
    wait_until_blocking,
)
from tests.stack import StartSimulator

# --- ports --------------------------------------------------------------------------------


def test_a_taken_default_port_falls_back_unless_asked_for() -> None:
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert not port_free(taken)
        other = choose_port(taken, explicit=False)
        assert other != taken
        assert port_free(other)
        assert choose_port(taken, explicit=True) == taken


# --- the supervisor, with real processes --------------------------------------------------


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


async def test_supervisor_prefixes_output_restarts_a_dead_child_and_kills_a_stubborn_one() -> None:
    lines: list[tuple[str, str]] = []
    notices: list[str] = []
    sup = Supervisor(
        lambda name, line: lines.append((name, line)),
        notices.append,
        stop_timeout_s=1,
        backoff_cap_s=0.2,
        backoff_base_s=0.05,
    )
    env = dict(os.environ)
    sup.start(ChildSpec("flaky", sh("echo up; exit 3"), env))
    # Ignores SIGTERM, and so does its own child: only the group's SIGKILL ends them.
    sup.start(ChildSpec("stubborn", sh("trap '' TERM; echo ready; sleep 60 & wait"), env))
    deadline = time.monotonic() + 10
    while sum(1 for n, line in lines if (n, line) == ("flaky", "up")) < 3:
        assert time.monotonic() < deadline, (lines, notices)
        await asyncio.sleep(0.05)
    while ("stubborn", "ready") not in lines:
        assert time.monotonic() < deadline, (lines, notices)
        await asyncio.sleep(0.05)
    stubborn_pid = sup.pids()["stubborn"]
    group = [p.pid for p in psutil.Process(stubborn_pid).children(recursive=True)]
    assert any("exited with code 3 unexpectedly; restarting" in n for n in notices)

    started = time.monotonic()
    await sup.stop()
    assert time.monotonic() - started < 5
    assert any("stubborn did not stop within 1s; killing it" in n for n in notices)
    # A SIGKILLed process takes a moment to exit on a loaded machine, and an orphaned
    # grandchild is reaped by init, not by us: gone or a zombie soon after is the contract.
    for pid in [stubborn_pid, *group]:
        await wait_until(
            functools.partial(exited, pid), within=5, what=f"process {pid} to exit after SIGKILL"
        )
    assert sup.names() == []


def exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_supervisor_stops_everything_on_a_configuration_error() -> None:
    notices: list[str] = []
    sup = Supervisor(lambda *_: None, notices.append, stop_timeout_s=1, backoff_cap_s=1)
    sup.start(ChildSpec("broken", sh("exit 2"), dict(os.environ)))
    await asyncio.wait_for(sup.fatal.wait(), timeout=10)
    assert sup.fatal_code == 2
    assert any("configuration error" in n for n in notices)
    await sup.stop()


# --- `up` as a real process tree ----------------------------------------------------------


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(text in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh state directory; whatever still runs on it at the end is stopped."""
    path = tmp_path / "state"
    yield path
    for proc in processes_mentioning(str(path)):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def up_pids(up: ServiceProcess, pgdata: Path) -> list[int]:
    pids = [p.pid for p in up.descendants()]
    postmaster = (pgdata / "postmaster.pid").read_text().splitlines()[0]
    master = psutil.Process(int(postmaster))
    return [*pids, master.pid, *(c.pid for c in master.children(recursive=True))]


async def poll_job(api: str, key: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as http:
        while True:
            async with http.get(f"{api}/syncs/{job_id}") as resp:
                job = await resp.json()
            if job.get("status") in ("succeeded", "partial", "failed"):
                return dict(job)
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_up_runs_the_stack_on_embedded_infrastructure_and_leaves_nothing_behind(
    bare_launcher: ServiceLauncher, start_simulator: StartSimulator, state_dir: Path
) -> None:
    sim = await start_simulator(seed=41, accounts=1, listings=3)
    sim_url, accounts = sim.url, sim.accounts
    account = accounts[0]
    admin_port = free_port()
    env = {
        "SYNC_AIRBNB_STATE_DIR": str(state_dir),
        "ADMIN_PORT": str(admin_port),
        "UP_NATS_PORT": str(free_port()),
        "AIRBNB_BASE_URL": sim_url,
        "AIRBNB_MIN_INTERVAL_S": "0",
        "PYTHONUNBUFFERED": "1",
    }
    up = bare_launcher.start(["up"], env=env)
    up.wait_for_log(r"up\s+\| running: admin, scheduler, fetcher-1, fetcher-2, writer-1", 120)
    # Every child's output is prefixed with its name.
    for name in ("nats", "migrate", "admin", "scheduler", "fetcher-1", "fetcher-2", "writer-1"):
        up.wait_for_log(rf"(?m)^{name}\s+\| \S", 30)
    out = up.output()

    secrets_file = state_dir / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert f"into {secrets_file}" in out
    key = parse_env_file(secrets_file.read_text())["ADMIN_API_KEYS"]
    assert key not in out
    nats_url = re.search(r"NATS_URL=(nats://\S+)", out)
    assert nats_url

    api = f"http://127.0.0.1:{admin_port}/api/v1"
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as http:
        body = {
            "account_id": account["account_id"],
            "airbnb_cookie": account["cookie"],
            "x_client_version": "test-client",
            "user_agent": "Mozilla/5.0 (test)",
        }
        async with http.post(f"{api}/accounts", json=body) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(f"{api}/accounts/{account['account_id']}/sync", json={}) as resp:
            assert resp.status == 202, await resp.text()
            accepted = await resp.json()
        # The trigger is durable: followed to its job when the 202 came before the scheduler.
        job_id = accepted["job_id"]
        deadline = time.monotonic() + 30
        while job_id is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            async with http.get(f"{api}/triggers/{accepted['trigger_id']}") as resp:
                job_id = (await resp.json())["job_id"]
        assert job_id is not None, accepted
    job = await poll_job(api, key, job_id)
    assert (job["status"], job["kind"], job["listings_succeeded"]) == ("succeeded", "full", 3)
    assert job["rows_written"] > 0

    # `sync --wait` with only the NATS_URL that `up` printed: an incremental job, followed
    # through the writer's notifications.
    sync = await asyncio.to_thread(
        bare_launcher.run,
        ["sync", account["account_id"], "--wait"],
        {"NATS_URL": nats_url.group(1)},
        120,
    )
    assert sync.returncode == 0, sync.stderr
    assert re.search(r"job \S+ succeeded: 3 of 3 listings", sync.stdout), sync.stdout

    # A child killed behind up's back is restarted.
    fetcher = next(
        p for p in up.descendants() if p.cmdline()[-1:] == ["fetcher"] and p.ppid() == up.pid
    )
    fetcher.kill()
    up.wait_for_log(r"fetcher-\d killed by SIGKILL unexpectedly; restarting in 1s", 20)
    await wait_until(
        lambda: sum(1 for p in up.descendants() if p.cmdline()[-1:] == ["fetcher"]) == 2,
        within=30,
        what="the fetcher restarted",
    )

    pids = up_pids(up, state_dir / "postgres")
    assert len(pids) >= 7
    started = time.monotonic()
    assert up.terminate(timeout=60) == 0, up.output()[-3000:]
    stop_s = time.monotonic() - started
    assert [pid for pid in pids if alive(pid)] == []
    assert [p.pid for p in processes_mentioning(str(state_dir)) if alive(p.pid)] == []
    assert re.search(r"^up\s+\| stopped$", up.output(), re.M)
    print(f"\nup stopped in {stop_s:.1f}s")


@pytest.mark.slow
def test_up_restart_keeps_the_data_and_the_secrets(
    bare_launcher: ServiceLauncher, state_dir: Path
) -> None:
    env = {
        "SYNC_AIRBNB_STATE_DIR": str(state_dir),
        "ADMIN_PORT": str(free_port()),
        "UP_NATS_PORT": str(free_port()),
        "UP_FETCHERS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    first = bare_launcher.start(["up"], env=env)
    first.wait_for_log(r"running: admin, scheduler, fetcher-1, writer-1", 120)
    secrets = (state_dir / "secrets.env").read_text()
    assert first.terminate(timeout=60) == 0
    second = bare_launcher.start(["up"], env=env)
    second.wait_for_log(r"running: admin", 120)
    assert (state_dir / "secrets.env").read_text() == secrets
    out = second.output()
    assert "generated" not in out
    assert "from " + str(state_dir / "secrets.env") in out
    assert re.search(r"migrate\s+\|.*none pending", out)
    assert second.terminate(timeout=60) == 0
    assert processes_mentioning(str(state_dir)) == []


def test_up_with_a_bad_setting_or_unreachable_infrastructure_says_so(
    bare_launcher: ServiceLauncher, tmp_path: Path
) -> None:
    bad = bare_launcher.run(["up"], {"UP_FETCHERS": "zero"})
    assert bad.returncode == 2
    [line] = bad.stderr.strip().splitlines()
    assert line.startswith("sync-airbnb up: configuration error: UP_FETCHERS ")
    # External infrastructure that never answers: up gives up after UP_READY_TIMEOUT_S.
    env = {
        "SYNC_AIRBNB_STATE_DIR": str(tmp_path / "state"),
        "NATS_URL": "nats://127.0.0.1:1",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "UP_READY_TIMEOUT_S": "1",
    }
    unreachable = bare_launcher.run(["up"], env, timeout=60)
    assert unreachable.returncode == 1
    assert "PostgreSQL is not reachable" in unreachable.stdout


PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-m", "services.launcher.child", "/bin/sleep", "60"],
    env={**os.environ, "SYNC_AIRBNB_UP_PID": str(os.getpid())},
)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_up_even_when_up_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        wait_until_blocking(
            lambda: psutil.Process(child_pid).cmdline()[:1] == ["/bin/sleep"],
            within=10,
            what="the exec",
        )
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until_blocking(
            lambda: not alive(child_pid), within=10, what="the child to follow its parent"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def test_one_state_directory_serves_one_stack_at_a_time(tmp_path: Path) -> None:
    from services.launcher.state import StateBusy, lock

    state = StateDir(tmp_path / "state")
    state.prepare()
    held = lock(state)
    try:
        with pytest.raises(StateBusy, match=f"in use by pid {os.getpid()}"):
            lock(state)
    finally:
        held.close()
    lock(state).close()  # free again once the holder is gone
