"""deploy/kubernetes/, checked without a cluster: every file and every rendered overlay passes kubernetes-validate's
strict schemas (shipped in the package, offline), every container of ours gets variables that
supervisor_project.config accepts and reads, runs a documented command, listens on 8080 with its probes, runs as
the image's user; Services select pods and the ports they name; and, as real processes, the rendered containers
run the supervisor, its controller and each environment's web and agent.

No kubectl or kustomize binary is needed: ``render`` follows kustomization files the way ``kubectl kustomize``
does for the few features these manifests use (resources, components, generators, namespace), and refuses any
other. Where kubectl is installed, a test checks that both render the same resources.
"""

import base64
import copy
import functools
import os
import re
import secrets as token_source
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import requests
import yaml
from django.conf import settings
from django.http.request import validate_host

from supervisor_project.config import BASE_DIR, MIN_SHARED_SECRET, load
from supervisor_project.web import web_args, web_command

from .conftest import free_port
from .processes import ROOT, Process, RedisServer, http_ready, manage, own_postgres_databases, postgres_env, wait_for
from .test_deploy_files import RecordingEnviron, module_defines

K8S = BASE_DIR / "deploy" / "kubernetes"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
# A Kubernetes version whose schemas kubernetes-validate ships: no network is ever needed.
KUBERNETES_VERSION = "1.32.0"
IMAGE = "app-supervisor"
SECRETS_FILE = "secrets.env"

WEB = web_command(8080, host="0.0.0.0", python="python")
MIGRATE = ["python", "manage.py", "migrate", "--noinput"]
RUNSUPERVISOR = ["python", "manage.py", "runsupervisor"]
RUNWORKER = ["python", "manage.py", "runworker"]
WAIT_FOR_MIGRATIONS = "until python manage.py migrate --check;"
WEB_PORT = 8080
KUSTOMIZE_KINDS = {("kustomize.config.k8s.io/v1beta1", "Kustomization"),
                   ("kustomize.config.k8s.io/v1alpha1", "Component")}
# What this loader understands of a kustomization; anything else is refused rather than silently ignored.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "components", "configMapGenerator",
                    "secretGenerator"}
CLUSTER_SCOPED = {"Namespace"}
# The documented command that creates base/secrets.env: `KEY=$(openssl rand -hex N)` lines in a comment.
DOCUMENTED_SECRET = re.compile(r"^#\s+([A-Z_]+)=\$\(openssl rand -hex (\d+)\)\s*$", re.MULTILINE)


class ManifestError(Exception):
    pass


# -- rendering -----------------------------------------------------------------------------------------------------


def documents(path):
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc is not None]


def documented_secrets():
    """{key: hex length} from the command base/kustomization.yaml tells operators to run."""
    text = (K8S / "base" / "kustomization.yaml").read_text()
    return {key: int(length) for key, length in DOCUMENTED_SECRET.findall(text)}


DOCUMENTED_KEY = re.compile(r"^#\s+(APP_[A-Z_]+)=<[^>]+>\s*$", re.MULTILINE)


def documented_keys():
    """The key variables base/kustomization.yaml tells operators to add to secrets.env (exchange.keys)."""
    return DOCUMENTED_KEY.findall((K8S / "base" / "kustomization.yaml").read_text())


def made_up_secrets():
    """What an operator running the documented command gets: random values of the documented lengths, and key
    pairs made by `python -m exchange.keys`."""
    from exchange import keys

    secrets = {key: token_source.token_hex(length) for key, length in documented_secrets().items()}
    supervisor_private, supervisor_public = keys.generate()
    for name in documented_keys():
        secrets[name] = {"APP_SUPERVISOR_KEY": supervisor_private,
                         "APP_SUPERVISOR_PUBLIC_KEYS": supervisor_public}.get(name) or keys.generate()[0]
    return secrets


