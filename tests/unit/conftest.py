"""The unit tests: pure functions and files, no process, no NATS, no PostgreSQL, no socket.

Held here, not only said: a unit test that binds or connects a socket or starts a process
fails, naming what it did. Such a test belongs in tests/system/, with the real nats-server,
PostgreSQL and ``sync-airbnb`` processes of tests/conftest.py.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from typing import Any

import pytest


def _refuse(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit test {what}: it belongs in tests/system/")

    return refuse


@pytest.fixture(autouse=True)
def _no_socket_and_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "bind", _refuse("binds a socket"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("connects a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("connects a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("starts a process"))
