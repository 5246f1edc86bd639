"""The console script: every command of DESIGN.md is listed."""

from __future__ import annotations

import importlib
import subprocess

from services.cli import COMMANDS
from tests.infra import VENV_BIN

DESIGN_COMMANDS = {
    "migrate",
    "admin",
    "scheduler",
    "fetcher",
    "writer",
    "simulator",
    "up",
    "demo",
    "sync",
}


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "sync-airbnb"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in DESIGN_COMMANDS | {"rotate-keys"}:
        assert f"    {name}" in out, name


def test_every_command_resolves_to_a_callable_main() -> None:
    for name, cmd in COMMANDS.items():
        module_name, func_name = cmd.target.split(":")
        assert callable(getattr(importlib.import_module(module_name), func_name)), name


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "sync-airbnb"), "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
