"""The fetcher's TLS handshake, seen on the wire: is its ClientHello Chrome's?

    .venv/bin/python -m benchmarks.client_hello [--json] [--keep DIR] [--user-agent UA]

Needs ``tshark`` and the right to capture on the loopback (root, or dumpcap's
capabilities). What it does:

1. starts ``sync-airbnb simulator --port 0 --tls-dir DIR`` (HTTPS, a throwaway
   certificate for 127.0.0.1) and reads its port from the announce line;
2. starts ``tshark -i lo -f "tcp port PORT" -w DIR/hello.pcapng``;
3. makes one preflight with the fetcher's client (``AirbnbClient``, curl_cffi
   impersonating the Chrome the User-Agent names), then one GET with Python's own
   ssl (``ssl.create_default_context(cafile=...)`` through aiohttp, the fetcher's
   transport before curl_cffi), and remembers the latter's source port;
4. stops tshark and reads every ClientHello back with ``tshark -r ... -T fields``
   (:data:`shared.airbnb.tls_fingerprint.TSHARK_FIELDS`): the one from aiohttp's port
   is Python's, the others the fetcher's;
5. computes JA4 for each (tshark 4.0 has no JA4 field), prints both side by side, and
   checks every fetcher hello against the browser its impersonation target copies
   (:data:`shared.airbnb.tls_fingerprint.REFERENCES`): GREASE, the 15 cipher suites in
   order, the extension set (sorted: Chrome permutes the order), the groups, the
   signature algorithms, ALPN h2 first, and the resulting JA4.

Exit 0 when the fetcher's hello is Chrome's, 1 when it is not, 2 when the capture
could not be made. ``--json`` prints one JSON object instead of the table (the test
reads that). The simulator account's cookie never leaves this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

from shared.airbnb import tls_fingerprint as tf

CHROME_152_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/152.0.0.0 Safari/537.36"
)
X_CLIENT_VERSION = "client-hello-check"
START_TIMEOUT_S = 20.0
ANNOUNCE = re.compile(r"simulator listening on (https?)://127\.0\.0\.1:(\d+)")


class CaptureError(Exception):
    """The capture could not be made (not: the hello was wrong)."""


def _lines_until(stream: IO[str], pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
    """Reads ``stream`` in a thread until a line matches; the rest is drained and dropped."""
    found: list[re.Match[str]] = []
    seen: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        for line in stream:
            if not ready.is_set():
                seen.append(line.rstrip())
                if m := pattern.search(line):
                    found.append(m)
                    ready.set()
        ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(timeout_s) or not found:
        tail = "\n  ".join(seen[-8:])
        raise CaptureError(f"no line matching {pattern.pattern!r} within {timeout_s}s:\n  {tail}")
    return found[0]


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def simulator(workdir: Path) -> Iterator[tuple[int, Path]]:
    """``sync-airbnb simulator --tls-dir``: (port, the CA file a client must trust)."""
    tls_dir = workdir / "tls"
    cmd = [sys.executable, "-m", "services.cli", "simulator", "--port", "0"]
    cmd += ["--accounts", "1", "--listings", "1", "--tls-dir", str(tls_dir)]
    log = (workdir / "simulator.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        try:
            m = _lines_until(proc.stdout, ANNOUNCE, START_TIMEOUT_S)
        except CaptureError as exc:
            raise CaptureError(f"simulator did not start (log: {log.name}): {exc}") from None
        if m.group(1) != "https":
            raise CaptureError("the simulator serves http: this one has no --tls-dir")
        yield int(m.group(2)), tls_dir / "cert.pem"
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def tshark_capture(tshark: str, port: int, pcap: Path) -> Iterator[None]:
    """A loopback capture with a capture filter on ``port``, running inside the block."""
    cmd = [tshark, "-i", "lo", "-f", f"tcp port {port}", "-w", str(pcap)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        _lines_until(proc.stderr, re.compile(r"Capturing on"), START_TIMEOUT_S)
        # "Capturing on" comes as the capture opens; give libpcap a moment to be armed.
        time.sleep(0.3)
        yield
        time.sleep(0.3)  # the last packets reach the ring before tshark is told to stop
    finally:
        _stop(proc, signal.SIGINT)
    if not pcap.exists():
        raise CaptureError(f"tshark wrote no {pcap} (exit {proc.returncode})")


def read_hellos(tshark: str, pcap: Path) -> list[tf.ClientHello]:
    cmd = [tshark, "-r", str(pcap), "-Y", "tls.handshake.type == 1", "-T", "fields"]
    cmd += ["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in tf.TSHARK_FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    return [tf.parse_tshark_fields(line) for line in out.splitlines() if line.strip()]


def tshark_version(tshark: str) -> str:
    out = subprocess.run([tshark, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


async def simulator_account(base_url: str, ca_file: Path) -> dict[str, Any]:
    # Before the capture starts, so this connection is not in it.
    context = ssl.create_default_context(cafile=str(ca_file))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base_url}/_sim/accounts", ssl=context) as resp,
    ):
        accounts: list[dict[str, Any]] = await resp.json()
    return accounts[0]


async def fetcher_preflight(
    base_url: str, ca_file: Path, account: dict[str, Any], user_agent: str
) -> tuple[str, str]:
    """One preflight with the fetcher's client: (its impersonation target, the outcome)."""
    from shared.airbnb.client import AirbnbClient

    client = AirbnbClient(
        cookie=account["cookie"],
        x_client_version=X_CLIENT_VERSION,
        user_agent=user_agent,
        base_url=base_url,
        ca_file=str(ca_file),
        min_interval_s=0,
        max_attempts=1,
        account_id=str(account["account_id"]),
    )
    try:
        async with client:
            landed = await client.preflight()
        outcome = f"landed on {landed.removeprefix(base_url)}"
    except Exception as exc:  # the hello is on the wire either way; say what came back
        outcome = f"{type(exc).__name__}: {exc}"
    return client.impersonate, outcome


