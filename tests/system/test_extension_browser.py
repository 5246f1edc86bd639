"""The browser extension (extension/) in a real browser (issue 16, item 5): Playwright drives
Debian's chromium with the unpacked extension loaded (headless: chromium's new headless mode
runs extensions), against real processes: the simulator as www.airbnb.com, the admin, a
fetcher, a writer and a scheduler, with a NATS and a database of their own.

- chromium resolves www.airbnb.com to the simulator (``--host-resolver-rules`` maps the name
  to its loopback port), which serves HTTPS with a throwaway certificate
  (``--ignore-certificate-errors`` accepts it; the fetcher trusts it by AIRBNB_CA_FILE);
- the host's stored session is stale (they logged in again since) and the account needs new
  credentials; the operator makes a connect token for it and the connect link is pasted
  into the extension's options;
- the simulator's hosting page logs the browser in, setting every cookie of the three groups
  (auth, bot manager, analytics);
- the test clicks the extension's button on a hosting page: the admin asks the fetcher to
  check the session (validate is the default) and the button shows "connected with N
  listings";
- in the database, decrypted, exactly the auth group of the browser's cookies is stored for
  that account, the needs-new-credentials mark is cleared, and the account's next sync
  succeeds;
- once the token is revoked, and with a new token once Airbnb no longer takes the session
  (revoked in the simulator), the button shows the reason and nothing changes;
- no process's log holds the token or a cookie value of the browser.

As in test_docs_browser.py, chromium is /usr/bin/chromium (`make system-deps` installs it);
without it or playwright the test skips, saying why.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from shared.airbnb.cookies import (
    AUTH_COOKIES,
    BOT_MANAGER_COOKIES,
    CookieGroup,
    auth_only,
    format_cookie_header,
    group_of,
)
from shared.crypto import CredentialCipher
from tests.infra import PostgresServer
from tests.stack import FAST_RECOVERY_ENV, Simulator, Stack, isolated_stack, wait_for_jobs
from tests.system.test_admin_process import start_admin
from tests.system.test_docs_browser import CHROMIUM, _browser_or_skip

pytestmark = pytest.mark.slow

EXTENSION = Path(__file__).resolve().parents[2] / "extension"
TODAY = dt.date(2025, 7, 11)
KEY = "ext-test-admin-key"
LISTINGS = 3
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)


@pytest.fixture
async def stack(
    tmp_path: Path, postgres_server: PostgresServer, secret_keys: str
) -> AsyncIterator[Stack]:
    async with isolated_stack(
        tmp_path,
        postgres_server,
        secret_keys,
        TODAY,
        database_prefix="sync_airbnb_extension",
        env={**FAST_RECOVERY_ENV, "ADMIN_API_KEYS": KEY},
    ) as stack:
        yield stack


def leaked(logdir: Path, secrets: list[str]) -> tuple[set[str], list[str]]:
    """The services whose logs are in ``logdir``, and the logs holding one of ``secrets``."""
    logs = sorted(logdir.glob("*.log"))
    found = [log.name for log in logs if any(s in log.read_text(errors="replace") for s in secrets)]
    return {log.name.split("-")[0] for log in logs}, found


async def api(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers={"X-API-Key": KEY}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_the_button_sends_the_auth_group_and_the_next_sync_succeeds(
    stack: Stack, tmp_path: Path, secret_keys: str
) -> None:
    _browser_or_skip()
    from playwright.async_api import async_playwright, expect

    tls_dir = tmp_path / "tls"
    sim = await Simulator.start(
        stack.launcher, seed=61, accounts=2, listings=LISTINGS, today=TODAY, tls_dir=tls_dir
    )
    stack.simulator = sim
    host = sim.accounts[0]
    aid = host["account_id"]
    sim_port = urlsplit(sim.url).port

    # The host's stored session: their browser's cookie of an earlier login, since replaced
    # (they logged in again), which Airbnb no longer takes: the account needs credentials.
    db = await asyncpg.connect(stack.database_url)
    try:
        await stack.register(db, [host])
        await sim.send("POST", f"/_sim/accounts/{aid}/login")
        await db.execute(
            "UPDATE airbnb.accounts SET credentials_invalid_at = now(),"
            " credentials_error = 'login redirect' WHERE account_id = $1",
            aid,
        )
        ca = str(tls_dir / "cert.pem")
        stack.start("writer")
        stack.start("fetcher", AIRBNB_CA_FILE=ca)
        cipher = CredentialCipher(secret_keys.split(","))

        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                ignore_https_errors=True,
                args=[
                    "--no-sandbox",
                    f"--disable-extensions-except={EXTENSION}",
                    f"--load-extension={EXTENSION}",
                    f"--host-resolver-rules=MAP www.airbnb.com 127.0.0.1:{sim_port}",
                    "--ignore-certificate-errors",
                    # A host's Chrome, not "HeadlessChrome": the simulator, like Akamai,
                    # strikes a request whose client hints do not fit its User-Agent, and
                    # the fetcher sends hints only for a Chrome/<major> one.
                    f"--user-agent={BROWSER_UA}",
                ],
            )
            try:
                worker = (
                    context.service_workers[0]
                    if context.service_workers
                    else await context.wait_for_event("serviceworker", timeout=15_000)
                )
                extension_id = urlsplit(worker.url).netloc
                origin = f"chrome-extension://{extension_id}"
                print(f"extension loaded as {origin}")

                # The admin lets that origin call POST /connect (and nothing else).
                admin = start_admin(
                    stack.launcher, **stack.service_env(ADMIN_CONNECT_ORIGINS=origin)
                )
                status, made = await api(
                    "POST", f"{admin.base}/api/v1/accounts/{aid}/connect-tokens"
                )
                assert status == 201, made
                link = made["connect_link"]
                assert link == f"{admin.base}/connect#token={made['token']}"

                # The options page: the connect link pasted sets the server and the token.
                options = await context.new_page()
                await options.goto(f"{origin}/options.html")
                await options.fill("#link", link)
                await expect(options.locator("#server")).to_have_value(admin.base)
                await expect(options.locator("#token")).to_have_value(made["token"])
                await options.click("#save")
                await expect(options.locator("#status")).to_contain_text("Saved")
                stored = await worker.evaluate("chrome.storage.local.get(null)")
                assert stored == {"server": admin.base, "token": made["token"]}

                # The hosting page logs the browser in: all three groups set by Set-Cookie.
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                resp = await page.goto(
                    f"https://www.airbnb.com/hosting/performance/conversion?sim_login={aid}"
                )
                assert resp is not None and resp.status == 200
                jar = await context.cookies("https://www.airbnb.com/")
                groups = {group_of(c["name"]) for c in jar}
                assert groups == set(CookieGroup), sorted(c["name"] for c in jar)
                assert all(c["domain"] == ".airbnb.com" for c in jar)
                assert {c["name"] for c in jar} >= {*AUTH_COOKIES, *BOT_MANAGER_COOKIES}

                await page.goto("https://www.airbnb.com/hosting/performance/conversion")
                button = page.locator("#sync-airbnb-connect button")
                server_host = urlsplit(admin.base).netloc
                await expect(button).to_have_text(f"Send my Airbnb session to {server_host}")
                await button.click()
                result = page.locator("#sync-airbnb-connect .result")
                await expect(result).to_have_text(
                    f"Connected with {LISTINGS} listings: Airbnb account {aid}.", timeout=30_000
                )
                shot = tmp_path / "extension-connected.png"
                await page.screenshot(path=str(shot))
                print(f"screenshot: {shot}")
                assert errors == []

                # Exactly the auth group of the browser's cookies, for this account. (Read
                # before any sync: a sync saves the cookies Airbnb rotates, so the scheduler,
                # which syncs an account whose credentials changed at once, starts after.)
                expected = format_cookie_header(auth_only({c["name"]: c["value"] for c in jar}))
                row = await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", aid)
                assert row is not None
                stored_cookie = cipher.decrypt(row["credentials_encrypted"])
                assert stored_cookie == expected
                names = [part.split("=", 1)[0] for part in stored_cookie.split("; ")]
                assert names == [n for n in AUTH_COOKIES if n in names]
                assert row["credentials_invalid_at"] is None and row["credentials_version"] == 2
                # navigator.userAgent, as the extension read it
                assert row["user_agent"] == BROWSER_UA
                others = await db.fetchval(
                    "SELECT count(*) FROM airbnb.accounts WHERE account_id <> $1", aid
                )
                assert others == 0

                # The account's next sync succeeds with what the extension sent. (The
                # scheduler catches a never-synced account up on its own once it starts;
                # the trigger joins that job or makes one: every job of the day must pass.)
                stack.start("scheduler")
                status, trigger = await api(
                    "POST", f"{admin.base}/api/v1/accounts/{aid}/sync", {"full": False}
                )
                assert status == 202, trigger
                jobs = await wait_for_jobs(db, [aid], scrape_day=TODAY, timeout=120)
                assert jobs, "no job"
                for job in jobs:
                    assert job["status"] == "succeeded", json.dumps(dict(job), default=str)
                    assert job["listings_total"] == LISTINGS

                # A revoked token: the button shows the server's reason, nothing changes.
                version = await db.fetchval(
                    "SELECT credentials_version FROM airbnb.accounts WHERE account_id = $1", aid
                )
                status, _ = await api(
                    "DELETE",
                    f"{admin.base}/api/v1/accounts/{aid}/connect-tokens/{made['token_id']}",
                )
                assert status == 200
                await button.click()
                await expect(result).to_have_text(
                    "Not connected: the connect token was revoked; ask for a new connect link.",
                    timeout=15_000,
                )
                assert "fail" in (await result.get_attribute("class") or "")

                # A session Airbnb no longer takes (the host logged out everywhere): the
                # fetcher's check refuses it, and the button says so; nothing is saved.
                status, fresh = await api(
                    "POST", f"{admin.base}/api/v1/accounts/{aid}/connect-tokens"
                )
                assert status == 201, fresh
                await worker.evaluate("token => chrome.storage.local.set({token})", fresh["token"])
                await sim.send("POST", f"/_sim/faults/revoke/{aid}")
                await button.click()
                await expect(result).to_contain_text(
                    "Not connected: Airbnb did not accept this session", timeout=30_000
                )
                assert (
                    await db.fetchval(
                        "SELECT credentials_version FROM airbnb.accounts WHERE account_id = $1", aid
                    )
                    == version
                )
                # The extension keeps no cookie: its storage holds the two settings only.
                assert await worker.evaluate("chrome.storage.local.get(null)") == {
                    "server": admin.base,
                    "token": fresh["token"],
                }
            finally:
                await context.close()

        audit = await db.fetch(
            "SELECT action, actor FROM airbnb.audit_log WHERE account_id = $1 ORDER BY entry_id",
            aid,
        )
        # The refused clicks left no entry.
        assert [a["action"] for a in audit if a["action"] != "sync_triggered"] == [
            "connect_token_created",
            "account_connected",
            "connect_token_revoked",
            "connect_token_created",
        ]
        # No process logged the token or a cookie value the browser held.
        secrets_ = [
            made["token"],
            fresh["token"],
            *(c["value"] for c in jar if len(c["value"]) >= 12),
        ]
        services, leaks = leaked(tmp_path, secrets_)
        assert services >= {"admin", "fetcher", "simulator", "scheduler", "writer"}
        assert leaks == [], leaks
    finally:
        await db.close()