def render(directory, secrets, accumulated=(), component=False):
    """The resources ``kubectl kustomize DIRECTORY`` builds, generated names without their hash suffix. SECRETS
    stands for secrets.env, which is never committed. Raises ManifestError naming what it cannot follow."""
    directory = Path(directory)
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise ManifestError(f"{directory} has no kustomization.yaml")
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    if unknown:
        raise ManifestError(f"{path}: {sorted(unknown)} not understood by tests/test_kubernetes_manifests.py's loader "
                            "(teach it, or keep to resources, components, generators and namespace)")
    kind = "Component" if component else "Kustomization"
    if (kustomization.get("apiVersion"), kustomization.get("kind")) not in KUSTOMIZE_KINDS \
            or kustomization["kind"] != kind:
        raise ManifestError(f"{path} is not a {kind}")
    resources = list(accumulated)
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if not target.exists():
            raise ManifestError(f"{path} lists {entry}, which does not exist")
        resources += render(target, secrets) if target.is_dir() else documents(target)
    for entry in kustomization.get("components", []):
        if not (directory / entry).is_dir():
            raise ManifestError(f"{path} lists the component {entry}, which does not exist")
        resources = render(directory / entry, secrets, accumulated=resources, component=True)
    for generator in kustomization.get("configMapGenerator", []):
        _generate(resources, path, "ConfigMap", generator, _literals(path, generator))
    for generator in kustomization.get("secretGenerator", []):
        if set(generator) != {"name", "envs"} or generator["envs"] != [SECRETS_FILE]:
            raise ManifestError(f"{path}: secretGenerator {generator.get('name')} should read only {SECRETS_FILE}")
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in secrets.items()}
        _generate(resources, path, "Secret", generator, encoded)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] in CLUSTER_SCOPED:
                resource["metadata"]["name"] = kustomization["namespace"]
            else:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def _literals(path, generator):
    if not set(generator) <= {"name", "literals", "behavior"}:
        raise ManifestError(f"{path}: configMapGenerator {generator.get('name')} should have literals only")
    data = {}
    for literal in generator.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise ManifestError(f"{path}: {literal!r} in configMapGenerator {generator['name']} is not KEY=VALUE")
        data[key] = value
    return data


def _generate(resources, path, kind, generator, data):
    name, behavior = generator["name"], generator.get("behavior", "create")
    existing = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if behavior == "merge":
        if not existing:
            raise ManifestError(f"{path} merges into {kind} {name}, which nothing generated before")
        existing[0]["data"].update(data)
        return
    if behavior != "create" or existing:
        raise ManifestError(f"{path}: {kind} {name} is generated twice")
    resource = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": dict(data)}
    if kind == "Secret":
        resource["type"] = "Opaque"
    resources.append(resource)


SECRETS = made_up_secrets()


@functools.cache
def _rendered(overlay):
    return render(K8S / "overlays" / overlay, SECRETS)


def rendered(overlay):
    return copy.deepcopy(_rendered(overlay))


# -- reading rendered resources ------------------------------------------------------------------------------------


def of_kind(resources, *kinds):
    return [r for r in resources if r["kind"] in kinds]


def named(resources, kind, name):
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if not found:
        raise ManifestError(f"no {kind} named {name}")
    return found[0]


def workloads(resources):
    return of_kind(resources, "Deployment", "StatefulSet")


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def containers(workload, init=True):
    spec = pod_spec(workload)
    return (spec.get("initContainers", []) if init else []) + spec["containers"]


def ours(container):
    return container["image"].split(":")[0] == IMAGE


def command(container):
    return container.get("command", []) + container.get("args", [])


