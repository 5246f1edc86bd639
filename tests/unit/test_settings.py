"""Settings validation: the pure checks. The one-line exit of a real process is in
tests/system/test_settings.py."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from services.admin.settings import AdminSettings
from shared.settings import load_settings, validate_database_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/db",
        "postgres://u:p@db.example/x",
        "postgresql://postgres:@/postgres?host=/tmp/sock",
    ],
)
def test_good_database_urls(url: str) -> None:
    assert validate_database_url(url) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://root@localhost/db", "postgresql://"),
        ("not a url", "postgresql://"),
        ("postgresql://u@host:notaport/db", "invalid port"),
        ("postgresql:///db", "names no host"),
    ],
)
def test_bad_database_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_database_url(url)


def _admin_env(**overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x",
        "NATS_URL": "nats://127.0.0.1:4222",
        "SECRET_KEYS": Fernet.generate_key().decode(),
        "ADMIN_API_KEYS": "a-long-enough-key",
    }
    env.update(overrides)
    return env


def test_load_settings_exits_2_naming_each_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, v in _admin_env(SECRET_KEYS="nope", NATS_URL="http://x").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(AdminSettings, "admin")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "SECRET_KEYS key #1 is not a Fernet key" in err
    assert "NATS_URL must be nats://" in err
    assert "nope" not in err  # values (possibly secrets) are never echoed


def test_secret_keys_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [Fernet.generate_key().decode() for _ in range(2)]
    for k, v in _admin_env(SECRET_KEYS=f" {keys[0]} , {keys[1]} ").items():
        monkeypatch.setenv(k, v)
    assert load_settings(AdminSettings, "admin").secret_keys == keys


def test_airbnb_pacing_jitter_default_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.settings import AirbnbSettings

    monkeypatch.delenv("AIRBNB_PACING_JITTER", raising=False)
    assert AirbnbSettings().airbnb_pacing_jitter == 0.1
    monkeypatch.setenv("AIRBNB_PACING_JITTER", "0.25")
    assert AirbnbSettings().airbnb_pacing_jitter == 0.25
    for bad in ("-0.1", "1.5"):
        monkeypatch.setenv("AIRBNB_PACING_JITTER", bad)
        with pytest.raises(ValidationError):
            AirbnbSettings()


def test_database_timeouts_default_within_10_s_and_named_when_bad(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared import db
    from shared.settings import DatabaseSettings

    for k, v in _admin_env().items():
        monkeypatch.setenv(k, v)
    for name in ("DB_STATEMENT_TIMEOUT_S", "DB_ACQUIRE_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(DatabaseSettings, "admin")
    assert 0 < settings.db_statement_timeout_s <= 10
    assert 0 < settings.db_acquire_timeout_s <= 10
    # a pool made without settings (a benchmark, a script) is bounded alike
    assert (
        settings.db_statement_timeout_s,
        settings.db_acquire_timeout_s,
    ) == (db.STATEMENT_TIMEOUT_S, db.ACQUIRE_TIMEOUT_S)
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_S", "0")
    monkeypatch.setenv("DB_ACQUIRE_TIMEOUT_S", "soon")
    with pytest.raises(SystemExit):
        load_settings(DatabaseSettings, "admin")
    err = capsys.readouterr().err
    assert "DB_STATEMENT_TIMEOUT_S" in err and "DB_ACQUIRE_TIMEOUT_S" in err
