"""The Grafana files as provisioning reads them (deploy/grafana): the two datasources and
the dashboard provider, each dashboard's structure, that every PromQL panel reads only
metrics the services export, that the Kubernetes ConfigMaps are the same files, and
Grafana's macro expansion as tests/grafana.py does it. Every SQL query running against a
database with synced data is tests/system/test_grafana_dashboards.py."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers every metric)
from tests.grafana import (
    DASHBOARDS,
    GRAFANA,
    POSTGRES_TYPE,
    PROMETHEUS_TYPE,
    PROVISIONING,
    ROOT,
    MacroError,
    Variable,
    expand_macros,
    expand_sql,
    interpolate_variables,
    load_dashboards,
    panels,
    promql_exprs,
    rfc3339,
    sql_targets,
    variables,
)

MONITORING = ROOT / "deploy" / "k8s" / "monitoring"
# Panel types of Grafana's core that these dashboards may use.
PANEL_TYPES = {"row", "timeseries", "table", "stat", "barchart", "bargauge", "piechart", "text"}
VARIABLE_TYPES = {"query", "custom", "constant", "interval", "textbox", "datasource"}
# Built-in variables and macros that a query may name besides the dashboard's own variables.
BUILTINS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s"}
MACROS = {
    "__time", "__timeEpoch", "__timeFilter", "__timeFrom", "__timeTo", "__timeGroup",
    "__timeGroupAlias", "__unixEpochFilter", "__unixEpochFrom", "__unixEpochTo",
}  # fmt: skip
PROMQL_WORDS = {
    # aggregations, their clauses and the binary operators spelled as words
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset",
}  # fmt: skip
DASHBOARD_NAMES = ("insights.json", "pipeline-health.json")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


@pytest.fixture(scope="module")
def datasources() -> list[dict[str, Any]]:
    config = load_yaml(PROVISIONING / "datasources" / "datasources.yml")
    assert config["apiVersion"] == 1
    return list(config["datasources"])


@pytest.fixture(scope="module")
def compose_grafana() -> dict[str, Any]:
    return load_yaml(ROOT / "compose.yaml")["services"]["grafana"]


# --- provisioning -----------------------------------------------------------------------


def test_the_two_datasources_are_provisioned_at_fixed_uids(
    datasources: list[dict[str, Any]],
) -> None:
    by_type = {ds["type"]: ds for ds in datasources}
    assert set(by_type) == {POSTGRES_TYPE, PROMETHEUS_TYPE}
    uids = [ds["uid"] for ds in datasources]
    assert len(set(uids)) == len(uids)
    for ds in datasources:
        # Grafana refuses a uid over 40 characters or outside [A-Za-z0-9_-].
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", ds["uid"]), ds["uid"]
        assert ds["access"] == "proxy" and ds["name"], ds
    postgres = by_type[POSTGRES_TYPE]
    # TimescaleDB-capable, yet the dashboards use no macro the flag changes (below).
    assert postgres["jsonData"]["timescaledb"] is True
    assert [ds for ds in datasources if ds.get("isDefault")] == [by_type[PROMETHEUS_TYPE]]


def test_datasources_take_every_connection_detail_from_the_environment(
    datasources: list[dict[str, Any]], compose_grafana: dict[str, Any]
) -> None:
    postgres = next(ds for ds in datasources if ds["type"] == POSTGRES_TYPE)
    prometheus = next(ds for ds in datasources if ds["type"] == PROMETHEUS_TYPE)
    details = {
        "url": postgres["url"],
        "user": postgres["user"],
        "database": postgres["jsonData"]["database"],
        "sslmode": postgres["jsonData"]["sslmode"],
        "password": postgres["secureJsonData"]["password"],
        "prometheus": prometheus["url"],
    }
    names = set()
    for what, value in details.items():
        m = re.fullmatch(r"\$\{([A-Z][A-Z0-9_]*)\}", value)
        assert m, f"{what} is written in the file: {value!r}"
        assert not m[1].startswith("GF_"), "GF_* variables are Grafana's own settings"
        names.add(m[1])
    assert "password" not in postgres and "password" not in postgres["jsonData"]
    # Compose gives Grafana each of them; the password only by reference to .env.
    env = compose_grafana["environment"]
    assert names <= set(env), sorted(names - set(env))
    assert env["SYNC_AIRBNB_PG_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert env["SYNC_AIRBNB_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["SYNC_AIRBNB_PG_HOST"] == "timescaledb:5432"


def test_the_dashboard_provider_reads_the_folder_compose_mounts(
    compose_grafana: dict[str, Any],
) -> None:
    config = load_yaml(PROVISIONING / "dashboards" / "dashboards.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose_grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = compose_grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (DASHBOARDS / Path(home).name).is_file()


def test_compose_runs_a_pinned_grafana_under_the_observability_profile(
    compose_grafana: dict[str, Any],
) -> None:
    image = compose_grafana["image"]
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", image), image
    assert compose_grafana["profiles"] == ["observability"]
    assert compose_grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert compose_grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "/api/health" in " ".join(compose_grafana["healthcheck"]["test"])
    assert all(v.endswith(":ro") for v in compose_grafana["volumes"] if v.startswith("./"))


# --- dashboards -------------------------------------------------------------------------


def test_both_dashboards_are_there_with_unique_uids(dashboards: dict[str, Any]) -> None:
    assert sorted(dashboards) == sorted(DASHBOARD_NAMES)
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles)
    for d in dashboards.values():
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]), d["uid"]
        # Provisioned dashboards get their id from Grafana's database.
        assert d.get("id") is None
        assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
        assert d["time"]["from"].startswith("now-") and d["time"]["to"] == "now"
        assert isinstance(d["templating"]["list"], list)
        assert isinstance(d["panels"], list) and d["panels"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_every_panel_has_what_grafana_needs_to_draw_it(
    name: str, dashboards: dict[str, Any], datasources: list[dict[str, Any]]
) -> None:
    provisioned = {ds["uid"]: ds["type"] for ds in datasources}
    ids = []
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboards[name]):
        ids.append(panel["id"])
        assert isinstance(panel["id"], int)
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"], panel
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos)
        assert all(isinstance(pos[k], int) and pos[k] >= 0 for k in "hwxy"), pos
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] + pos["w"] <= 24, pos
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["datasource"]["uid"] in provisioned, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        refs = [t["refId"] for t in targets]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in targets:
            uid, kind = target["datasource"]["uid"], target["datasource"]["type"]
            assert provisioned.get(uid) == kind, (panel["title"], uid, kind)
            assert uid == panel["datasource"]["uid"], panel["title"]
            if kind == POSTGRES_TYPE:
                assert target["rawQuery"] is True and target["editorMode"] == "code"
                assert target["format"] in {"time_series", "table"}
                assert target["rawSql"].strip()
            else:
                assert target["expr"].strip()
    assert len(set(ids)) == len(ids), "panel ids repeat"


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_template_variables_are_well_formed(
    name: str, dashboards: dict[str, Any], datasources: list[dict[str, Any]]
) -> None:
    provisioned = {ds["uid"]: ds["type"] for ds in datasources}
    names = [v["name"] for v in variables(dashboards[name])]
    assert len(set(names)) == len(names)
    for i, var in enumerate(variables(dashboards[name])):
        assert re.fullmatch(r"[a-z][a-z0-9_]*", var["name"]), var["name"]
        assert var["type"] in VARIABLE_TYPES
        if var["type"] == "query":
            assert provisioned[var["datasource"]["uid"]] == var["datasource"]["type"]
            assert var["datasource"]["type"] == POSTGRES_TYPE
            assert var["query"].strip() and var["refresh"] in (1, 2)
            # A variable's query may name only the variables before it (Grafana resolves
            # them in order).
            used = set(re.findall(r"\$(\w+)", var["query"])) - MACROS - BUILTINS
            assert used <= set(names[:i]), (var["name"], used)
        if var["type"] == "custom":
            choices = var["query"].split(",")
            assert [o["value"] for o in var["options"]] == choices
            assert var["current"]["value"] in choices


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_sql_names_only_known_variables_and_never_time_group(
    name: str, dashboards: dict[str, Any]
) -> None:
    """$__timeGroup is what the datasource's timescaledb flag changes (to time_bucket, which
    plain PostgreSQL lacks); without it the flag cannot break a panel. Weeks come from
    date_trunc('week'), Monday-based as the read API's, where $__timeGroup's epoch-based
    '1w' would start them on Thursdays."""
    names = {v["name"] for v in variables(dashboards[name])}
    for target in sql_targets(name, dashboards[name]):
        used = set(re.findall(r"\$\{?(\w+)", target.raw_sql))
        assert used <= names | MACROS | BUILTINS, (target.panel, used - names)
        assert "$__timeGroup" not in target.raw_sql, target.panel
        assert "$__unixEpochGroup" not in target.raw_sql, target.panel
        if target.format == "time_series":
            assert re.search(r'AS "time"', target.raw_sql), target.panel


def test_the_insights_dashboard_picks_an_account_then_its_listing(
    dashboards: dict[str, Any],
) -> None:
    insights = dashboards["insights.json"]
    assert [v["name"] for v in variables(insights)][:2] == ["account", "listing"]
    sql = " ".join(t.raw_sql for t in sql_targets("insights.json", insights))
    for needed in ("p3_impressions_your_value", "p3_impressions_similar_value",
                   "conversion_rate_your_value", "conversion_rate_similar_value",
                   "'$account'", "'$listing'", "airbnb.chart_query_latest",
                   "airbnb.list_of_metrics_latest", "ORDER BY time DESC"):  # fmt: skip
        assert needed in sql, needed


def exported_metric_names() -> set[str]:
    """Every series name the services' registry can expose, children or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, grouping clauses, dashboard variables, function calls and keywords
    are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*\b(?!\s*\()", text))
    return words - PROMQL_WORDS


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, instance) (rate(a_bucket{status!~"2..",'
        'x="sum(b)"}[$__rate_interval]))) / on (instance) group_left max(c) or vector(0)'
    )
    assert metric_names(expr) == {"a_bucket", "c"}


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_every_promql_panel_reads_only_metrics_the_services_export(
    name: str, dashboards: dict[str, Any]
) -> None:
    exported = exported_metric_names()
    for title, expr in promql_exprs(dashboards[name]):
        found = metric_names(expr)
        assert found, (title, expr)
        assert found <= exported, (title, sorted(found - exported))


def test_pipeline_health_shows_what_the_issue_asks_for(dashboards: dict[str, Any]) -> None:
    dashboard = dashboards["pipeline-health.json"]
    read = set().union(*(metric_names(e) for _, e in promql_exprs(dashboard)))
    for metric in (
        "sync_airbnb_airbnb_requests_total",
        "sync_airbnb_airbnb_retries_total",
        "sync_airbnb_airbnb_rate_limited_total",
        "sync_airbnb_rows_written_total",
        "sync_airbnb_jobs_total",
        "sync_airbnb_writer_pending_messages",
    ):
        assert metric in read, metric
    assert any("airbnb.sync_jobs" in t.raw_sql for t in sql_targets("p", dashboard))


# --- Kubernetes -------------------------------------------------------------------------


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_k8s", GRAFANA / "render_k8s.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configmaps_are_the_files_as_render_k8s_writes_them() -> None:
    for path, text in render_module().rendered().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run python deploy/grafana/render_k8s.py"
        )


def test_the_configmaps_carry_the_files_and_the_sidecar_labels() -> None:
    kustomization = load_yaml(MONITORING / "kustomization.yaml")
    wanted = {"datasources.yml": PROVISIONING / "datasources" / "datasources.yml"}
    wanted |= {p.name: p for p in DASHBOARDS.glob("*.json")}
    found = {}
    for resource in kustomization["resources"]:
        doc = load_yaml(MONITORING / resource)
        if doc["kind"] != "ConfigMap":
            continue
        ((key, text),) = doc["data"].items()
        label = "grafana_datasource" if key == "datasources.yml" else "grafana_dashboard"
        assert doc["metadata"]["labels"][label] == "1", resource
        found[key] = text
    assert set(found) == set(wanted)
    for key, text in found.items():
        assert text == wanted[key].read_text(), key


# --- macro expansion (tests/grafana.py) ---------------------------------------------------

FROM = dt.datetime(2017, 7, 18, 11, 15, 52, tzinfo=dt.UTC)
TO = dt.datetime(2017, 7, 18, 11, 25, 52, 500_000, tzinfo=dt.UTC)


def test_macros_expand_as_grafanas_postgresql_datasource_does() -> None:
    def expand(sql: str, timescaledb: bool = False) -> str:
        return expand_macros(sql, FROM, TO, timescaledb=timescaledb)

    assert rfc3339(FROM) == "2017-07-18T11:15:52Z" and rfc3339(TO) == "2017-07-18T11:25:52.5Z"
    assert expand("WHERE $__timeFilter(t)") == (
        "WHERE t BETWEEN '2017-07-18T11:15:52Z' AND '2017-07-18T11:25:52.5Z'"
    )
    assert expand("$__timeFilter(d::timestamp AT TIME ZONE 'UTC')") == (
        "d::timestamp AT TIME ZONE 'UTC' BETWEEN '2017-07-18T11:15:52Z' "
        "AND '2017-07-18T11:25:52.5Z'"
    )
    assert expand("$__timeFrom() $__timeTo()") == (
        "'2017-07-18T11:15:52Z' '2017-07-18T11:25:52.5Z'"
    )
    assert expand("SELECT $__timeGroup(t, '5m') AS time") == (
        "SELECT floor(extract(epoch from t)/300)*300 AS time"
    )
    assert expand("SELECT $__timeGroupAlias(t,1d)") == (
        'SELECT floor(extract(epoch from t)/86400)*86400 AS "time"'
    )
    # Grafana's old form: a comma right after the macro adds the alias.
    assert expand("SELECT $__timeGroup(t,1h), v") == (
        'SELECT floor(extract(epoch from t)/3600)*3600 AS "time", v'
    )
    assert expand("$__timeGroup(t,'1d')", timescaledb=True) == "time_bucket('86400.000s',t)"
    assert expand("$__unixEpochFilter(e)") == "e >= 1500376552 AND e <= 1500377152"
    assert expand("$__unixEpochFrom() $__unixEpochTo()") == "1500376552 1500377152"
    assert expand("$__time(t), $__timeEpoch(t)") == 't AS "time", extract(epoch from t) as "time"'
    with pytest.raises(MacroError):
        expand("$__nosuchmacro(t)")
    with pytest.raises(MacroError):
        expand("$__timeGroup(t)")


def test_variables_interpolate_as_for_a_sql_datasource() -> None:
    values = {
        "one": Variable("O'Brien"),
        "many": Variable(["a", "b'c"], multi=True),
        "picked": Variable("x", multi=True),
    }
    assert interpolate_variables("'$one'", values) == "'O''Brien'"
    assert interpolate_variables("IN ($many)", values) == "IN ('a','b''c')"
    assert interpolate_variables("IN (${picked})", values) == "IN ('x')"
    assert interpolate_variables("[[one]] $other $__timeFilter(t)", values) == (
        "O''Brien $other $__timeFilter(t)"
    )
    assert expand_sql("'$one' AND $__timeFrom()", FROM, TO, values) == (
        "'O''Brien' AND '2017-07-18T11:15:52Z'"
    )
