"""The alert rules as files: every rule has a runbook line and a promtool test case that
fires it, and the Kubernetes PrometheusRule carries the same groups as alerts.yml.
(tests/system/test_alert_rules.py runs promtool itself.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers every metric)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
K8S_RULE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def test_every_rule_is_an_alert_with_a_one_line_runbook() -> None:
    found = rules()
    assert found
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)), names
    for rule in found:
        runbook = rule["annotations"]["runbook"]
        assert runbook.strip() and "\n" not in runbook.strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]


def test_every_rule_has_a_test_case_that_fires_it() -> None:
    tests = load(PROMETHEUS / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules()} <= fired


def test_the_prometheus_rule_for_kubernetes_holds_the_same_groups() -> None:
    rule = load(K8S_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load(PROMETHEUS / "alerts.yml")["groups"]
    kustomization = load(K8S_RULE.parent / "kustomization.yaml")
    assert K8S_RULE.name in kustomization["resources"]


def test_prometheus_scrapes_every_service_and_loads_the_rules() -> None:
    config = load(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"admin", "scheduler", "fetcher", "writer"}
    compose = load(ROOT / "compose.yaml")["services"]["prometheus"]
    assert compose["profiles"] == ["observability"]
    mounted = {v.split(":")[0] for v in compose["volumes"]}
    assert {"./deploy/prometheus/prometheus.yml", "./deploy/prometheus/alerts.yml"} <= mounted


def test_every_metric_a_rule_reads_is_one_the_services_export() -> None:
    exported = set()
    for family in REGISTRY.collect():
        # A labelled metric with no child yet has no sample; a counter's family drops _total.
        exported |= {family.name, f"{family.name}_total"}
        exported |= {sample.name for sample in family.samples}
    for rule in rules():
        for name in re.findall(r"\bsync_airbnb_\w+", rule["expr"]):
            assert name in exported, (rule["alert"], name)
