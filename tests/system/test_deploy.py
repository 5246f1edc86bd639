"""The deployment files against the tools that validate them, each run as a process:
compose.yaml against the Compose Specification (``check-jsonschema --builtin-schema
vendor.compose-spec``), the manifests with kubeconform and kubectl when present (skipped
otherwise). The static checks of the same files are in tests/unit/test_deploy.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit import test_deploy as static
from tests.unit.test_deploy import K8S, ROOT

kustomization = static.kustomization  # the fixture, read once per module here too


def check_jsonschema() -> str:
    exe = Path(sys.executable).with_name("check-jsonschema")
    if exe.exists():
        return str(exe)
    found = shutil.which("check-jsonschema")
    assert found, "check-jsonschema is not installed: pip install -e '.[test]'"
    return found


def test_compose_validates_against_the_compose_specification() -> None:
    result = subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("kubeconform"), reason="kubeconform is not installed")
def test_manifests_validate_with_kubeconform(kustomization: dict[str, Any]) -> None:
    files = [str(K8S / r) for r in kustomization["resources"]]
    result = subprocess.run(
        ["kubeconform", "-strict", "-summary", *files], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kustomization_builds_with_kubectl() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert "Secret" not in {doc["kind"] for doc in docs}
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "sync-airbnb", doc["metadata"]["name"]
        if doc["kind"] in {"Deployment", "Job"}:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["image"].endswith("/sync-airbnb:0.1.0"), c["image"]
