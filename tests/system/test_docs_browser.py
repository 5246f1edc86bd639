"""/docs in a real browser: Playwright for Python driving Debian's chromium.

The admin runs as a real process. The page opens without a key, Swagger UI renders the
OpenAPI 3.1 document's operations, Authorize takes a key and "Try it out" on
GET /api/v1/accounts answers 200. Every request the page makes goes to the admin's own
host and port. Playwright's own browser download cannot work here, so the test uses
/usr/bin/chromium (`make system-deps` installs it where it can) and skips saying why
when chromium or playwright is missing. The screenshot is kept under pytest's basetemp.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.infra import ServiceLauncher
from tests.system.test_admin_process import start_admin

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (make system-deps installs it as root on Debian)")


def test_docs_render_the_operations_and_try_one_with_a_key(
    launcher: ServiceLauncher, tmp_path: Path
) -> None:
    _browser_or_skip()
    from playwright.sync_api import Request, expect, sync_playwright

    admin = start_admin(launcher)
    origin = urlsplit(admin.base).netloc
    requested: list[str] = []
    keys_sent: list[str | None] = []

    def on_request(request: Request) -> None:
        requested.append(request.url)
        if urlsplit(request.url).path == "/api/v1/accounts":
            keys_sent.append(request.headers.get("x-api-key"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("request", on_request)
            resp = page.goto(f"{admin.base}/docs")
            assert resp is not None and resp.status == 200
            block = page.locator("#operations-accounts-listAccounts")
            expect(block).to_be_visible(timeout=10_000)
            assert "Unable to render this definition" not in page.content()
            expect(block.locator(".opblock-summary-path")).to_have_text("/api/v1/accounts")

            page.locator("button.authorize").first.click()
            # The API key's form (the other scheme is POST /connect's connect token).
            api_key = page.locator(".auth-container").filter(has_text="ApiKey (apiKey)")
            api_key.locator("input").first.fill("test-key-1")
            api_key.locator(".auth-btn-wrapper button.authorize").click()
            page.locator("button.btn-done").first.click()

            block.locator(".opblock-summary").click()
            block.locator("button.try-out__btn").click()
            block.locator("button.execute").click()
            status = block.locator(".live-responses-table .response .response-col_status")
            expect(status.first).to_have_text("200", timeout=10_000)
            shot = tmp_path / "docs.png"
            page.screenshot(path=str(shot), full_page=False)
            print(f"screenshot of /docs: {shot}")
        finally:
            browser.close()
    assert keys_sent == ["test-key-1"], keys_sent
    elsewhere = [u for u in requested if urlsplit(u).netloc != origin]
    assert not elsewhere, f"requests that left the admin: {elsewhere}"
