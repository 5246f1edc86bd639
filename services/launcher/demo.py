"""``sync-airbnb demo [--exit]``: the whole system on a simulated Airbnb, end to end.

``up`` (embedded PostgreSQL and NATS unless ``DATABASE_URL``/``NATS_URL`` are
set) plus the simulator with three accounts of 4, 6 and 7 listings
(:mod:`services.launcher.demo_world`, seed ``DEMO_SEED``), fetchers unpaced
(``AIRBNB_MIN_INTERVAL_S=0``: the simulator is local). Then, through the admin
HTTP API as an operator would: each account is created (or updated when it
exists), its sync triggered (``POST /accounts/{id}/sync``, which answers the job
id: on a first run that is the first-run backfill the account's creation
started, since both share one dedup key), one progress bar per job from
``GET /syncs/{job_id}``, and a report (:mod:`services.launcher.report`).

A second run on the same state reuses everything: the accounts are updated, the
trigger starts (or, later the same day, finds) an incremental job, and the
report shows the data. The services' logs go to ``<state>/logs/demo.log``, so
the terminal shows only the demo. ``--exit`` stops after the report, with exit
code 0 when every job succeeded; without it the stack runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from services.launcher.embedded import free_port
from services.launcher.report import collect, print_report
from services.launcher.settings import LauncherSettings
from services.launcher.stack import LocalStack, StackError, StackInfo, sync_hint, wait_ready
from services.launcher.state import StateDir
from services.launcher.supervisor import ChildSpec, LineSink
from services.launcher.up import prefixed, run_stack
from shared.messages import FINAL_JOB_STATUSES
from shared.settings import load_settings

FINAL = FINAL_JOB_STATUSES
CLIENT_VERSION = "sync-airbnb-demo"
USER_AGENT = "Mozilla/5.0 (sync-airbnb demo)"
POLL_S = 0.25
# How long the demo keeps asking while the scheduler is not subscribed yet (503).
TRIGGER_RETRY_S = 60.0


class DemoError(StackError):
    """The demo cannot go on; ``run_stack`` prints it, stops everything, exits 1."""


@dataclass
class JobView:
    """What one progress bar shows, from ``GET /api/v1/syncs/{job_id}``."""

    account_id: str
    job_id: str
    expected_listings: int
    status: str = "queued"
    kind: str = ""
    listings_total: int | None = None
    listings_done: int = 0
    rows_written: int = 0
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def update(self, job: dict[str, Any]) -> None:
        self.status = job["status"]
        self.kind = job.get("kind", self.kind)
        self.listings_total = job.get("listings_total")
        self.listings_done = int(job.get("listings_succeeded", 0)) + int(
            job.get("listings_failed", 0)
        )
        self.rows_written = int(job.get("rows_written", 0))
        self.error = job.get("error")

    @property
    def total(self) -> int:
        return self.listings_total if self.listings_total is not None else self.expected_listings


class AdminClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._http = http
        self._base = base_url + "/api/v1"
        self._headers = {"X-API-Key": api_key}

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self._http.request(
            method, self._base + path, json=body, headers=self._headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def upsert_account(self, account: dict[str, Any]) -> bool:
        """True when the account was created, False when it existed and was updated."""
        status, body = await self.request(
            "POST",
            "/accounts",
            {
                "account_id": account["account_id"],
                "airbnb_cookie": account["cookie"],
                "x_client_version": CLIENT_VERSION,
                "user_agent": USER_AGENT,
            },
        )
        if status not in (200, 201):
            raise DemoError(f"POST /accounts for {account['account_id']}: {status} {body}")
        return status == 201

    async def trigger(self, account_id: str) -> str:
        deadline = time.monotonic() + TRIGGER_RETRY_S
        while True:
            status, body = await self.request("POST", f"/accounts/{account_id}/sync", {})
            if status == 202 and body.get("job_id"):
                return str(body["job_id"])
            if status == 202:
                # Stored, and not handled yet (the scheduler is still starting): follow it.
                status, body = await self.request("GET", f"/triggers/{body['trigger_id']}")
                while status == 200 and body.get("status") == "pending":
                    if time.monotonic() > deadline:
                        raise DemoError(f"trigger {body['trigger_id']}: no scheduler took it")
                    await asyncio.sleep(0.5)
                    status, body = await self.request("GET", f"/triggers/{body['trigger_id']}")
                if status == 200 and body.get("job_id"):
                    return str(body["job_id"])
                raise DemoError(f"sync of {account_id}: {status} {body}")
            # 503: NATS cannot store the trigger now; worth a retry.
            if status != 503 or time.monotonic() > deadline:
                raise DemoError(f"POST /accounts/{account_id}/sync: {status} {body}")
            await asyncio.sleep(0.5)

    async def job(self, job_id: str) -> dict[str, Any]:
        status, body = await self.request("GET", f"/syncs/{job_id}")
        if status != 200:
            raise DemoError(f"GET /syncs/{job_id}: {status} {body}")
        return dict(body)


def describe_job(v: JobView) -> str:
    what = "first-run backfill" if v.kind == "full" else f"{v.kind} sync"
    if v.final:
        # A run later the same day: the trigger found that day's job (deduplicated).
        return f"{what} {v.job_id} ({v.status} earlier today)"
    return f"{what} {v.job_id}"


def job_line(v: JobView) -> str:
    if v.status == "succeeded":
        return "[green]succeeded"
    if v.status in ("failed", "partial"):
        return f"[red]{v.status}: {v.error or ''}"
    return v.status


def api_lines(info: StackInfo, log_path: Path, keep_running: bool) -> list[str]:
    s = info.secrets
    if "ADMIN_API_KEYS" in s.from_file:
        key = f"ADMIN_API_KEYS in {s.path} (send one as the X-API-Key header)"
        curl_key = f"$(sed -n 's/^ADMIN_API_KEYS=//p' {s.path} | cut -d, -f1)"
        # The demo's own generated key, for this machine: shown so that it can be pasted
        # into the dashboard's prompt. A key from the environment is the operator's and
        # is never printed.
        paste = f"paste the key {s.api_key}"
    else:
        key = "ADMIN_API_KEYS from your environment (send one as the X-API-Key header)"
        curl_key = "$ADMIN_API_KEY"
        paste = "paste one of your ADMIN_API_KEYS"
    api = info.admin_url + "/api/v1"
    lines = [
        f"API      {api}   (OpenAPI: {api}/openapi.json)",
        f"Web UI   {info.admin_url}/ui/   (the dashboard: {paste} when it asks)",
        f"Docs     {info.admin_url}/docs",
        f"API key  {key}",
        f'Try      curl -H "X-API-Key: {curl_key}" {api}/accounts',
        f"Sync     {sync_hint(info)}",
        f"Logs     {log_path}",
        f"Data     {info.state.root} (`sync-airbnb demo` again reuses it; delete it to start over)",
    ]
    if info.embedded_postgres:
        lines.append(f"Database DATABASE_URL={info.database_url}")
    lines.append(
        "Stop     Ctrl-C (or SIGTERM) stops every process; the data stays"
        if keep_running
        else "Stop     --exit given: stopping now"
    )
    return lines


class Demo:
    def __init__(
        self,
        settings: LauncherSettings,
        console: Console,
        sim_url: str,
        log_path: Path,
        *,
        exit_after: bool,
    ) -> None:
        self.settings = settings
        self.console = console
        self.sim_url = sim_url
        self.log_path = log_path
        self.exit_after = exit_after

    async def run(self, info: StackInfo, stack: LocalStack) -> int | None:
        try:
            return await self._run(info)
        except aiohttp.ClientError as exc:
            raise DemoError(f"the admin API or the simulator failed: {exc!r}") from None

    async def _run(self, info: StackInfo) -> int | None:
        started = time.monotonic()
        console = self.console
        if info.secrets.generated:
            console.print(
                f"generated {', '.join(info.secrets.generated)} into {info.secrets.path} "
                "(mode 0600); later runs reuse them",
                highlight=False,
            )
        if not await wait_ready(self.sim_url, 60, path="/_sim/health"):
            raise DemoError(f"the simulator did not answer at {self.sim_url}")
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(self.sim_url + "/_sim/accounts") as resp:
                accounts: list[dict[str, Any]] = await resp.json()
            admin = AdminClient(http, info.admin_url, info.secrets.api_key)
            views: list[JobView] = []
            for account in accounts:
                created = await admin.upsert_account(account)
                job_id = await admin.trigger(account["account_id"])
                view = JobView(account["account_id"], job_id, len(account["listings"]))
                view.update(await admin.job(job_id))
                console.print(
                    f"account {view.account_id}: {'created' if created else 'exists, updated'}, "
                    f"{view.expected_listings} listings; {describe_job(view)}",
                    highlight=False,
                )
                views.append(view)
            finished = await self._progress(admin, views)
        elapsed = time.monotonic() - started
        console.print(
            f"syncs {'done' if finished else 'NOT finished'} {elapsed:.1f}s after the stack was up",
            highlight=False,
        )
        report = await collect(
            info.database_url, [v.account_id for v in views], self.settings.today()
        )
        print_report(console, report)
        console.print()
        for line in api_lines(info, self.log_path, keep_running=not self.exit_after):
            console.print(line, highlight=False, soft_wrap=True)
        ok = finished and all(v.status == "succeeded" for v in views)
        if self.exit_after:
            return 0 if ok else 1
        return None

    async def _progress(self, admin: AdminClient, views: Sequence[JobView]) -> bool:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("listings"),
            TextColumn("{task.fields[rows]:>9,} rows"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        )
        deadline = time.monotonic() + self.settings.demo_timeout_s
        with progress:
            tasks: dict[str, TaskID] = {
                v.job_id: progress.add_task(
                    f"account {v.account_id}", total=v.total, rows=0, status=v.status
                )
                for v in views
            }
            while True:
                for v in views:
                    if not v.final:
                        v.update(await admin.job(v.job_id))
                    progress.update(
                        tasks[v.job_id],
                        total=v.total,
                        completed=v.listings_done,
                        rows=v.rows_written,
                        status=job_line(v),
                    )
                    if v.final:
                        progress.stop_task(tasks[v.job_id])
                if all(v.final for v in views):
                    return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(POLL_S)


def file_sink(stream: TextIO, width: int) -> LineSink:
    def sink(name: str, line: str) -> None:
        with contextlib.suppress(ValueError):
            stream.write(prefixed(name, line, width) + "\n")
            stream.flush()

    return sink


def main(args: argparse.Namespace) -> int:
    settings = load_settings(LauncherSettings, "demo")
    # soft_wrap: paths and URLs stay whole (copyable); tables and bars still fit the width.
    console = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)
    state = StateDir(settings.resolved_state_dir())
    state.prepare()
    log_path = state.logs / "demo.log"
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = ChildSpec(
        "simulator",
        (
            sys.executable,
            "-m",
            "services.launcher.demo_world",
            *("--port", str(sim_port), "--seed", str(settings.demo_seed)),
        ),
        {},
    )
    width = max(len("simulator"), len(f"fetcher-{settings.up_fetchers}"))
    demo = Demo(settings, console, sim_url, log_path, exit_after=args.exit)
    with log_path.open("a") as log:
        log.write(f"--- sync-airbnb demo, {time.strftime('%Y-%m-%d %H:%M:%S %z')} ---\n")
        sink = file_sink(log, width)

        def notice(text: str) -> None:
            sink("demo", text)
            console.print(f"[dim]demo | {text}", highlight=False)

        console.print(
            f"sync-airbnb demo: state in {state.root}, service logs in {log_path}", highlight=False
        )
        code = asyncio.run(
            run_stack(
                settings,
                sink=sink,
                notice=notice,
                on_ready=demo.run,
                extra_env={"AIRBNB_BASE_URL": sim_url, "AIRBNB_MIN_INTERVAL_S": "0"},
                extra_children=[sim],
            )
        )
    return code
