"""The fetcher's TLS handshake on the wire is Chrome's, and Python's own ssl is not.

Runs ``python -m benchmarks.client_hello --json`` for real: the simulator serving HTTPS
(``--tls-dir``), tshark capturing on the loopback with a capture filter on its port,
one preflight by ``AirbnbClient`` and one GET by aiohttp with Python's ssl. Needs
tshark and root (a loopback capture); skipped, saying which is missing, otherwise.
About 5 s. What the fields mean: docs/tls-handshake.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from shared.airbnb.tls_fingerprint import CHROME_CIPHERS, CHROME_JA4_B

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def capture() -> dict:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (apt-get install tshark): no capture to look at")
    if os.geteuid() != 0:
        pytest.skip("a loopback capture needs root (or dumpcap's capabilities)")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.client_hello", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, 1), f"capture failed (exit {proc.returncode}):\n{proc.stderr}"
    result = orjson.loads(proc.stdout)
    print(result["tshark"])
    return result


def test_the_fetchers_hello_is_chromes(capture: dict) -> None:
    assert capture["problems"] == [], "\n".join(capture["problems"])
    assert capture["ok"]
    assert capture["target"] == "chrome152"
    [hello] = capture["fetcher"]  # one connection: the preflight's redirects reuse it
    a, b, c = hello["ja4"].split("_")
    # TLS 1.3, to an IP (no SNI), 15 ciphers, 16 extensions, ALPN h2 first.
    assert a == "t13i1516h2"
    assert b == CHROME_JA4_B == "8daaf6152771"
    # Chrome 152's published JA4_c (tls.peet.ws, to a domain: SNI is not in this part).
    assert c == capture["reference_ja4"].split("_")[2] == "cb7bf5808d99"
    assert all(hello["grease"].values())
    assert [int(x, 16) for x in hello["cipher_suites"][1:]] == list(CHROME_CIPHERS)
    assert hello["alpn"] == ["h2", "http/1.1"]
    assert hello["supported_groups"][1:] == ["11ec", "001d", "0017", "0018"]
    assert hello["server_name"] is None


def test_pythons_ssl_hello_differs(capture: dict) -> None:
    [fetcher] = capture["fetcher"]
    [python] = capture["python"]
    assert python["ja4"] != fetcher["ja4"]
    assert not any(python["grease"].values())
    assert python["alpn"] == []  # aiohttp offers no ALPN: "00" in JA4_a
    assert python["ja4"].split("_")[0].endswith("00")
    assert python["ja4"].split("_")[1] != CHROME_JA4_B
    assert set(python["extensions_sorted"]) != set(fetcher["extensions_sorted"])
