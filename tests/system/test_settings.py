"""Settings validation as a real process sees it: a bad setting ends it with one clear line
and exit code 2. The pure checks are in tests/unit/test_settings.py."""

from __future__ import annotations

import pytest

from tests.infra import ServiceLauncher
from tests.unit.test_settings import _admin_env


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"DATABASE_URL": "postgresql://u@h:99999/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:///tmp/x.db"}, "DATABASE_URL"),
        ({"SECRET_KEYS": ""}, "SECRET_KEYS"),
        ({"SECRET_KEYS": " , "}, "SECRET_KEYS"),
    ],
)
def test_admin_process_ends_with_one_clear_line_and_exit_code_2(
    bare_launcher: ServiceLauncher, overrides: dict[str, str], variable: str
) -> None:
    result = bare_launcher.run(["admin"], env=_admin_env(**overrides), timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sync-airbnb admin: configuration error: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