async def python_get(base_url: str, ca_file: Path) -> tuple[int, str]:
    """One GET with Python's ssl through aiohttp: (its source port, the status)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    # A source port of our choosing tells this hello from the fetcher's in the capture.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.1", port), ssl=context)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"{base_url}/hosting/insights", allow_redirects=False) as resp,
    ):
        await resp.read()
        return port, f"HTTP {resp.status}"


def resolve_target(target: str) -> str:
    """curl_cffi's aliases ("chrome") to the versioned target they stand for."""
    from curl_cffi.requests import impersonate

    resolved: str = getattr(impersonate, "REAL_TARGET_MAP", {}).get(target, target)
    if resolved == "chrome":
        resolved = impersonate.DEFAULT_CHROME
    return resolved


@dataclass
class Result:
    tshark: str
    target: str
    reference: tf.BrowserReference | None
    fetcher: list[tf.ClientHello]
    python: list[tf.ClientHello]
    fetcher_outcome: str
    python_outcome: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tshark": self.tshark,
            "target": self.target,
            "reference": self.reference.name if self.reference else None,
            "reference_ja4": self.reference.ja4 if self.reference else None,
            "fetcher": [tf.summary(h) for h in self.fetcher],
            "python": [tf.summary(h) for h in self.python],
            "fetcher_outcome": self.fetcher_outcome,
            "python_outcome": self.python_outcome,
            "problems": self.problems,
        }


async def capture(workdir: Path, tshark: str, user_agent: str) -> Result:
    pcap = workdir / "hello.pcapng"
    with simulator(workdir) as (port, ca_file):
        base_url = f"https://127.0.0.1:{port}"
        account = await simulator_account(base_url, ca_file)
        with tshark_capture(tshark, port, pcap):
            target, fetcher_outcome = await fetcher_preflight(
                base_url, ca_file, account, user_agent
            )
            python_port, python_outcome = await python_get(base_url, ca_file)
    hellos = read_hellos(tshark, pcap)
    python = [h for h in hellos if h.src_port == python_port]
    fetcher = [h for h in hellos if h.src_port != python_port]
    if not fetcher or not python:
        raise CaptureError(
            f"expected hellos from both clients in {pcap}; got {len(fetcher)} from the "
            f"fetcher, {len(python)} from Python's ssl (port {python_port})"
        )
    target = resolve_target(target)
    reference = tf.REFERENCES.get(target)
    problems: list[str] = []
    if reference is None:
        problems.append(
            f"no reference ClientHello for impersonation target {target!r}: "
            f"add one to shared.airbnb.tls_fingerprint.REFERENCES"
        )
    else:
        for hello in fetcher:
            problems += [
                f"port {hello.src_port}: {p}" for p in tf.chrome_mismatches(hello, reference)
            ]
    if any(tf.ja4(h) == tf.ja4(fetcher[0]) for h in python):
        problems.append("Python's ssl sends the same JA4 as the fetcher: the comparison is void")
    return Result(
        tshark=tshark_version(tshark),
        target=target,
        reference=reference,
        fetcher=fetcher,
        python=python,
        fetcher_outcome=fetcher_outcome,
        python_outcome=python_outcome,
        problems=problems,
    )


