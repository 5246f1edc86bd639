"""Writes the Grafana ConfigMaps of deploy/k8s/monitoring from the files of deploy/grafana:
one ConfigMap per dashboard (label grafana_dashboard: "1") and one for the datasources
(label grafana_datasource: "1"), the labels Grafana's sidecar (the grafana and
kube-prometheus-stack charts) looks for. Each ConfigMap's data is its file's text, byte for
byte, so the two cannot drift: tests/unit/test_grafana_dashboards.py fails when a ConfigMap
is not what this script writes. After editing a dashboard or the datasources, run

    python deploy/grafana/render_k8s.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
MONITORING = HERE.parent / "k8s" / "monitoring"
DATASOURCES = HERE / "provisioning" / "datasources" / "datasources.yml"
DASHBOARDS = HERE / "dashboards"
FOLDER = "sync-airbnb"

HEADER = """\
# Generated from {source}
# by deploy/grafana/render_k8s.py: edit that file, then run the script
# (tests/unit/test_grafana_dashboards.py holds the two equal).
"""


def configmap(name: str, label: str, key: str, text: str, annotations: dict[str, str]) -> str:
    lines = [
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        f"  name: {name}",
        "  labels:",
        "    app.kubernetes.io/part-of: sync-airbnb",
        f'    {label}: "1"',
    ]
    if annotations:
        lines.append("  annotations:")
        lines += [f"    {k}: {v}" for k, v in annotations.items()]
    # A literal block keeps the text exactly (one final newline, which every file has).
    lines += ["data:", f"  {key}: |"]
    lines += [f"    {line}" if line else "" for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def rendered() -> dict[Path, str]:
    """Each ConfigMap file of deploy/k8s/monitoring and its text."""
    out: dict[Path, str] = {}
    source = DATASOURCES.relative_to(HERE.parent.parent)
    out[MONITORING / "grafana-datasources.yaml"] = HEADER.format(source=source) + configmap(
        "sync-airbnb-grafana-datasources",
        "grafana_datasource",
        DATASOURCES.name,
        DATASOURCES.read_text(),
        {},
    )
    for path in sorted(DASHBOARDS.glob("*.json")):
        source = path.relative_to(HERE.parent.parent)
        out[MONITORING / f"grafana-dashboard-{path.stem}.yaml"] = HEADER.format(
            source=source
        ) + configmap(
            f"sync-airbnb-grafana-{path.stem}",
            "grafana_dashboard",
            path.name,
            path.read_text(),
            # The sidecar files a dashboard in this folder where folderAnnotation is set to it.
            {"grafana_folder": FOLDER},
        )
    return out


def main() -> None:
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
