"""The console script: every command of DESIGN.md is listed."""

from __future__ import annotations

import subprocess

import pytest

from services.cli import COMMANDS, EXIT_NOT_BUILT, Command, main
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


def test_every_command_is_built() -> None:
    assert [name for name, cmd in COMMANDS.items() if cmd.target is None] == []
    out = subprocess.run(
        [str(VENV_BIN / "sync-airbnb"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "not built yet" not in out


def test_a_command_not_built_yet_says_so_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The rule stays for the next command added before its implementation.
    monkeypatch.setitem(COMMANDS, "later", Command("a command to come", None))
    assert main(["later"]) == EXIT_NOT_BUILT
    assert "sync-airbnb later: not built yet" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "sync-airbnb"), "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
