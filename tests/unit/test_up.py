"""``sync-airbnb up``: the supervisor's pure rules and the state directory.

The supervisor with real processes, and ``up`` as a real process tree on embedded
PostgreSQL and NATS, are in tests/system/test_up.py."""

from __future__ import annotations

import stat
from pathlib import Path

from services.launcher.settings import default_state_dir
from services.launcher.state import (
    StateDir,
    load_or_create_secrets,
    parse_env_file,
    resolve_secrets,
)
from services.launcher.supervisor import exit_action, failures_in_a_row, restart_delay


def test_restart_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run() -> None:
    delays = [restart_delay(n, base_s=1, cap_s=30) for n in range(1, 8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert failures_in_a_row(5, ran_for_s=3, healthy_after_s=60) == 6
    assert failures_in_a_row(5, ran_for_s=61, healthy_after_s=60) == 1


def test_exit_actions() -> None:
    assert exit_action(1, stopping=False, restart=True) == "restart"
    assert exit_action(-9, stopping=False, restart=True) == "restart"
    assert exit_action(0, stopping=False, restart=True) == "restart"  # nobody asked it to stop
    assert exit_action(2, stopping=False, restart=True) == "fatal"  # a configuration error
    assert exit_action(1, stopping=True, restart=True) == "done"
    assert exit_action(1, stopping=False, restart=False) == "done"  # migrate: its own result


def test_state_dir_defaults_to_xdg_data_home() -> None:
    assert default_state_dir({"XDG_DATA_HOME": "/x/data"}) == Path("/x/data/sync-airbnb")
    assert default_state_dir({}) == Path.home() / ".local" / "share" / "sync-airbnb"


def test_secrets_come_from_the_environment_then_the_file_then_are_generated() -> None:
    values, file_values, generated = resolve_secrets({"SECRET_KEYS": "from-env"}, {})
    assert values["SECRET_KEYS"] == "from-env"
    assert "SECRET_KEYS" not in file_values
    assert generated == ["ADMIN_API_KEYS"]
    assert values["ADMIN_API_KEYS"] == file_values["ADMIN_API_KEYS"]

    stored = {"SECRET_KEYS": "kept-1", "ADMIN_API_KEYS": "kept-2"}
    values, _, generated = resolve_secrets({}, stored)
    assert values == stored
    assert generated == []


def test_secrets_file_is_private_and_kept(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.prepare()
    first = load_or_create_secrets(state, {})
    assert set(first.generated) == {"SECRET_KEYS", "ADMIN_API_KEYS"}
    assert stat.S_IMODE(state.secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o700
    again = load_or_create_secrets(state, {})
    assert again.generated == ()
    assert again.values == first.values
    assert parse_env_file(state.secrets_file.read_text()) == first.values
