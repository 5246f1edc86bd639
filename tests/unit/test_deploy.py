"""Static checks of the deployment files: compose.yaml, Dockerfile, .dockerignore,
.env.example and the kustomization in deploy/k8s.

No Docker engine or Kubernetes cluster is assumed, and no process is run: the files are
parsed with PyYAML and checked for structure and for what this project needs (probes,
resources, non-root, secrets by reference only). Validating them with check-jsonschema,
kubeconform and kubectl (processes) is tests/system/test_deploy.py.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.admin.rotate_keys import RotateKeysSettings
from services.admin.settings import AdminSettings
from services.cli import COMMANDS
from services.fetcher.settings import FetcherSettings
from services.scheduler.settings import SchedulerSettings
from services.writer.settings import WriterSettings
from shared import migrate
from shared.settings import BaseServiceSettings, MigrateSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "deploy" / "k8s"

SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "migrate": MigrateSettings,
    "admin": AdminSettings,
    "scheduler": SchedulerSettings,
    "fetcher": FetcherSettings,
    "writer": WriterSettings,
    "simulator": BaseServiceSettings,
}
LONG_RUNNING = ("admin", "scheduler", "fetcher", "writer")
NATS_NODES = ("nats-1", "nats-2", "nats-3")
# Settings whose values are secrets: never written into compose.yaml or a manifest.
SECRET_SETTINGS = {"DATABASE_URL", "SECRET_KEYS", "ADMIN_API_KEYS"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|CREDENTIAL|COOKIE", re.IGNORECASE)
# A Fernet key: 32 bytes, url-safe base64 with padding (44 characters).
FERNET_LIKE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=")


def aliases(settings_cls: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(name.upper())
    return names


def required_settings(settings_cls: type[BaseSettings]) -> set[str]:
    required = set()
    for field in settings_cls.model_fields.values():
        if field.is_required():
            alias = field.validation_alias
            assert isinstance(alias, str)
            required.add(alias)
    return required


ALL_SETTINGS = set().union(
    *(aliases(cls) for cls in (*SERVICE_SETTINGS.values(), RotateKeysSettings))
)


def is_valid_fernet_key(text: str) -> bool:
    try:
        Fernet(text.encode())
    except ValueError:
        return False
    return True


# --- compose.yaml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the sync-airbnb image (built from the Dockerfile)."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def test_compose_has_the_infrastructure_and_every_service(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == {
        "timescaledb",
        *NATS_NODES,
        "migrate",
        "admin",
        "scheduler",
        "fetcher",
        "writer",
        "simulator",
        "prometheus",
        "grafana",
    }
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert not services["timescaledb"]["image"].endswith(":latest")
    volumes = set()
    for node in NATS_NODES:
        nats = services[node]
        assert nats["image"].startswith("nats:")
        command = nats["command"]
        assert "-js" in command
        assert command[command.index("-sd") + 1] == "/data"
        assert command[command.index("-m") + 1] == "8222"
        assert any("8222/healthz" in part for part in nats["healthcheck"]["test"])
        (volume,) = [v.split(":")[0] for v in nats["volumes"] if v.split(":")[1] == "/data"]
        volumes.add(volume)
    assert len(volumes) == len(NATS_NODES)  # each node its own store


def test_compose_runs_nats_as_a_three_node_cluster_with_r3(
    services: dict[str, dict[str, Any]],
) -> None:
    routes = {f"nats://{node}:6222" for node in NATS_NODES}
    for node in NATS_NODES:
        command = services[node]["command"]
        # A stable server name per node (JetStream's peers), one cluster, routes to all.
        assert command[command.index("-n") + 1] == node
        assert command[command.index("--cluster_name") + 1] == "sync-airbnb"
        assert command[command.index("--cluster") + 1] == "nats://0.0.0.0:6222"
        assert set(command[command.index("--routes") + 1].split(",")) == routes
    for name in LONG_RUNNING:
        env = services[name]["environment"]
        servers = env["NATS_URL"].split(",")
        assert sorted(servers) == [f"nats://{node}:4222" for node in NATS_NODES], name
        assert env["JETSTREAM_REPLICAS"] == "3", name


def test_every_compose_service_has_a_healthcheck_or_is_one_shot(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        one_shot = svc.get("restart") == "no"
        assert one_shot or "healthcheck" in svc, f"{name}: no healthcheck and not one-shot"
        if one_shot:
            assert "healthcheck" not in svc, name


def test_migrate_runs_once_before_every_other_service(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate_svc = services["migrate"]
    assert migrate_svc["command"] == ["migrate"]
    assert migrate_svc["restart"] == "no"
    assert migrate_svc["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        for node in NATS_NODES:
            assert depends[node]["condition"] == "service_healthy", (name, node)


def test_compose_commands_are_cli_commands(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in app_services(services).items():
        assert svc["command"][0] == name
        assert COMMANDS[name].target is not None, name


def test_replicas_and_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert services["fetcher"]["deploy"]["replicas"] == 3
    assert services["writer"]["deploy"]["replicas"] == 2
    assert services["simulator"]["profiles"] == ["simulator"]
    assert services["prometheus"]["profiles"] == ["observability"]
    assert services["grafana"]["profiles"] == ["observability"]
    for name, svc in services.items():
        if name not in {"simulator", "prometheus", "grafana"}:
            assert "profiles" not in svc, name
        if "deploy" in svc and svc["deploy"].get("replicas", 1) > 1:
            # Replicas cannot share a fixed host port or a container name.
            assert "ports" not in svc and "container_name" not in svc, name


def test_health_listeners_are_fixed_and_probed(services: dict[str, dict[str, Any]]) -> None:
    for name in ("scheduler", "fetcher", "writer"):
        env = services[name]["environment"]
        assert env["HTTP_HOST"] == "0.0.0.0", name
        port = int(env["HTTP_PORT"])
        assert port > 0
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "python" in test and f"127.0.0.1:{port}/health/ready" in test, name
    admin = services["admin"]
    port = int(admin["environment"]["ADMIN_PORT"])
    assert f"{port}:{port}" in admin["ports"]
    assert f"127.0.0.1:{port}/health/ready" in " ".join(admin["healthcheck"]["test"])


def test_compose_inlines_no_secret(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            value = str(value)
            if key in SECRET_SETTINGS - {"DATABASE_URL"} or SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:?[?-][^}]*)?\}", value), (name, key)
            if key == "DATABASE_URL":
                # user:password before the host: the password only ever ${POSTGRES_PASSWORD}.
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                assert re.fullmatch(
                    r"(\$\{[A-Z_]+(:-[^}]*)?\}|\w+):\$\{POSTGRES_PASSWORD(:\?[^}]*)?\}", userinfo
                ), (name, value)
    for name, svc in app_services(services).items():
        assert svc["env_file"] == ".env", name
    assert not FERNET_LIKE.search(COMPOSE.read_text())


def test_simulator_use_is_documented() -> None:
    assert "AIRBNB_BASE_URL=http://simulator:8081" in COMPOSE.read_text()
    assert "AIRBNB_BASE_URL=http://simulator:8081" in ENV_EXAMPLE.read_text()


# --- .env.example -----------------------------------------------------------------------


def env_example_lines() -> dict[str, tuple[str, bool]]:
    """VAR -> (value, commented out) for every ``VAR=value`` line, commented or not."""
    found: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            var, value, commented = m[2], m[3], bool(m[1])
            if var not in found or not commented:
                found[var] = (value, commented)
    return found


def test_env_example_lists_every_setting_and_compose_variable() -> None:
    listed = env_example_lines()
    compose_vars = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    missing = (ALL_SETTINGS | compose_vars | {"SIM_FAULTS"}) - set(listed)
    assert not missing, f".env.example does not mention {sorted(missing)}"


def test_env_example_holds_no_secret_and_says_how_to_make_one() -> None:
    listed = env_example_lines()
    for var in ("POSTGRES_PASSWORD", "SECRET_KEYS", "ADMIN_API_KEYS"):
        value, commented = listed[var]
        assert not commented and value == "", f"{var} must be an empty placeholder"
    for var, (value, _) in listed.items():
        if SECRET_NAME.search(var) or var in SECRET_SETTINGS:
            assert not value or "PASSWORD" in value, f"{var} holds a value"
    text = ENV_EXAMPLE.read_text()
    assert not any(is_valid_fernet_key(m) for m in FERNET_LIKE.findall(text))
    assert "Fernet.generate_key()" in text


def test_compose_provides_every_required_setting(services: dict[str, dict[str, Any]]) -> None:
    """Each required setting comes from the service's environment or from .env."""
    from_env_file = {var for var, (_, commented) in env_example_lines().items() if not commented}
    for name, svc in app_services(services).items():
        provided = set(svc.get("environment", {})) | from_env_file
        missing = required_settings(SERVICE_SETTINGS[name]) - provided
        assert not missing, f"{name} lacks {sorted(missing)}"


