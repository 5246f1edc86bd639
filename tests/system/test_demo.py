"""``sync-airbnb demo --exit`` end to end on a fresh state directory, then again on the
same state: real processes, embedded PostgreSQL and NATS, real today."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.launcher.demo_world import DEMO_LISTINGS, demo_world
from services.simulator.data import build_world
from tests.infra import ServiceLauncher, free_port

# The bound for a fresh machine.
FRESH_DEMO_BOUND_S = 120


def test_demo_world_trims_the_simulators_own_world() -> None:
    world = demo_world(DEMO_LISTINGS, seed=1)
    full = build_world(3, max(DEMO_LISTINGS), seed=1)
    assert [len(a.listings) for a in world.accounts] == [4, 6, 7]
    for trimmed, original in zip(world.accounts, full.accounts, strict=True):
        assert trimmed.account_id == original.account_id
        assert trimmed.cookie == original.cookie
        assert trimmed.listings == original.listings[: len(trimmed.listings)]


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(text in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    for proc in processes_mentioning(str(path)):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def rows_per_table(report: str) -> dict[str, int]:
    found = re.findall(r"│ (chart_query|chart_summary|list_of_metrics)\s+│\s+([\d,]+) │", report)
    return {table: int(n.replace(",", "")) for table, n in found}


@pytest.mark.slow
def test_demo_exit_on_a_fresh_state_then_again_on_the_same_state(
    bare_launcher: ServiceLauncher, state_dir: Path
) -> None:
    env = {
        "SYNC_AIRBNB_STATE_DIR": str(state_dir),
        "ADMIN_PORT": str(free_port()),
        "UP_NATS_PORT": str(free_port()),
    }
    started = time.monotonic()
    first = bare_launcher.run(["demo", "--exit"], env, timeout=FRESH_DEMO_BOUND_S + 60)
    fresh_s = time.monotonic() - started
    out = first.stdout
    assert first.returncode == 0, out[-5000:] + first.stderr[-3000:]
    assert f"generated SECRET_KEYS, ADMIN_API_KEYS into {state_dir / 'secrets.env'}" in out
    assert out.count(": created, ") == 3
    assert len(re.findall(r"first-run backfill [0-9a-f-]{36}", out)) == 3
    for n in DEMO_LISTINGS:
        assert re.search(rf"━ {n}/{n} listings\s+[\d,]+ rows \S+ succeeded", out), n
    rows = rows_per_table(out)
    assert set(rows) == {"chart_query", "chart_summary", "list_of_metrics"}
    assert all(n > 0 for n in rows.values()), rows
    # Four weeks per listing, own beside similar: one row per listing of each account.
    assert len(re.findall(r"^Account \d+", out, re.M)) == 3
    assert len(re.findall(r"│\s+\d[\d,]* / \d[\d,]* │", out)) >= sum(DEMO_LISTINGS)
    assert "/api/v1" in out and "/docs" in out
    # The dashboard's URL beside the API line, with the demo's own key to paste into it.
    api_line = re.search(r"^API      (http://127\.0\.0\.1:\d+)/api/v1 ", out, re.M)
    ui_line = re.search(
        r"^Web UI   (http://127\.0\.0\.1:\d+)/ui/   \(the dashboard: paste the key (\S+) when",
        out,
        re.M,
    )
    assert api_line and ui_line, out[-3000:]
    assert ui_line.group(1) == api_line.group(1) == f"http://127.0.0.1:{env['ADMIN_PORT']}"
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("API      "))
    assert lines[at + 1].startswith("Web UI   "), lines[at : at + 2]
    secrets = (state_dir / "secrets.env").read_text()
    keys = re.search(r"^ADMIN_API_KEYS=(.+)$", secrets, re.M)
    assert keys and ui_line.group(2) == keys.group(1).split(",")[0]
    assert f"ADMIN_API_KEYS in {state_dir / 'secrets.env'}" in out
    assert "Stop     --exit given" in out
    assert (state_dir / "logs" / "demo.log").stat().st_size > 0
    assert processes_mentioning(str(state_dir)) == []
    assert fresh_s < FRESH_DEMO_BOUND_S

    started = time.monotonic()
    second = bare_launcher.run(["demo", "--exit"], env, timeout=FRESH_DEMO_BOUND_S + 60)
    again_s = time.monotonic() - started
    out2 = second.stdout
    assert second.returncode == 0, out2[-5000:] + second.stderr[-3000:]
    assert out2.count(": exists, updated, ") == 3
    assert "generated" not in out2
    # The same scrape day upserts the rows in place (a run across UTC midnight adds a
    # scrape day): nothing is lost either way.
    rows2 = rows_per_table(out2)
    assert all(rows2[t] >= n for t, n in rows.items()), (rows, rows2)
    assert processes_mentioning(str(state_dir)) == []
    print(f"\ndemo --exit: fresh state {fresh_s:.1f}s, same state again {again_s:.1f}s")
