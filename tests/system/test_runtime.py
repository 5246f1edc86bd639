"""The service runtime in a real process: health, readiness, metrics, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psutil

from tests.infra import ServiceLauncher, free_port


async def test_service_serves_health_and_stops_cleanly_on_sigterm(
    launcher: ServiceLauncher,
) -> None:
    port = free_port()
    proc = launcher.start(["writer"], env={"HTTP_PORT": str(port)})
    proc.wait_for_log(r"writer ready, listening")
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with http.get(f"{base}/health/ready") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["checks"] == {"nats": "ok", "postgres": "ok"}
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert "sync_airbnb_" in await resp.text()

    children = proc.descendants()
    started = time.monotonic()
    code = proc.terminate(timeout=10)
    elapsed = time.monotonic() - started
    assert code == 0, proc.output()[-3000:]
    assert elapsed < 10
    assert "writer stopped" in proc.output()
    assert "Traceback" not in proc.output()
    leftovers = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []


async def test_service_waits_for_nats_and_stops_on_sigterm_while_waiting(
    launcher: ServiceLauncher,
) -> None:
    dead_port = free_port()
    proc = launcher.start(["writer"], env={"NATS_URL": f"nats://127.0.0.1:{dead_port}"})
    proc.wait_for_log(r"NATS unavailable .*retrying")
    assert proc.terminate(timeout=10) == 0
    assert "Traceback" not in proc.output()


async def test_readiness_names_the_dependency_that_is_down(
    launcher: ServiceLauncher, nats_server
) -> None:
    port = free_port()
    proc = launcher.start(["writer"], env={"HTTP_PORT": str(port)})
    proc.wait_for_log(r"writer ready, listening")
    nats_server.stop()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                async with http.get(f"http://127.0.0.1:{port}/health/ready") as resp:
                    body = await resp.json()
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.1)
        assert resp.status == 503
        assert body["checks"] == {"nats": "down", "postgres": "ok"}
    finally:
        nats_server.start()
    assert proc.terminate(timeout=10) == 0