# -- the table ----------------------------------------------------------------------

WIDTH = 46


def _column(hello: tf.ClientHello, what: str) -> list[str]:
    if what == "ciphers":
        return [tf.label(v, tf.CIPHER_NAMES) for v in hello.ciphers]
    if what == "extensions":
        return [tf.label(v, tf.EXTENSION_NAMES) for v in sorted(hello.extensions_clean)]
    if what == "groups":
        return [tf.label(v, tf.GROUP_NAMES) for v in hello.groups]
    if what == "signatures":
        return [tf.label(v, tf.SIGNATURE_NAMES) for v in hello.signature_algorithms]
    if what == "versions":
        return [
            tf.label(v, {0x0304: "TLS 1.3", 0x0303: "TLS 1.2"}) for v in hello.supported_versions
        ]
    if what == "alpn":
        return list(hello.alpn) or ["(none)"]
    raise ValueError(what)


def render(result: Result) -> str:
    f, p = result.fetcher[0], result.python[0]
    out = [
        result.tshark,
        f"fetcher: AirbnbClient, curl_cffi impersonate={result.target}; preflight "
        f"{result.fetcher_outcome}",
        f"python : aiohttp + ssl.create_default_context ({ssl.OPENSSL_VERSION}); "
        f"{result.python_outcome}",
        "",
        f"{'':22}{f'fetcher (port {f.src_port})':{WIDTH}}python ssl (port {p.src_port})",
    ]
    for name, a, b in [
        ("JA4", tf.ja4(f), tf.ja4(p)),
        ("JA4_o (wire order)", tf.ja4_o(f), tf.ja4_o(p)),
        ("TLS version", f"0x{f.tls_version:04x}", f"0x{p.tls_version:04x}"),
        ("SNI", f.server_name or "(none: IP address)", p.server_name or "(none: IP address)"),
        (
            "GREASE in",
            ",".join(k for k, v in f.grease.items() if v) or "nowhere",
            ",".join(k for k, v in p.grease.items() if v) or "nowhere",
        ),
        ("counts (ciph/ext)", _counts(f), _counts(p)),
    ]:
        out.append(f"{name:22}{a:{WIDTH}}{b}".rstrip())
    for title, what in [
        ("cipher suites, in order", "ciphers"),
        ("extensions, sorted (no GREASE)", "extensions"),
        ("supported groups", "groups"),
        ("signature algorithms", "signatures"),
        ("supported versions", "versions"),
        ("ALPN", "alpn"),
    ]:
        out += ["", title]
        left, right = _column(f, what), _column(p, what)
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            out.append(f"  {i + 1:2}  {a:{WIDTH}}{b}".rstrip())
    out += ["", f"JA4_r fetcher: {tf.ja4_r(f)}", f"JA4_r python : {tf.ja4_r(p)}", ""]
    if len(result.fetcher) > 1:
        out.append(f"the fetcher opened {len(result.fetcher)} connections; all were checked")
    if result.reference is not None:
        out.append(f"reference: {result.reference.name}, JA4 {result.reference.ja4} to a domain")
        out.append(f"           ({result.reference.source})")
    if result.ok:
        out.append(f"OK: the fetcher's ClientHello is {result.reference.name}'s")  # type: ignore[union-attr]
    else:
        out.append("NOT CHROME:")
        out += [f"  - {problem}" for problem in result.problems]
    return "\n".join(out)


def _counts(h: tf.ClientHello) -> str:
    return f"{len(h.ciphers_clean)} / {len(h.extensions_clean)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.client_hello", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--keep", type=Path, help="keep the capture and logs in this directory")
    parser.add_argument(
        "--user-agent",
        default=CHROME_152_UA,
        help="the account's User-Agent; the client picks its Chrome target from it",
    )
    args = parser.parse_args(argv)
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark is not installed (apt-get install tshark)", file=sys.stderr)
        return 2
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir_cm: contextlib.AbstractContextManager[str] = contextlib.nullcontext(str(args.keep))
    else:
        workdir_cm = tempfile.TemporaryDirectory(prefix="client_hello_")
    with workdir_cm as workdir:
        os.chmod(workdir, 0o755)  # tshark's dumpcap may drop to another user to write
        try:
            result = asyncio.run(capture(Path(workdir), tshark, args.user_agent))
        except (CaptureError, subprocess.CalledProcessError) as exc:
            print(f"capture failed: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(orjson.dumps(result.as_json()).decode())
    else:
        print(render(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