def container_env(container, resources):
    """The variables Kubernetes gives CONTAINER: its envFrom sources in order, then its env entries."""
    configmaps = {r["metadata"]["name"]: r.get("data", {}) for r in of_kind(resources, "ConfigMap")}
    secret_data = {r["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in r.get("data", {}).items()}
                   for r in of_kind(resources, "Secret")}
    sources = {"configMapRef": ("ConfigMap", configmaps), "secretRef": ("Secret", secret_data),
               "configMapKeyRef": ("ConfigMap", configmaps), "secretKeyRef": ("Secret", secret_data)}

    def source(ref_kind, name):
        kind, known = sources[ref_kind]
        if name not in known:
            raise ManifestError(f"container {container['name']} reads the {kind} {name}, which is not in the manifests")
        return known[name]

    env = {}
    for entry in container.get("envFrom", []):
        ((ref_kind, ref),) = entry.items()
        env.update(source(ref_kind, ref["name"]))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ((ref_kind, ref),) = var["valueFrom"].items()
        data = source(ref_kind, ref["name"])
        if ref["key"] not in data:
            raise ManifestError(f"container {container['name']}: {var['name']} reads the key {ref['key']}, "
                                f"which {ref['name']} does not have")
        env[var["name"]] = data[ref["key"]]
    return env


def role(container, env):
    cmd = command(container)
    if cmd[:3] == WEB[:3]:
        return "supervisor web" if env.get("APP_MODE") == "supervisor" else "worker web"
    if cmd[:2] == ["sh", "-c"] and cmd[2].startswith(WAIT_FOR_MIGRATIONS):
        return "wait for migrations"
    return {tuple(MIGRATE): "migrate", tuple(RUNSUPERVISOR): "controller", tuple(RUNWORKER): "agent"}.get(tuple(cmd))


def containers_of_ours(overlay):
    resources = _rendered(overlay)
    return [(workload, container, container_env(container, resources))
            for workload in workloads(resources) for container in containers(workload) if ours(container)]


def by_role(overlay):
    roles = {}
    for workload, container, env in containers_of_ours(overlay):
        roles.setdefault(role(container, env), []).append((workload, container, env))
    return roles


def environments(overlay):
    """{ENVIRONMENT_NAME: (Deployment, {container name: (container, env)})}"""
    found = {}
    for workload, container, env in containers_of_ours(overlay):
        if env.get("APP_MODE") == "worker":
            _, members = found.setdefault(env["ENVIRONMENT_NAME"], (workload, {}))
            members[container["name"]] = (container, env)
    return found


def selects(selector, labels):
    return selector and all(labels.get(key) == value for key, value in selector.items())


def port_problems(resources):
    """Every Service selects exactly one workload's pods, on a port one of its containers declares."""
    problems = []
    pods = workloads(resources)
    for service in of_kind(resources, "Service"):
        name = service["metadata"]["name"]
        selected = [w for w in pods if selects(service["spec"].get("selector"), w["spec"]["template"]["metadata"]
                                               .get("labels", {}))]
        if len(selected) != 1:
            problems.append(f"Service {name} selects {len(selected)} workloads' pods, not one")
            continue
        declared = {(p.get("name"), p["containerPort"]) for c in containers(selected[0], init=False)
                    for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if not any(target in pair for pair in declared):
                problems.append(f"Service {name} sends port {port['port']} to {target}, which no container of "
                                f"{selected[0]['metadata']['name']} declares")
    return problems


DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379}


def service_for(resources, url):
    """The Service an in-cluster URL names; it must have the URL's port."""
    parts = urlsplit(url)
    service = named(resources, "Service", parts.hostname)
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    assert port in [p["port"] for p in service["spec"]["ports"]], f"{url}: Service {parts.hostname} has no port {port}"
    return service


def validate(resource):
    """kubernetes-validate, strict (no field the schema does not know). Missing schemas are failures here."""
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


ALL_OURS = [pytest.param(overlay, w["metadata"]["name"], c["name"], id=f"{overlay}/{w['metadata']['name']}/{c['name']}")
            for overlay in OVERLAYS for w, c, _ in containers_of_ours(overlay)]


# -- files and schemas ---------------------------------------------------------------------------------------------


def test_there_is_a_base_components_and_an_overlay_that_runs_everything_locally():
    assert (K8S / "base" / "kustomization.yaml").exists()
    assert "local" in OVERLAYS
    assert {p.name for p in (K8S / "components").iterdir()} >= {"postgres", "environment-env_a", "environment-env_b"}


def test_every_file_is_yaml_that_kubernetes_validate_accepts_strictly():
    files = sorted(p for p in K8S.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert files
    for path in files:
        assert path.suffix == ".yaml", f"{path}: kubernetes-validate reads YAML manifests only"
        for doc in documents(path):
            if (doc.get("apiVersion"), doc.get("kind")) in KUSTOMIZE_KINDS:
                continue  # kustomize's own files: no Kubernetes schema; render() reads every one of them
            try:
                validate(doc)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                pytest.fail(f"{path}: {getattr(exc, 'message', exc)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_resource_validates_strictly_generated_ones_included(overlay):
    resources = rendered(overlay)
    assert {"ConfigMap", "Secret", "Deployment", "Service", "Namespace"} <= {r["kind"] for r in resources}
    for resource in resources:
        validate(resource)


def test_strict_validation_refuses_a_misspelt_field_offline():
    deployment = named(rendered("local"), "Deployment", "supervisor")
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="envFrm"):
        validate(deployment)


def test_secrets_env_is_never_committed_and_the_documented_command_makes_every_key():
    assert SECRETS_FILE in (K8S / "base" / ".gitignore").read_text().split()
    ignored = subprocess.run(["git", "check-ignore", "-q", f"deploy/kubernetes/base/{SECRETS_FILE}"], cwd=BASE_DIR)
    assert ignored.returncode == 0, "git would commit base/secrets.env"
    documented = documented_secrets()
    assert set(documented) >= {"SECRET_KEY", "APP_SHARED_SECRET", "SUPERVISOR_API_TOKEN", "DB_PASSWORD"}
    assert 2 * documented["APP_SHARED_SECRET"] >= MIN_SHARED_SECRET
    for overlay in OVERLAYS:
        resources = rendered(overlay)
        referenced = {var["valueFrom"]["secretKeyRef"]["key"]
                      for w in workloads(resources) for c in containers(w) for var in c.get("env", [])
                      if "secretKeyRef" in var.get("valueFrom", {})}
        assert referenced == set(documented) | set(documented_keys()), f"{overlay}: referenced {sorted(referenced)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_render_builds_what_kubectl_kustomize_builds(overlay, tmp_path):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed; render() alone is checked")
    shutil.copytree(K8S, tmp_path / "kubernetes")
    (tmp_path / "kubernetes" / "base" / SECRETS_FILE).write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    built = subprocess.run([kubectl, "kustomize", str(tmp_path / "kubernetes" / "overlays" / overlay)],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    ours_ = rendered(overlay)
    for generated in of_kind(ours_, "ConfigMap", "Secret"):
        built = re.sub(re.escape(generated["metadata"]["name"]) + r"-[a-z0-9]{10}\b", generated["metadata"]["name"],
                       built)

    def comparable(resources):
        # kustomize wraps long base64 values across lines: compare what they encode.
        for secret in of_kind(resources, "Secret"):
            secret["data"] = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        return {(r["kind"], r["metadata"]["name"]): r for r in resources}

    assert comparable(documents_from(built)) == comparable(ours_)


def documents_from(text):
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


# -- the containers of ours ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay, workload, container", ALL_OURS)
def test_every_variable_of_a_container_is_read_and_valid(overlay, workload, container):
    resources = _rendered(overlay)
    (found,) = [c for c in containers(named(resources, workload_kind(resources, workload), workload))
                if c["name"] == container]
    env = RecordingEnviron(container_env(found, resources))
    config = load(env)  # raises ConfigError, naming the variable, for any bad or contradictory value
    unread = set(env) - env.read
    assert not unread, f"{sorted(unread)} are not read by supervisor_project.config"
    assert config.mode in ("supervisor", "worker")
    assert config.database["ENGINE"] == "django.db.backends.postgresql"
    assert config.supervisor_redis_url and config.command_redis_url
    assert Path(env["APP_STORAGE_DIR"]) in {Path(m["mountPath"]) for m in found.get("volumeMounts", [])}


def workload_kind(resources, name):
    (kind,) = {w["kind"] for w in workloads(resources) if w["metadata"]["name"] == name}
    return kind


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_roles_are_those_of_compose_each_with_its_documented_command(overlay):
    roles = by_role(overlay)
    assert None not in roles, f"commands that are not documented: {[command(c) for _, c, _ in roles[None]]}"
    assert len(roles["supervisor web"]) == 1
    assert len(roles["controller"]) == 1
    assert sorted(environments(overlay)) == ["env_a", "env_b"]
    for _, container, _ in roles["supervisor web"] + roles["worker web"]:
        assert command(container) == WEB
    module, _, attribute = web_args(WEB_PORT)[-1].partition(":")  # what supervisor_project.web runs
    assert module_defines(module, attribute)
    for _, container, _ in roles["wait for migrations"]:
        script = command(container)[2]
        assert re.findall(r"manage\.py \w+(?: --[\w-]+)*", script) == ["manage.py migrate --check"], script
    for name in ("runsupervisor", "runworker"):
        assert (BASE_DIR / {"runsupervisor": "controller", "runworker": "workers"}[name] / "management" / "commands"
                / f"{name}.py").exists()
    images = {c["image"].split(":")[0] for w in workloads(_rendered(overlay)) for c in containers(w)}
    assert images - {IMAGE} <= {"redis", "postgres"} and "redis" in images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_containers_listen_on_8080_with_probes_on_healthz_and_readyz_in_an_allowed_host(overlay):
    roles = by_role(overlay)
    webs = roles["supervisor web"] + roles["worker web"]
    assert len(webs) == 3
    for workload, container, env in webs:
        where = f"{workload['metadata']['name']}/{container['name']}"
        assert container["ports"] == [{"name": "http", "containerPort": WEB_PORT}], where
        probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes["readinessProbe"]["path"] == "/readyz", where
        assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz", where
        allowed = load(env).allowed_hosts
        for kind, probe in probes.items():
            assert probe["port"] in ("http", WEB_PORT), where
            # The kubelet's own Host would be the pod's IP, which Django refuses with a 400.
            hosts = [h["value"] for h in probe.get("httpHeaders", []) if h["name"].lower() == "host"]
            assert hosts and validate_host(hosts[0], allowed), f"{where}: {kind} sends Host {hosts}, not in {allowed}"
    for role_name in ("controller", "agent", "migrate", "wait for migrations"):
        for workload, container, _ in roles.get(role_name, []):
            assert not container.get("ports"), f"{workload['metadata']['name']}/{container['name']} serves nothing"
            assert not any(k in container for k in ("livenessProbe", "readinessProbe", "startupProbe")), \
                "no HTTP endpoint to probe"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_unprivileged_read_only_and_with_resources(overlay):
    for workload in workloads(_rendered(overlay)):
        spec = pod_spec(workload)
        pod_security = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        assert spec.get("enableServiceLinks") is False, workload["metadata"]["name"]
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            for bound in ("requests", "limits"):
                assert set(container.get("resources", {}).get(bound, {})) == {"cpu", "memory"}, f"{where}: {bound}"
            if ours(container):
                assert security.get("runAsUser") == 10001, f"{where}: the image's user (Dockerfile)"
                assert container.get("imagePullPolicy") == "IfNotPresent", where
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert {"/tmp", "/app/storage"} <= mounts, f"{where}: the root file system is read-only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_that_run_commands_give_them_time_to_finish_and_deregister(overlay):
    roles = by_role(overlay)
    pods = {w["metadata"]["name"]: w for role_name in ("agent", "controller") for w, _, _ in roles[role_name]}
    assert pods
    for name, workload in pods.items():
        grace = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
        assert grace >= settings.APP_COMMAND_TIMEOUT + 15, f"{name}: {grace} s to finish a command and deregister"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_environment_is_one_pod_whose_web_and_agent_share_variables_and_storage(overlay):
    databases = {env["DB_DATABASE"] for _, _, env in by_role(overlay)["supervisor web"]}
    for name, (deployment, members) in environments(overlay).items():
        assert deployment["kind"] == "Deployment"
        assert deployment["spec"]["replicas"] == 1, f"{name}: the registry has one entry per environment"
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, f"{name}: never two agents of one environment"
        assert set(members) == {"migrate", "web", "agent"}, name
        envs = [env for _, env in members.values()]
        assert all(env == envs[0] for env in envs), f"{name}: migrate, web and agent read other variables"
        mounts = [{m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])} for c, _ in members.values()]
        assert all(m == mounts[0] for m in mounts), f"{name}: the web and the agent share APP_STORAGE_DIR"
        assert envs[0]["DB_DATABASE"] not in databases, f"{name}: a database of its own"
        databases.add(envs[0]["DB_DATABASE"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_controller_has_the_supervisors_variables_and_waits_for_its_migrations(overlay):
    roles = by_role(overlay)
    [(supervisor, _, supervisor_env)] = roles["supervisor web"]
    [(controller, _, controller_env)] = roles["controller"]
    assert controller_env == supervisor_env
    assert [c["name"] for c in pod_spec(supervisor)["initContainers"] if command(c) == MIGRATE] == ["migrate"]
    waits = [c for c in pod_spec(controller)["initContainers"] if role(c, controller_env) == "wait for migrations"]
    assert len(waits) == 1
    assert controller["spec"]["replicas"] >= 1


# -- Services and addresses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_one_workloads_pods_on_a_port_it_declares(overlay):
    resources = _rendered(overlay)
    assert port_problems(resources) == []
    for workload in workloads(resources):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(workload["spec"]["selector"]["matchLabels"], labels), workload["metadata"]["name"]
    namespaces = {r["metadata"].get("namespace") for r in resources if r["kind"] not in CLUSTER_SCOPED}
    assert namespaces == {named(resources, "Namespace", "appsup")["metadata"]["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_environments_proxy_url_is_the_service_of_its_own_pod_in_its_allowed_hosts(overlay):
    resources = _rendered(overlay)
    supervisor_hosts = load(by_role(overlay)["supervisor web"][0][2]).allowed_hosts
    for name, (deployment, members) in environments(overlay).items():
        env = members["web"][1]
        host = urlsplit(env["ENVIRONMENT_PROXY_URL"]).hostname
        assert "_" not in host, "Django refuses a Host header with an underscore"
        service = service_for(resources, env["ENVIRONMENT_PROXY_URL"])
        assert selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]), name
        allowed = load(env).allowed_hosts
        # The agent probes its web there; the proxy forwards the Host that clients used for the supervisor.
        for needed in [host, *supervisor_hosts]:
            assert validate_host(needed, allowed), f"{name}: ALLOWED_HOSTS {allowed} refuses {needed}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_and_the_database_are_services_of_the_overlay_or_external(overlay):
    resources = _rendered(overlay)
    postgres = [w for w in workloads(resources) if w["metadata"]["name"] == "postgres"]
    for workload, container, env in containers_of_ours(overlay):
        for var in ("APP_SUPERVISOR_REDIS_URL", "APP_COMMAND_REDIS_URL"):
            assert service_for(resources, env[var])["metadata"]["name"] == "redis"
        if postgres:
            service = named(resources, "Service", env["DB_HOST"])
            assert int(env["DB_PORT"]) in [p["port"] for p in service["spec"]["ports"]]
            assert selects(service["spec"]["selector"], postgres[0]["spec"]["template"]["metadata"]["labels"])
        else:
            assert not [s for s in of_kind(resources, "Service") if s["metadata"]["name"] == env["DB_HOST"]]


def test_the_databases_are_created_on_the_postgres_server_with_the_same_credentials():
    resources = _rendered("local")
    (postgres,) = [w for w in workloads(resources) if w["metadata"]["name"] == "postgres"]
    init_volume = next(v for v in pod_spec(postgres)["volumes"] if "configMap" in v)
    sql = "".join(named(resources, "ConfigMap", init_volume["configMap"]["name"])["data"].values())
    created = set(re.findall(r"CREATE DATABASE (\w+);", sql))
    server = container_env(pod_spec(postgres)["containers"][0], resources)
    for workload, container, env in containers_of_ours("local"):
        assert env["DB_DATABASE"] in created, f"{workload['metadata']['name']}: {env['DB_DATABASE']} is not created"
        assert (env["DB_USER"], env["DB_PASSWORD"]) == (server["POSTGRES_USER"], server["POSTGRES_PASSWORD"])


# -- the checks themselves catch what they are for -----------------------------------------------------------------


def test_a_kustomization_naming_a_missing_file_or_a_field_it_does_not_know_is_refused_by_name(tmp_path):
    shutil.copytree(K8S, tmp_path / "kubernetes")
    base = tmp_path / "kubernetes" / "base" / "kustomization.yaml"
    text = base.read_text()
    base.write_text(text.replace("  - redis.yaml\n", "  - redis.yaml\n  - missing.yaml\n"))
    with pytest.raises(ManifestError, match="lists missing.yaml, which does not exist"):
        render(tmp_path / "kubernetes" / "overlays" / "local", SECRETS)
    base.write_text(text + "patches:\n  - path: patch.yaml\n")
    with pytest.raises(ManifestError, match=r"\['patches'\] not understood"):
        render(tmp_path / "kubernetes" / "overlays" / "local", SECRETS)


def test_a_secret_key_missing_from_secrets_env_is_reported_naming_the_container_and_key():
    resources = render(K8S / "overlays" / "local", {k: v for k, v in SECRETS.items() if k != "APP_ENV_A_KEY"})
    agent = next(c for c in containers(named(resources, "Deployment", "env-a")) if c["name"] == "agent")
    with pytest.raises(ManifestError, match="container agent: APP_ENVIRONMENT_KEY reads the key APP_ENV_A_KEY"):
        container_env(agent, resources)


def test_a_service_that_selects_no_pod_or_names_an_undeclared_port_is_reported():
    resources = rendered("local")
    named(resources, "Service", "env-a")["spec"]["selector"]["app.kubernetes.io/instance"] = "env_a"
    named(resources, "Service", "supervisor")["spec"]["ports"][0]["targetPort"] = 80
    assert sorted(port_problems(resources)) == [
        "Service env-a selects 0 workloads' pods, not one",
        "Service supervisor sends port 80 to 80, which no container of supervisor declares",
    ]


# -- the rendered containers as real processes ---------------------------------------------------------------------


class Pod:
    """A rendered workload's containers as local processes: init containers one after the other, then the others.
    Only addresses change: Services become local ports, Redis the test's own server, the database the test's."""

    def __init__(self, workload, resources, tmp_path, addresses):
        self.name = workload["metadata"]["name"]
        self.spec = pod_spec(workload)
        self.resources = resources
        self.tmp = tmp_path
        self.addresses = addresses
        self.port = addresses["services"].get(self.name)
        self.processes = {}

    def env(self, container):
        env = container_env(container, self.resources)
        for var in ("APP_SUPERVISOR_REDIS_URL", "APP_COMMAND_REDIS_URL"):
            assert urlsplit(env[var]).hostname == "redis"
            env[var] = self.addresses["redis"]
        for var in ("ENVIRONMENT_URL", "ENVIRONMENT_PROXY_URL"):
            if var in env:
                env[var] = f"http://127.0.0.1:{self.addresses['services'][urlsplit(env[var]).hostname]}"
        env["APP_STORAGE_DIR"] = str(self.tmp / self.name)  # one volume per pod, shared by its containers
        database = env.pop("DB_DATABASE")
        for var in ("DB_DIALECT", "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD"):
            env.pop(var)
        env.update(postgres_env(f"appsup_k8s_{database}") or
                   {"DB_DIALECT": "sqlite", "DB_DATABASE": str(self.tmp / f"{database}.sqlite3")})
        outside = {k: v for k, v in os.environ.items()
                   if not k.startswith(("APP_", "ENVIRONMENT_", "DB_", "DJANGO_")) and k != "DATABASE_URL"}
        # `python` and `uvicorn` are the image's; here, the virtualenv's.
        outside["PATH"] = f"{Path(sys.executable).parent}:{outside.get('PATH', '')}"
        return {**outside, **env, "PYTHONUNBUFFERED": "1"}

    def args(self, container):
        cmd = command(container)
        if cmd[:3] == WEB[:3]:
            cmd = web_command(self.port, python="python")
        return cmd

    def process(self, container):
        log = self.tmp / f"{self.name}-{container['name']}.log"
        process = Process(self.args(container), self.env(container), log)
        self.processes[container["name"]] = process
        return process

    def init(self):
        for container in self.spec.get("initContainers", []):
            done = subprocess.run(self.args(container), cwd=ROOT, env=self.env(container), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, f"{self.name}/{container['name']}: {done.stdout}{done.stderr}"

    def start(self):
        for container in self.spec["containers"]:
            self.process(container)

    def stop(self):
        for process in self.processes.values():
            process.stop()


def kubelet_get(port, probe):
    headers = {h["name"]: h["value"] for h in probe["httpGet"].get("httpHeaders", [])}
    return requests.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", headers=headers, timeout=5)


@pytest.mark.slow
def test_the_local_overlays_containers_run_the_supervisor_controller_webs_and_agents(tmp_path):
    resources = rendered("local")
    ours_ = [w for w in workloads(resources) if any(ours(c) for c in containers(w))]
    services = {s["metadata"]["name"]: free_port() for s in of_kind(resources, "Service")}
    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    addresses = {"services": services, "redis": redis_server.url}
    pods = {w["metadata"]["name"]: Pod(w, resources, tmp_path, addresses) for w in ours_}
    assert set(pods) == {"supervisor", "supervisor-controller", "env-a", "env-b"}
    token = SECRETS["SUPERVISOR_API_TOKEN"]
    supervisor = f"http://127.0.0.1:{services['supervisor']}"
    database_names = [f"appsup_k8s_{env['DB_DATABASE']}" for _, _, env in containers_of_ours("local")]
    try:
        with own_postgres_databases(sorted(set(database_names))):
            # The controller's init container waits for the supervisor's migrations, then lets it start.
            (wait,) = pods["supervisor-controller"].spec["initContainers"]
            waiting = pods["supervisor-controller"].process(wait)
            wait_for(lambda: "waiting for the supervisor's migrations" in waiting.output(), what="the wait")
            pods["supervisor"].init()
            assert waiting.wait(30) == 0, waiting.output()
            pods["supervisor"].start()
            pods["supervisor-controller"].start()
            # As the documented install does once the supervisor runs: each environment's public key enrolled.
            from exchange import keys

            supervisor_env = pods["supervisor"].env(pods["supervisor"].spec["containers"][0])
            for name, key in (("env_a", "APP_ENV_A_KEY"), ("env_b", "APP_ENV_B_KEY")):
                public = keys.public_text(keys.private_key(SECRETS[key]))
                manage(["enrollenvironment", name, f"--public-key={public}"], supervisor_env)
            for name in ("env-a", "env-b"):
                pods[name].init()
                pods[name].start()

            def statuses():
                try:
                    answer = requests.get(f"{supervisor}/api/environments/", timeout=5,
                                          headers={"Authorization": f"Bearer {token}"})
                except requests.ConnectionError:
                    return {}
                return {e["name"]: e["status"] for e in answer.json()["environments"]} if answer.ok else {}

            wait_for(lambda: statuses() == {"env_a": "online", "env_b": "online"}, timeout=60,
                     what="both environments online")

            # The kubelet's probes, as it sends them, and the Hosts used inside the cluster. (Online alone does not
            # say a web answers yet: an agent gives its web a start-up grace.)
            webs = {name: pods[name] for name in ("supervisor", "env-a", "env-b")}
            for name, pod in webs.items():
                wait_for(http_ready(f"http://127.0.0.1:{pod.port}/healthz"), timeout=60, what=f"{name}'s web")
            for name, pod in webs.items():
                (web,) = [c for c in pod.spec["containers"] if c["name"] == "web"]
                for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                    answer = kubelet_get(pod.port, web[kind])
                    assert answer.status_code == 200, f"{name} {kind}: {answer.status_code} {answer.text[:200]}"
                assert requests.get(f"http://127.0.0.1:{pod.port}/healthz", headers={"Host": name},
                                    timeout=5).status_code == 200

            # An application started on env_a answers through the supervisor's Service, as a pod would reach it.
            auth = {"Authorization": f"Bearer {token}"}
            created = requests.post(f"{supervisor}/api/apps/", headers=auth, timeout=30, json={
                "name": "k8sdemo", "display_name": "Demo", "environments": ["env_a"],
                "admin_username": "admin", "admin_password": "a-long-password"})
            assert created.status_code == 201, created.text
            started = requests.post(f"{supervisor}/api/apps/k8sdemo/start?timeout=60", headers=auth, timeout=90)
            assert started.status_code == 200, started.text
            page = requests.get(f"{supervisor}/apps/k8sdemo/admin/login/", headers={"Host": "supervisor"}, timeout=30)
            assert page.status_code == 200, page.text[:300]

            # Redis lost: no web is restarted (liveness holds), every web leaves its Service (readiness fails)...
            redis_server.kill()
            for name, pod in webs.items():
                (web,) = [c for c in pod.spec["containers"] if c["name"] == "web"]
                assert kubelet_get(pod.port, web["livenessProbe"]).status_code == 200, name
                not_ready = kubelet_get(pod.port, web["readinessProbe"])
                assert not_ready.status_code == 503 and "redis" in not_ready.json()["down"], name
            # ...and is back once Redis is.
            redis_server.start()
            for name, pod in webs.items():
                (web,) = [c for c in pod.spec["containers"] if c["name"] == "web"]
                wait_for(lambda: kubelet_get(pod.port, web["readinessProbe"]).status_code == 200, timeout=30,
                         what=f"{name} ready again")
            wait_for(lambda: statuses() == {"env_a": "online", "env_b": "online"}, timeout=30, what="online again")

            # SIGTERM, as Kubernetes stops a pod: the agent deregisters and exits 0 well within the grace period.
            agent = pods["env-a"].processes["agent"]
            began = time.monotonic()
            agent.signal(signal.SIGTERM)
            assert agent.wait(pod_spec(named(resources, "Deployment", "env-a"))["terminationGracePeriodSeconds"]) == 0
            assert time.monotonic() - began < 30
            wait_for(lambda: statuses().get("env_a") == "offline", timeout=10, what="env_a offline at once")
    finally:
        for pod in pods.values():
            pod.stop()
        redis_server.stop()

