"""The dashboard at /ui/ in a real browser: Playwright for Python driving Debian's chromium.

The stack is ``sync-airbnb demo`` itself, as a user starts it (embedded PostgreSQL and NATS,
the simulator, every service): three accounts of 4, 6 and 7 listings, backfilled. The test
opens the URL the demo prints and pastes the key it prints, then checks each page against
the read API it is drawn from:

- the portfolio lists every demo listing, in the API's order, with the same figures
  (``GET /api/v1/portfolio``), its 28-day trend and its flags, also at another threshold;
- a listing's charts are drawn (plotly's SVG) with the API's points, day and week, and the
  forward demand with the scrapes of each stay date;
- the accounts page shows each account's status, its jobs' progress, and the
  needs-new-credentials mark with what to do;
- a wrong key is refused with a clear message and asked again;
- a listing name holding markup (names come from Airbnb) is shown as text, never run;
- on a phone-sized screen (390 x 844) nothing overflows sideways;
- every request of every page stays on the admin's own host and port, and no page logs an
  error (a Content-Security-Policy violation would).

Screenshots of each page are kept under pytest's basetemp (``ui-screenshots/``). As in
test_docs_browser.py, chromium is /usr/bin/chromium (`make system-deps` installs it) and the
tests skip saying why when it or playwright is missing.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg
import pytest

from services.launcher.demo_world import DEMO_LISTINGS, demo_world
from tests.infra import ServiceLauncher, ServiceProcess, free_port
from tests.system.test_docs_browser import CHROMIUM, _browser_or_skip

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 1000}
FORWARD_SCRAPES = 6  # app.js: the latest scrape days drawn in the forward chart


@dataclass
class Demo:
    proc: ServiceProcess
    ui_url: str
    origin: str
    key: str
    database_url: str
    shots: Path
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"http://{self.origin}/api/v1{path}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, headers={"X-API-Key": self.key})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(text in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    _browser_or_skip()
    root = tmp_path_factory.mktemp("ui-demo")
    state = root / "state"
    scrub = ("DATABASE_URL", "NATS_URL", "SECRET_KEYS", "ADMIN_API_KEYS", "SYNC_AIRBNB_TODAY")
    launcher = ServiceLauncher(base_env={}, logdir=root, scrub=scrub)
    env = {
        "SYNC_AIRBNB_STATE_DIR": str(state),
        "ADMIN_PORT": str(free_port()),
        "UP_NATS_PORT": str(free_port()),
    }
    proc = launcher.start(["demo"], env)
    try:
        proc.wait_for_log(r"Stop     Ctrl-C", timeout=240)
        out = proc.output()
        m = re.search(
            r"^Web UI   (http://[\d.]+:\d+/ui/)   \(the dashboard: paste the key (\S+)", out, re.M
        )
        assert m, out[-3000:]
        db = re.search(r"^Database DATABASE_URL=(\S+)", out, re.M)
        assert db, out[-3000:]
        shots = tmp_path_factory.getbasetemp() / "ui-screenshots"
        shots.mkdir(exist_ok=True)
        yield Demo(proc, m.group(1), urlsplit(m.group(1)).netloc, m.group(2), db.group(1), shots)
    finally:
        with contextlib.suppress(Exception):
            proc.terminate(timeout=60)
        launcher.cleanup()
        for leftover in _processes_mentioning(str(state)):
            with contextlib.suppress(psutil.Error):
                leftover.kill()


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


def new_page(browser: Any, demo: Demo, viewport: dict[str, int] = DESKTOP) -> Any:
    """A page in a fresh context (its own sessionStorage) that records every request and
    every error it logs."""
    page = browser.new_context(viewport=viewport).new_page()
    page.on("request", lambda r: demo.requests.append(r.url))
    page.on("pageerror", lambda e: demo.errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: demo.errors.append(m.text) if m.type == "error" else None)
    return page


def wait_state(page: Any, state: str) -> None:
    page.wait_for_selector(f"body[data-state='{state}']", timeout=30_000)


def open_with_key(page: Any, demo: Demo, hash_: str = "") -> None:
    resp = page.goto(demo.ui_url + hash_)
    assert resp is not None and resp.status == 200
    wait_state(page, "key")
    page.fill("#key-input", demo.key)
    page.click("#key-form button[type=submit]")
    wait_state(page, "ready")


def assert_local(demo: Demo) -> None:
    assert demo.requests, "no request recorded"
    elsewhere = [u for u in demo.requests if urlsplit(u).netloc != demo.origin]
    assert not elsewhere, f"requests that left the admin: {elsewhere}"
    assert not demo.errors, demo.errors


# --- figures as the page shows them ---------------------------------------------------------

NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+")


def shown_number(text: str) -> float | None:
    """The number a figure's text shows (``1,234``, ``3.45%``, ``+12.5%``), ``None`` for the
    dash of a missing value."""
    if text.strip() == "\u2013":
        return None
    m = NUMBER.search(text)
    assert m, text
    return float(m.group(0).replace(",", ""))


def assert_figure(field_: str, value: float | None, shown: dict[str, str]) -> None:
    """The page's data-value is the API's number; its text the same number, rounded as
    app.js rounds it (counts to 1, rates to 0.01 %, changes to 0.1 %)."""
    if value is None:
        assert shown["value"] == "" and shown["text"] == "\u2013", (field_, shown)
        return
    assert float(shown["value"]) == pytest.approx(value, rel=1e-12, abs=1e-12), (field_, shown)
    number = shown_number(shown["text"])
    assert number is not None, (field_, shown)
    if ".change_" in field_:
        scaled, half = value * 100, 0.05
    elif field_.startswith("conversion_rate."):
        scaled, half = value * 100, 0.005
    else:
        scaled, half = value, 0.5
    assert abs(number - scaled) <= half + 1e-9, (field_, value, shown)


ROWS_JS = """() => [...document.querySelectorAll('#portfolio tbody tr')].map(tr => ({
  listing_id: tr.dataset.listingId, account_id: tr.dataset.accountId, flags: tr.dataset.flags,
  flagged: tr.classList.contains('flagged'),
  name: tr.querySelector('a.listing-link').textContent,
  href: tr.querySelector('a.listing-link').getAttribute('href'),
  spark: {points: +tr.querySelector('svg.spark').dataset.points,
          present: +tr.querySelector('svg.spark').dataset.present,
          lines: tr.querySelectorAll('svg.spark polyline').length},
  figures: Object.fromEntries([...tr.querySelectorAll('[data-field]')].map(
      s => [s.dataset.field, {value: s.dataset.value, text: s.textContent}])),
}))"""

FIGURE_FIELDS = [
    f"{metric}.{side}.{name}_{n}"
    for metric in ("page_views", "conversion_rate")
    for side in ("own", "similar")
    for n in (7, 28)
    for name in ("last", "prior", "change")
]


def assert_portfolio_matches(rows: list[dict[str, Any]], answer: dict[str, Any]) -> None:
    listings = answer["listings"]
    assert [(r["account_id"], r["listing_id"]) for r in rows] == [
        (x["account_id"], x["airbnb_listing_id"]) for x in listings
    ]
    for row, x in zip(rows, listings, strict=True):
        assert row["name"] == (
            x["listing_name"] or x["airbnb_internal_name"] or x["airbnb_listing_id"]
        )
        assert set(row["figures"]) == set(FIGURE_FIELDS)
        for f in FIGURE_FIELDS:
            metric, side, name = f.split(".")
            assert_figure(f, x[metric][side][name], row["figures"][f])
        assert row["flags"] == " ".join(x["flags"])
        assert row["flagged"] == bool(x["flags"])
        trend = x["trend"]["page_views"]
        assert row["spark"]["points"] == len(trend) == 28
        assert row["spark"]["present"] == sum(v is not None for v in trend)
        assert row["spark"]["lines"] >= (1 if row["spark"]["present"] else 0)


# --- the tests ------------------------------------------------------------------------------


def test_portfolio_lists_every_demo_listing_with_the_apis_figures(browser: Any, demo: Demo) -> None:
    world = demo_world(DEMO_LISTINGS, seed=1)
    expected_ids = {(a.account_id, li.listing_id) for a in world.accounts for li in a.listings}
    answer = demo.api("/portfolio")
    assert {(x["account_id"], x["airbnb_listing_id"]) for x in answer["listings"]} == expected_ids
    assert len(answer["listings"]) == sum(DEMO_LISTINGS)

    page = new_page(browser, demo)
    open_with_key(page, demo)
    assert page.evaluate("() => sessionStorage.length") == 1
    rows = page.evaluate(ROWS_JS)
    assert len(rows) == sum(DEMO_LISTINGS)
    assert_portfolio_matches(rows, answer)
    assert page.locator("#portfolio").get_attribute("data-end") == answer["end"]
    page.screenshot(path=str(demo.shots / "portfolio.png"), full_page=True)

    # A 1 % threshold through the page's own control: the flags the API sets at 0.01.
    page.fill("input[name=drop_threshold]", "1")
    page.click("#portfolio-form button[type=submit]")
    page.wait_for_function("() => location.hash.includes('drop_threshold=0.01')")
    wait_state(page, "ready")
    low = demo.api("/portfolio", drop_threshold="0.01")
    rows = page.evaluate(ROWS_JS)
    assert_portfolio_matches(rows, low)
    flagged = [r for r in rows if r["flagged"]]
    print(f"\nportfolio: {len(rows)} listings, {len(flagged)} flagged at 1 %")
    if flagged:
        # each flag is shown as a badge, and the own figure it is about is highlighted
        first = page.locator("#portfolio tr.flagged").first
        assert first.locator(".flag").count() == len(flagged[0]["flags"].split())
        assert first.locator("td.drop").count() == len(flagged[0]["flags"].split())
        page.screenshot(path=str(demo.shots / "portfolio-flags.png"), full_page=True)
    assert_local(demo)


CHARTS_JS = """() => Object.fromEntries([...document.querySelectorAll('[data-chart]')].map(d => [
  d.dataset.chart, {
    drawn: d.dataset.drawn === 'true', svg: d.querySelectorAll('svg.main-svg').length,
    points: +d.dataset.points,
    traces: (d.data || []).map(t => ({type: t.type, name: t.name, x: t.x, y: t.y})),
    markers: [...d.querySelectorAll('.scatterlayer .trace')].map(
        t => t.querySelectorAll('.points path.point').length),
    bars: [...d.querySelectorAll('.barlayer .trace')].map(
        t => t.querySelectorAll('.point path').length),
  }]))"""


def test_a_listing_page_draws_its_charts_with_the_apis_points(browser: Any, demo: Demo) -> None:
    answer = demo.api("/portfolio")
    first = answer["listings"][0]
    account_id, listing_id = first["account_id"], first["airbnb_listing_id"]
    page = new_page(browser, demo)
    open_with_key(page, demo)
    page.locator(f"#portfolio tr[data-listing-id='{listing_id}'] a.listing-link").click()
    wait_state(page, "ready")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-chart]')].every(d => d.dataset.drawn)"
    )
    title = page.locator("#listing-title")
    assert title.get_attribute("data-listing-id") == listing_id
    assert title.text_content() == (
        first["listing_name"] or first["airbnb_internal_name"] or listing_id
    )
    rng = page.locator("#listing-range")
    to = rng.get_attribute("data-to")
    assert to == answer["end"]
    charts = page.evaluate(CHARTS_JS)
    assert set(charts) == {
        "views-day",
        "views-week",
        "conversion-day",
        "conversion-week",
        "forward",
    }

    base = f"/accounts/{account_id}/insights"
    asked = {
        "views-day": ("p3_impressions", "day", rng.get_attribute("data-from")),
        "views-week": ("p3_impressions", "week", rng.get_attribute("data-week-from")),
        "conversion-day": ("conversion_rate", "day", rng.get_attribute("data-from")),
        "conversion-week": ("conversion_rate", "week", rng.get_attribute("data-week-from")),
    }
    counts: dict[str, int] = {}
    for chart, (metric, granularity, start) in asked.items():
        series = demo.api(
            base,
            listing_id=listing_id,
            metric=metric,
            granularity=granularity,
            to=to,
            **{"from": start},
        )
        points = series["points"]
        assert points, (chart, series)
        got = charts[chart]
        assert got["drawn"] and got["svg"] >= 1, chart
        assert [t["name"] for t in got["traces"]] == ["own", "similar listings"], chart
        for trace, side in zip(got["traces"], ("own", "similar"), strict=True):
            assert len(trace["x"]) == len(points), (chart, side)
            assert trace["x"] == [p["period_start"] for p in points], (chart, side)
            assert trace["y"] == [p[side] for p in points], (chart, side)
        present = [sum(p[s] is not None for p in points) for s in ("own", "similar")]
        # what plotly drew: a marker per value of a day chart, a bar per value of a week's
        drawn = got["markers"] if granularity == "day" else got["bars"]
        assert drawn == present, (chart, drawn, present)
        assert got["points"] == 2 * len(points)
        counts[chart] = len(points)

    forward = demo.api(
        f"{base}/forward",
        listing_id=listing_id,
        stay_from=rng.get_attribute("data-stay-from"),
        stay_to=rng.get_attribute("data-stay-to"),
    )
    by_day: dict[str, list[tuple[str, Any]]] = {}
    for stay in forward["stay_dates"]:
        for s in stay["scrapes"]:
            by_day.setdefault(s["scraped_at"][:10], []).append((stay["stay_date"], s["own"]))
    kept = sorted(by_day)[-FORWARD_SCRAPES:]
    got = charts["forward"]
    assert kept and got["drawn"] and got["svg"] >= 1
    assert [t["name"] for t in got["traces"]] == [f"scraped {d}" for d in kept]
    for trace, day in zip(got["traces"], kept, strict=True):
        assert list(zip(trace["x"], trace["y"], strict=True)) == by_day[day], day
    assert got["points"] == sum(len(by_day[d]) for d in kept) > 0
    assert got["markers"] == [sum(v is not None for _, v in by_day[d]) for d in kept]
    counts["forward"] = got["points"]
    print(f"\nlisting {listing_id}: points per chart {counts}")
    page.screenshot(path=str(demo.shots / "listing.png"), full_page=True)
    assert_local(demo)


def test_accounts_show_status_jobs_and_what_to_do_about_credentials(
    browser: Any, demo: Demo
) -> None:
    accounts = demo.api("/accounts")["items"]
    assert len(accounts) == len(DEMO_LISTINGS)
    marked = accounts[0]["account_id"]
    # Airbnb refusing the session, as the fetcher records it (services/fetcher/sync.py).
    with psycopg.connect(demo.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE airbnb.accounts SET credentials_invalid_at = now(),"
            " credentials_error = 'session rejected (401)' WHERE account_id = %s",
            (marked,),
        )
    try:
        page = new_page(browser, demo)
        open_with_key(page, demo, "#/accounts")
        cards = page.locator("#accounts article.account")
        assert cards.count() == len(accounts)
        for a in accounts:
            card = page.locator(f"#accounts article[data-account-id='{a['account_id']}']")
            assert card.locator("[data-field=status]").text_content() == "active"
            assert card.locator("[data-field=last_sync_at]").text_content() != "\u2013"
            jobs = demo.api(f"/accounts/{a['account_id']}/syncs", limit=3)["items"]
            shown = card.locator("li.job")
            assert shown.count() == len(jobs) >= 1
            for i, job in enumerate(jobs):
                li = shown.nth(i)
                assert li.get_attribute("data-job-id") == job["job_id"]
                assert li.get_attribute("data-status") == job["status"] == "succeeded"
                bar = li.locator("progress")
                assert bar.get_attribute("value") == bar.get_attribute("max")
                assert bar.get_attribute("max") == str(job["listings_total"])
        mark = page.locator(f"article[data-account-id='{marked}'] [data-needs-credentials]")
        assert mark.count() == 1
        text = mark.text_content() or ""
        assert "Needs new credentials" in text and f"PATCH /api/v1/accounts/{marked}" in text
        assert "airbnb_cookie" in text and "session rejected (401)" in text
        assert page.locator("[data-needs-credentials]").count() == 1
        page.screenshot(path=str(demo.shots / "accounts.png"), full_page=True)
    finally:
        with psycopg.connect(demo.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE airbnb.accounts SET credentials_invalid_at = NULL, credentials_error = NULL"
                " WHERE account_id = %s",
                (marked,),
            )
    assert_local(demo)


def test_a_wrong_key_is_refused_with_a_clear_message_and_asked_again(
    browser: Any, demo: Demo
) -> None:
    page = new_page(browser, demo)
    resp = page.goto(demo.ui_url)
    assert resp is not None and resp.status == 200
    wait_state(page, "key")
    assert not page.locator("#key-error").is_visible()
    page.fill("#key-input", "not-a-key")
    page.click("#key-form button[type=submit]")
    wait_state(page, "key")
    error = page.locator("#key-error")
    assert error.is_visible()
    assert error.get_attribute("data-status") == "401"
    assert "refused" in (error.text_content() or "")
    assert page.locator("#key-input").is_visible()
    assert page.evaluate("() => sessionStorage.length") == 0  # the wrong key is not kept
    assert page.locator("#portfolio").count() == 0
    page.screenshot(path=str(demo.shots / "wrong-key.png"))
    # the right key then opens the page
    page.fill("#key-input", demo.key)
    page.click("#key-form button[type=submit]")
    wait_state(page, "ready")
    assert not page.locator("#key-error").is_visible()
    assert page.locator("#portfolio tbody tr").count() == sum(DEMO_LISTINGS)
    # the refused call is the only failed one: the browser logs its 401
    demo.errors[:] = [e for e in demo.errors if "401" not in e]
    assert_local(demo)


OVERFLOW_JS = "() => document.documentElement.scrollWidth"


def test_every_page_is_readable_on_a_phone_sized_screen(browser: Any, demo: Demo) -> None:
    page = new_page(browser, demo, PHONE)
    open_with_key(page, demo)
    assert page.evaluate(OVERFLOW_JS) <= PHONE["width"]
    # each listing a card, its figures labelled
    row = page.locator("#portfolio tbody tr").first
    assert row.bounding_box()["width"] <= PHONE["width"]
    label = page.evaluate(
        "() => getComputedStyle(document.querySelector('#portfolio td.num'), '::before').content"
    )
    assert "page views" in label
    page.screenshot(path=str(demo.shots / "phone-portfolio.png"), full_page=True)

    row.locator("a.listing-link").click()
    wait_state(page, "ready")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-chart]')].every(d => d.dataset.drawn)"
    )
    assert page.evaluate(OVERFLOW_JS) <= PHONE["width"]
    widths = page.evaluate(
        "() => [...document.querySelectorAll('[data-chart] svg.main-svg')].map("
        "s => s.getBoundingClientRect().right)"
    )
    assert widths and max(widths) <= PHONE["width"]
    page.screenshot(path=str(demo.shots / "phone-listing.png"), full_page=True)

    page.click("a[data-nav=accounts]")
    wait_state(page, "ready")
    page.wait_for_selector("#accounts")
    assert page.evaluate(OVERFLOW_JS) <= PHONE["width"]
    page.screenshot(path=str(demo.shots / "phone-accounts.png"), full_page=True)
    print(f"\nscreenshots in {demo.shots}: {sorted(p.name for p in demo.shots.iterdir())}")
    assert_local(demo)


def test_a_listing_name_with_markup_is_shown_as_text(browser: Any, demo: Demo) -> None:
    """Listing names come from Airbnb: whatever they hold is text on the page, never markup."""
    listing = demo.api("/portfolio")["listings"][1]
    evil = '<img src=x onerror="window.__injected=1">Loft & "Co" <b>bold</b>'
    with psycopg.connect(demo.database_url, autocommit=True) as conn:
        before = conn.execute(
            "SELECT listing_name FROM airbnb.listings WHERE account_id = %s"
            " AND airbnb_listing_id = %s",
            (listing["account_id"], listing["airbnb_listing_id"]),
        ).fetchone()
        conn.execute(
            "UPDATE airbnb.listings SET listing_name = %s WHERE account_id = %s"
            " AND airbnb_listing_id = %s",
            (evil, listing["account_id"], listing["airbnb_listing_id"]),
        )
    try:
        page = new_page(browser, demo)
        open_with_key(page, demo)
        row = page.locator(f"#portfolio tr[data-listing-id='{listing['airbnb_listing_id']}']")
        link = row.locator("a.listing-link")
        assert link.text_content() == evil
        assert row.locator("img, b").count() == 0
        link.click()
        wait_state(page, "ready")
        assert page.locator("#listing-title").text_content() == evil
        assert page.locator("main img, main b").count() == 0
        assert page.evaluate("() => window.__injected") is None
    finally:
        with psycopg.connect(demo.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE airbnb.listings SET listing_name = %s WHERE account_id = %s"
                " AND airbnb_listing_id = %s",
                (
                    before[0] if before else None,
                    listing["account_id"],
                    listing["airbnb_listing_id"],
                ),
            )
    assert_local(demo)