# --- Dockerfile and .dockerignore -------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for op, rest in instructions if op == "ARG" and "=" in rest)
    froms = [rest for op, rest in instructions if op == "FROM"]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    for stage in froms:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        assert image.startswith("python:3.11-slim"), image
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    tail = instructions[final:]
    users = [rest for op, rest in tail if op == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    entrypoints = [rest for op, rest in instructions if op == "ENTRYPOINT"]
    assert entrypoints[-1] == '["sync-airbnb"]'
    assert any(op == "COPY" and "--from=builder" in rest for op, rest in tail)


def test_image_layout_lets_migrate_find_the_migrations() -> None:
    """shared/migrate.py looks for migrations/ next to shared/; the image keeps that."""
    package_root = Path(migrate.__file__).resolve().parents[1]
    assert package_root / "migrations" == migrate.MIGRATIONS_DIR
    instructions = dockerfile_instructions()
    workdirs = [rest for op, rest in instructions if op == "WORKDIR"]
    assert workdirs and all(w == "/app" for w in workdirs)
    copies = {rest for op, rest in instructions if op == "COPY"}
    for package in ("shared", "services", "migrations"):
        assert f"{package}/ {package}/" in copies, package
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    # Editable: the installed package's files stay in /app, beside /app/migrations.
    assert re.search(r"pip install (\S+ )*-e \.", runs)
    assert "--from=builder /app /app" in copies and "--from=builder /opt/venv /opt/venv" in copies


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").removeprefix("**/")
        parts = Path(path).parts
        hit = any(
            fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(parts[i], pattern)
            for i in range(len(parts))
        )
        if hit:
            result = not negate
    return result


def test_dockerignore_keeps_the_build_inputs_and_drops_local_secrets() -> None:
    patterns = dockerignore_patterns()
    for needed in (
        "pyproject.toml",
        "README.md",
        "shared/migrate.py",
        "services/cli.py",
        "migrations/0001_schema.sql",
        "migrations/0002_timescaledb.py",
    ):
        assert not ignored(needed, patterns), needed
    for dropped in (".env", ".git/config", ".venv/bin/python", "tests/test_deploy.py"):
        assert ignored(dropped, patterns), dropped


# --- deploy/k8s -------------------------------------------------------------------------

KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
}
DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def load_docs(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is not None:
            yield doc


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for resource in kustomization["resources"]:
        docs.extend(load_docs(K8S / resource))
    return docs


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def component(obj: dict[str, Any]) -> str:
    return obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in {"Deployment", "Job"}:
            yield m["metadata"]["name"], m["spec"]["template"]["spec"]


def test_kustomization_lists_every_manifest_and_no_secret(
    kustomization: dict[str, Any],
) -> None:
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == on_disk - {"secret.example.yaml"}
    assert "secretGenerator" not in kustomization
    # The example documents the Secret's shape with empty values only.
    (example,) = list(load_docs(K8S / "secret.example.yaml"))
    assert example["kind"] == "Secret" and example["metadata"]["name"] == "sync-airbnb"
    assert set(example["stringData"]) == SECRET_SETTINGS
    assert all(v == "" for v in example["stringData"].values())
    assert "data" not in example


def test_every_manifest_is_well_formed(manifests: list[dict[str, Any]]) -> None:
    seen = set()
    for m in manifests:
        assert set(m) >= {"apiVersion", "kind", "metadata"}, m
        assert (m["apiVersion"], m["kind"]) in KNOWN_KINDS, (m["apiVersion"], m["kind"])
        name = m["metadata"]["name"]
        assert DNS_1123.fullmatch(name) and len(name) <= 63, name
        assert (m["kind"], name) not in seen, f"duplicate {m['kind']}/{name}"
        seen.add((m["kind"], name))
        assert "namespace" not in m["metadata"], "the kustomization sets the namespace"
        assert m["kind"] != "Secret", "no Secret belongs in the kustomization"
    assert {kind for _, kind in KNOWN_KINDS} == {m["kind"] for m in manifests}


def test_a_deployment_per_service_with_probes_resources_and_no_root(
    manifests: list[dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    deployments = of_kind(manifests, "Deployment")
    assert sorted(component(d) for d in deployments.values()) == sorted(LONG_RUNNING)
    image_names = {i["name"] for i in kustomization["images"]}
    for name, d in deployments.items():
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        (container,) = spec["template"]["spec"]["containers"]
        assert container["args"] == [component(d)], name
        assert container["image"] in image_names, name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/health/ready")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert get["port"] in ports, (name, probe)
        assert container["startupProbe"]["httpGet"]["path"] == "/health", name


def test_every_pod_is_bounded_and_unprivileged(manifests: list[dict[str, Any]]) -> None:
    for name, pod in pod_specs(manifests):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            for part in ("requests", "limits"):
                assert set(c["resources"][part]) >= {"cpu", "memory"}, (name, part)
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name


def test_secrets_are_referenced_never_inlined(manifests: list[dict[str, Any]]) -> None:
    configmaps = of_kind(manifests, "ConfigMap")
    config_keys = set().union(*(cm["data"] for cm in configmaps.values()))
    assert not config_keys & SECRET_SETTINGS
    assert config_keys <= ALL_SETTINGS, config_keys - ALL_SETTINGS
    by_component = {}
    for name, pod in pod_specs(manifests):
        for c in pod["containers"]:
            refs = set()
            for env in c.get("env", []):
                if env["name"] in SECRET_SETTINGS or SECRET_NAME.search(env["name"]):
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert "value" not in env, (name, env["name"])
                    assert ref["name"] == "sync-airbnb" and ref["key"] == env["name"]
                    refs.add(env["name"])
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, name
            by_component[c["args"][0]] = refs | config_keys
    # Each service gets every setting it requires, and the fetcher no database at all.
    for cmd, provided in by_component.items():
        missing = required_settings(SERVICE_SETTINGS[cmd]) - provided
        assert not missing, f"{cmd} lacks {sorted(missing)}"
    assert "DATABASE_URL" not in by_component["fetcher"]
    assert by_component.keys() == {"migrate", *LONG_RUNNING}


def test_ports_agree_with_the_configmap(manifests: list[dict[str, Any]]) -> None:
    (config,) = of_kind(manifests, "ConfigMap").values()
    data = config["data"]
    assert data["HTTP_HOST"] == "0.0.0.0"
    for d in of_kind(manifests, "Deployment").values():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        want = data["ADMIN_PORT"] if component(d) == "admin" else data["HTTP_PORT"]
        assert [p["containerPort"] for p in container["ports"]] == [int(want)]


def test_every_service_asks_for_three_jetstream_replicas(manifests: list[dict[str, Any]]) -> None:
    (config,) = of_kind(manifests, "ConfigMap").values()
    # The nats chart runs three nodes (helm/nats-values.yaml): a copy of everything on each.
    assert config["data"]["JETSTREAM_REPLICAS"] == "3"
    for d in of_kind(manifests, "Deployment").values():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        refs = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
        assert config["metadata"]["name"] in refs, component(d)
        assert "JETSTREAM_REPLICAS" not in {e["name"] for e in container.get("env", [])}


def test_fetcher_autoscales_and_budgets_select_real_pods(
    manifests: list[dict[str, Any]],
) -> None:
    deployments = of_kind(manifests, "Deployment")
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler").values()
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and component(deployments[target["name"]]) == "fetcher"
    assert hpa["spec"]["minReplicas"] >= 3 and hpa["spec"]["maxReplicas"] > 3
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    # The HPA owns the fetcher's replica count.
    assert "replicas" not in deployments[target["name"]]["spec"]

    def selects(selector: dict[str, str]) -> set[str]:
        return {
            component(d)
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        }

    pdbs = of_kind(manifests, "PodDisruptionBudget")
    covered = set()
    for name, pdb in pdbs.items():
        chosen = selects(pdb["spec"]["selector"]["matchLabels"])
        assert len(chosen) == 1, name
        covered |= chosen
    assert covered == set(LONG_RUNNING)
    services = of_kind(manifests, "Service")
    for name, svc in services.items():
        assert len(selects(svc["spec"]["selector"])) == 1, name
    assert any(selects(s["spec"]["selector"]) == {"admin"} for s in services.values())


def test_migrate_job(manifests: list[dict[str, Any]]) -> None:
    (job,) = of_kind(manifests, "Job").values()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]


def test_helm_values_parse() -> None:
    nats = yaml.safe_load((K8S / "helm" / "nats-values.yaml").read_text())
    assert nats["config"]["jetstream"]["enabled"] is True
    # Three nodes, so that the services' JETSTREAM_REPLICAS=3 (configmap.yaml) is placeable.
    assert nats["config"]["cluster"] == {"enabled": True, "replicas": 3}
    db = yaml.safe_load((K8S / "helm" / "timescaledb-cnpg-values.yaml").read_text())
    assert db["type"] == "timescaledb"
    readme = (K8S / "README.md").read_text()
    for chart in ("nats/nats", "timescaledb-single", "cnpg/cluster"):
        assert chart in readme, chart
