"""The import rules of docs/code-map.md, read off every module with ``ast`` (no import runs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The Airbnb modules that must stay pure: no network, database or NATS library.
IO_LIBRARIES = frozenset({"aiohttp", "curl_cffi", "nats", "asyncpg", "psycopg", "socket", "ssl"})
PURE_AIRBNB = ("browser", "cookie_jar", "cookies", "errors", "flatteners", "http_policy",
               "operations", "payloads", "pivots", "tls_fingerprint", "windows")  # fmt: skip
# The HTTP client and the curl transport under it: the two that talk to Airbnb.
AIRBNB_IO = ("client", "transport")
# The launcher serves the simulator in process for the demo (docs/code-map.md).
ALLOWED_SERVICE_IMPORTS = {("launcher", "simulator")}
SUBJECT = re.compile(r"""["']airbnb\.(accounts|sync|jobs|deadletter)\b""")


def modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_shared_imports_no_service() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in imported(p) if n.split(".")[0] == "services")
        for p in modules("shared")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_service_imports_another() -> None:
    found = []
    for service_dir in sorted(d for d in (ROOT / "services").iterdir() if d.is_dir()):
        me = service_dir.name
        if me == "__pycache__":
            continue
        for path in modules(f"services/{me}"):
            for name in imported(path):
                parts = name.split(".")
                other = parts[1] if parts[0] == "services" and len(parts) > 1 else me
                if other != me and (me, other) not in ALLOWED_SERVICE_IMPORTS:
                    found.append((str(path.relative_to(ROOT)), name))
    assert not found


@pytest.mark.parametrize("module", PURE_AIRBNB)
def test_pure_airbnb_modules_do_no_io(module: str) -> None:
    path = ROOT / "shared" / "airbnb" / f"{module}.py"
    io = {n for n in imported(path) if n.split(".")[0] in IO_LIBRARIES}
    assert not io, f"shared/airbnb/{module}.py imports {sorted(io)}"


def test_every_airbnb_module_is_classified() -> None:
    # A new module must be put in its layer here (pure, or the client's I/O) on purpose.
    present = {p.stem for p in modules("shared/airbnb")} - {"__init__"}
    assert present == {*PURE_AIRBNB, *AIRBNB_IO}


def test_only_topology_spells_a_subject() -> None:
    found = []
    for path in [*modules("shared"), *modules("services")]:
        if path.name == "topology.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and SUBJECT.search(repr(node.value))
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found


# --- one of each mechanism (issue 12) ---------------------------------------------------------


def calls_to(tree: ast.AST, *names: str) -> list[int]:
    """Lines that call ``something.name(...)`` or ``name(...)`` for one of ``names``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if called in names:
                lines.append(node.lineno)
    return lines


def production_modules() -> list[Path]:
    return [*modules("shared"), *modules("services")]


def test_only_the_shared_worker_pulls_from_jetstream() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in production_modules()
        if path != ROOT / "shared" / "jetstream.py"
        for line in calls_to(ast.parse(path.read_text()), "pull_subscribe", "pull_subscribe_bind")
    ]
    assert not found, "a JetStream fetch loop outside shared/jetstream.py's PullWorker"


def test_a_module_that_talks_to_nats_writes_no_json_of_its_own() -> None:
    # What goes on NATS is encoded by shared.messages (encode, to_json) and nowhere else.
    found = []
    for path in production_modules():
        if path == ROOT / "shared" / "messages.py":
            continue
        if not any(n.split(".")[0] == "nats" for n in imported(path)):
            continue
        tree = ast.parse(path.read_text())
        found += [f"{path.relative_to(ROOT)}:{n}" for n in calls_to(tree, "dumps")]
    assert not found


def test_no_backoff_arithmetic_outside_the_one_curve() -> None:
    # A doubling (2 ** n, x *= 2) belongs in shared/backoff.py; every retry walks its curve.
    found = []
    for path in production_modules():
        if path == ROOT / "shared" / "backoff.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            doubling = (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Pow)
                and isinstance(node.left, ast.Constant)
                and node.left.value == 2
            ) or (
                isinstance(node, ast.AugAssign)
                and isinstance(node.op, ast.Mult)
                and isinstance(node.value, ast.Constant)
                and node.value.value == 2
            )
            if doubling:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found
