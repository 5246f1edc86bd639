"""The TimescaleDB rule of ``sync-airbnb migrate`` (TIMESCALEDB=auto|require|off) and the
hypertable SQL, as pure functions. The migrate process against real servers, without
TimescaleDB and with it installed but not preloaded, is tests/system/test_migrations.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.metric_tables import TABLE_NAMES
from shared.migrate import (
    COMPRESSION,
    TimescaleMode,
    TimescaleOptions,
    TimescaleProbe,
    decide_timescaledb,
    hypertable_sql,
    preload_names,
    render,
    uncompress_sql,
)
from shared.settings import MigrateSettings, load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "timescaledb.md"
ABSENT = TimescaleProbe(available=None, installed=None, preloaded=False)
NOT_PRELOADED = TimescaleProbe(available="2.28.3", installed=None, preloaded=False)
USABLE = TimescaleProbe(available="2.28.3", installed=None, preloaded=True)
CREATED = TimescaleProbe(available="2.28.3", installed="2.28.3", preloaded=True)


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_usable_means_used(mode: TimescaleMode) -> None:
    assert decide_timescaledb(mode, USABLE).use
    assert decide_timescaledb(mode, CREATED).use


def test_off_never_uses_it() -> None:
    for probe in (ABSENT, NOT_PRELOADED, USABLE, CREATED):
        assert not decide_timescaledb("off", probe).use


def test_absent_says_so_and_how_to_install_it() -> None:
    decision = decide_timescaledb("auto", ABSENT)
    assert not decision.use and not decision.warn
    assert "not available" in decision.why_not
    assert "install TimescaleDB" in decision.remedy
    assert "shared_preload_libraries = 'timescaledb'" in decision.remedy


def test_not_preloaded_says_so_and_how_to_preload_it() -> None:
    decision = decide_timescaledb("auto", NOT_PRELOADED)
    assert not decision.use and decision.warn
    assert "not preloaded" in decision.why_not
    assert "install" not in decision.remedy
    assert "shared_preload_libraries = 'timescaledb'" in decision.remedy
    assert "restart PostgreSQL" in decision.remedy


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ("", set()),
        ("timescaledb", {"timescaledb"}),
        ("pg_stat_statements, timescaledb", {"pg_stat_statements", "timescaledb"}),
        ('"$libdir/timescaledb.so",auto_explain', {"timescaledb", "auto_explain"}),
        ("timescaledb_toolkit", {"timescaledb_toolkit"}),
    ],
)
def test_preload_names(setting: str, names: set[str]) -> None:
    assert preload_names(setting) == names


def test_hypertables_get_no_default_index_and_drop_one_made_before() -> None:
    for table in TABLE_NAMES:
        sql = render(hypertable_sql(table, TimescaleOptions()))
        assert "create_default_indexes => FALSE" in sql, table
        assert f"DROP INDEX IF EXISTS airbnb.{table}_time_idx;" in sql, table
        assert f"add_retention_policy('airbnb.{table}', '5 years'::interval" in sql, table


def test_chart_summary_is_left_uncompressed_the_others_are_not() -> None:
    assert set(COMPRESSION) == set(TABLE_NAMES)
    assert COMPRESSION["chart_summary"] is None
    summary = render(hypertable_sql("chart_summary", TimescaleOptions()))
    assert "compress" not in summary
    for table in ("chart_query", "list_of_metrics"):
        sql = render(hypertable_sql(table, TimescaleOptions("3 days", "2 years")))
        assert "timescaledb.compress_segmentby = 'account_id, airbnb_listing_id'" in sql
        assert f"add_compression_policy('airbnb.{table}', '3 days'::interval" in sql


def test_parameters_are_quoted_as_literals_in_the_rendering() -> None:
    sql = render(hypertable_sql("chart_query", TimescaleOptions("7 days", "5 years'; --")))
    assert "'5 years''; --'::interval" in sql


def test_the_docs_show_the_sql_the_migrations_run() -> None:
    doc = DOC.read_text()
    for table in TABLE_NAMES:
        assert render(hypertable_sql(table, TimescaleOptions())) in doc, table
    assert render(uncompress_sql("chart_summary")) in doc


def test_timescaledb_setting_default_and_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")
    monkeypatch.delenv("TIMESCALEDB", raising=False)
    assert load_settings(MigrateSettings, "migrate").timescaledb == "auto"
    monkeypatch.setenv("TIMESCALEDB", "require")
    assert load_settings(MigrateSettings, "migrate").timescaledb == "require"
    monkeypatch.setenv("TIMESCALEDB", "maybe")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(MigrateSettings, "migrate")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("sync-airbnb migrate: configuration error: TIMESCALEDB ")
    assert "'auto', 'require' or 'off'" in err
