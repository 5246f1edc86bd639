"""The console script: every command of DESIGN.md is listed."""

from __future__ import annotations

import subprocess

from services.cli import COMMANDS, EXIT_NOT_BUILT
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


def test_commands_not_built_yet_say_so_and_exit_non_zero() -> None:
    not_built = [name for name, cmd in COMMANDS.items() if cmd.target is None]
    for name in not_built:
        args = [name, "123"] if name == "sync" else [name]
        result = subprocess.run(
            [str(VENV_BIN / "sync-airbnb"), *args], capture_output=True, text=True
        )
        assert result.returncode == EXIT_NOT_BUILT, name
        assert "not built yet" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "sync-airbnb"), "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
