"""JETSTREAM_REPLICAS: the setting, and the rule provisioning applies to a stream that
exists (raise, never lower). The cluster itself is tests/system/test_nats_cluster.py."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from services.fetcher.settings import FetcherSettings
from shared.settings import load_settings, nats_servers
from shared.topology import replicas_kept_warning, replicas_to_apply


@pytest.mark.parametrize(
    ("setting", "current", "applied"),
    [
        (1, None, 1),  # JetStream left it unset: one replica
        (1, 0, 1),
        (3, None, 3),  # raised
        (3, 1, 3),
        (3, 3, 3),
        (5, 3, 5),
        (1, 3, 3),  # a stale or older service: kept, not lowered
        (3, 5, 5),
    ],
)
def test_provisioning_raises_replicas_and_never_lowers_them(
    setting: int, current: int | None, applied: int
) -> None:
    assert replicas_to_apply(setting, current) == applied


def test_a_lower_setting_is_kept_with_a_warning_naming_the_setting_and_the_replicas() -> None:
    warning = replicas_kept_warning("AIRBNB_SYNC_RESULTS", 1, 3)
    assert warning is not None
    assert "JETSTREAM_REPLICAS is 1" in warning
    assert "AIRBNB_SYNC_RESULTS has 3 replicas" in warning
    assert replicas_kept_warning("AIRBNB_SYNC_RESULTS", 3, 1) is None
    assert replicas_kept_warning("AIRBNB_SYNC_RESULTS", 3, 3) is None
    assert replicas_kept_warning("AIRBNB_SYNC_RESULTS", 1, None) is None


def _fetcher_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("SECRET_KEYS", Fernet.generate_key().decode())
    monkeypatch.delenv("JETSTREAM_REPLICAS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_jetstream_replicas_defaults_to_one_and_reads_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fetcher_env(monkeypatch)
    assert load_settings(FetcherSettings, "fetcher").jetstream_replicas == 1
    _fetcher_env(monkeypatch, JETSTREAM_REPLICAS="3")
    assert load_settings(FetcherSettings, "fetcher").jetstream_replicas == 3


@pytest.mark.parametrize("bad", ["0", "6", "-1", "three", "2.5"])
def test_a_bad_jetstream_replicas_ends_the_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    _fetcher_env(monkeypatch, JETSTREAM_REPLICAS=bad)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(FetcherSettings, "fetcher")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sync-airbnb fetcher: configuration error: JETSTREAM_REPLICAS ")
    assert err.count("\n") == 1


def test_nats_url_lists_a_cluster_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers(" nats://a:4222, nats://b:4222 ,nats://c:4222") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    _fetcher_env(monkeypatch, NATS_URL="nats://n1:4222,nats://n2:4222,nats://n3:4222")
    settings = load_settings(FetcherSettings, "fetcher")
    assert settings.nats_servers == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
