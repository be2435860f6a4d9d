"""compose.yaml, Dockerfile and .dockerignore, checked without Docker: every service's variables validate with
supervisor_project.config, ports and names match the reference's example, and every file, module and command
they name exists."""

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from supervisor_project.config import BASE_DIR, load
from supervisor_project.web import web_args, web_command

from .processes import SUPERVISOR_KEY, environment_key, supervisor_public_key

COMPOSE = yaml.safe_load((BASE_DIR / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
# What an operator exports for a ${VAR:?message} that compose refuses to start without.
FROM_THE_SHELL = "a-value-the-operator-exported-0123456789"


class RecordingEnviron(dict):
    """A mapping that remembers which variables the configuration read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


# What the operator exports for the keys (docs/deployment.md, "Keys"): keys of the test deployment.
KEYS_FROM_THE_SHELL = {"APP_SUPERVISOR_KEY": SUPERVISOR_KEY, "APP_SUPERVISOR_PUBLIC_KEYS": supervisor_public_key(),
                       "APP_ENV_A_KEY": environment_key("env_a"), "APP_ENV_B_KEY": environment_key("env_b")}


def interpolate(value):
    """Compose's ${VAR:-default} with nothing set in the shell: the default; ${VAR:?message}: what the operator
    was told to export."""
    return INTERPOLATION.sub(lambda m: KEYS_FROM_THE_SHELL.get(m.group(1), FROM_THE_SHELL) if m.group(2) == "?"
                             else (m.group(3) or ""), str(value))


def environment(service):
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def command(service):
    cmd = SERVICES[service].get("command")
    if cmd is None:
        return dockerfile_cmd()
    return cmd if isinstance(cmd, list) else shlex.split(cmd)


def command_text(service):
    return " ".join(command(service))


def ours(service):
    return "build" in SERVICES[service]


def by_role():
    roles = {"supervisor": [], "controller": [], "web": [], "agent": []}
    for name in SERVICES:
        if not ours(name):
            continue
        env = environment(name)
        if "runsupervisor" in command_text(name):
            roles["controller"].append(name)
        elif env.get("APP_MODE") == "supervisor":
            roles["supervisor"].append(name)
        elif "runworker" in command_text(name):
            roles["agent"].append(name)
        else:
            roles["web"].append(name)
    return roles


def published(service):
    """{host port: container port}"""
    ports = {}
    for entry in SERVICES[service].get("ports", []):
        host, container = str(entry).rsplit(":", 1) if ":" in str(entry) else (str(entry), str(entry))
        ports[int(host.rsplit(":", 1)[-1])] = int(container)
    return ports


# -- Dockerfile --------------------------------------------------------------------------------------------------


def dockerfile():
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (BASE_DIR / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_cmd():
    (cmd,) = [args for keyword, args in dockerfile() if keyword == "CMD"]
    return json.loads(cmd)


def dockerignore_patterns():
    return [
        line.strip()
        for line in (BASE_DIR / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(path):
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in dockerignore_patterns())


def module_defines(module, name):
    spec = importlib.util.find_spec(module)
    assert spec and spec.origin, f"module {module} does not exist"
    tree = ast.parse(Path(spec.origin).read_text())
    return any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets)
        for node in tree.body
    )


def requirement_names():
    names = set()
    for line in (BASE_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0].lower())
    return names


# -- compose -------------------------------------------------------------------------------------------------------


def test_the_services_of_the_reference_example_are_there():
    roles = by_role()
    assert len(roles["supervisor"]) == 1
    assert len(roles["controller"]) == 1
    assert len(roles["web"]) == 2
    assert len(roles["agent"]) == 2
    images = {SERVICES[name].get("image", "").split(":")[0] for name in SERVICES if not ours(name)}
    assert {"redis", "postgres"} <= images


@pytest.mark.parametrize("service", [name for name in SERVICES if "build" in SERVICES[name]])
def test_every_variable_of_a_service_is_read_and_valid(service):
    env = RecordingEnviron(environment(service))
    config = load(env)  # raises ConfigError, naming the variable, for any bad or contradictory value
    unread = set(env) - env.read
    assert not unread, f"{service}: {sorted(unread)} are not read by supervisor_project.config"
    assert config.database["ENGINE"] == "django.db.backends.postgresql"
    assert config.supervisor_redis_url and config.command_redis_url


def test_keys_must_come_from_the_shell_and_each_service_holds_only_its_own():
    roles = by_role()
    for name in SERVICES:
        if not ours(name):
            continue
        env = SERVICES[name].get("environment") or {}
        if env.get("APP_MODE") == "supervisor":
            assert str(env["APP_SUPERVISOR_KEY"]).startswith("${APP_SUPERVISOR_KEY:?"), name
            assert "APP_ENVIRONMENT_KEY" not in env, name
        else:
            assert "APP_SUPERVISOR_KEY" not in env and "APP_SHARED_SECRET" not in env, name
            assert str(env["APP_SUPERVISOR_PUBLIC_KEYS"]).startswith("${APP_SUPERVISOR_PUBLIC_KEYS:?"), name
    # Each environment its own key: env_b's services never hold env_a's.
    keys_of = {environment(web)["ENVIRONMENT_NAME"]: environment(web)["APP_ENVIRONMENT_KEY"] for web in roles["web"]}
    assert len(set(keys_of.values())) == len(keys_of) == 2


def test_the_ports_are_the_reference_ones():
    roles = by_role()
    (supervisor,) = roles["supervisor"]
    assert published(supervisor) == {14000: 80}
    by_name = {environment(web)["ENVIRONMENT_NAME"]: web for web in roles["web"]}
    assert sorted(by_name) == ["env_a", "env_b"]
    for name, port in (("env_a", 15000), ("env_b", 16000)):
        web = by_name[name]
        assert published(web) == {port: 80}
        env = environment(web)
        assert env["ENVIRONMENT_URL"] == f"http://localhost:{port}"
        proxy = urlsplit(env["ENVIRONMENT_PROXY_URL"])
        assert proxy.hostname == web, "the proxy URL is the worker's address inside the compose network"
        assert (proxy.port or 80) == 80
        assert "_" not in proxy.hostname, "Django refuses a Host header with an underscore"
    for agent in roles["agent"]:
        assert not published(agent), "agents serve nothing"


def test_every_worker_web_has_an_agent_with_the_same_variables():
    roles = by_role()
    webs = {environment(web)["ENVIRONMENT_NAME"]: web for web in roles["web"]}
    agents = {environment(agent)["ENVIRONMENT_NAME"]: agent for agent in roles["agent"]}
    assert webs.keys() == agents.keys()
    for name, web in webs.items():
        assert environment(agents[name]) == environment(web)
        assert SERVICES[agents[name]].get("volumes") == SERVICES[web].get("volumes")
        assert command(agents[name]) == ["python", "manage.py", "runworker"]


def test_the_controller_runs_with_the_supervisors_variables_once_its_migrations_ran():
    roles = by_role()
    [supervisor], [controller] = roles["supervisor"], roles["controller"]
    assert environment(controller) == environment(supervisor)
    assert command(controller) == ["python", "manage.py", "runsupervisor"]
    assert SERVICES[controller]["depends_on"] == {supervisor: {"condition": "service_healthy"}}
    assert not published(controller), "the controller serves nothing"


def test_each_role_has_its_own_database_and_storage():
    services = [name for name in SERVICES if ours(name)]
    databases = {environment(name)["DB_DATABASE"] for name in services}
    assert len(databases) == 3  # supervisor, env_a, env_b (a web and its agent share one)
    volumes = {tuple(SERVICES[name]["volumes"]) for name in services}
    assert len(volumes) == 3


def test_the_databases_are_created_on_the_postgres_server():
    init = COMPOSE["configs"]["postgres-init"]["content"]
    created = set(re.findall(r"CREATE DATABASE (\w+);", init))
    postgres_mounts = [c["source"] for c in SERVICES["postgres"].get("configs", [])]
    assert "postgres-init" in postgres_mounts
    for name in SERVICES:
        if ours(name):
            env = environment(name)
            assert env["DB_DATABASE"] in created
            assert env["DB_HOST"] in SERVICES
            assert (env["DB_USER"], env["DB_PASSWORD"]) == (
                SERVICES["postgres"]["environment"]["POSTGRES_USER"],
                SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"],
            )


def test_redis_urls_name_the_redis_service():
    for name in SERVICES:
        if ours(name):
            env = environment(name)
            for var in ("APP_SUPERVISOR_REDIS_URL", "APP_COMMAND_REDIS_URL"):
                assert urlsplit(env[var]).hostname in SERVICES


def test_depends_on_names_existing_services_and_health_conditions_have_healthchecks():
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, options in items:
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = (options or {}).get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy, it has no healthcheck"
    for web in by_role()["web"] + by_role()["supervisor"]:
        depends = SERVICES[web]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_web_services_migrate_then_serve_the_asgi_application_on_the_published_port():
    roles = by_role()
    for web in roles["web"] + roles["supervisor"]:
        cmd = command(web)
        assert cmd[:2] == ["sh", "-c"]
        script = cmd[2]
        assert script.startswith("python manage.py migrate")
        serve = shlex.split(script.split("&&", 1)[1])
        port = int(serve[serve.index("--port") + 1])
        assert serve == web_command(port, host="0.0.0.0", python="python")
        assert set(published(web).values()) == {port}
        module, _, attribute = web_args(port)[-1].partition(":")  # what supervisor_project.web runs
        assert module_defines(module, attribute)


def test_management_commands_named_exist():
    assert (BASE_DIR / "manage.py").exists()
    assert (BASE_DIR / "workers/management/commands/runworker.py").exists()
    assert (BASE_DIR / "controller/management/commands/runsupervisor.py").exists()
    assert (BASE_DIR / "apps/management/commands/ensureadmin.py").exists()  # in the compose.yaml header


# -- Dockerfile ----------------------------------------------------------------------------------------------------


def test_the_image_is_python_311_slim_and_not_root():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_dockerfile_copies_files_that_exist_and_are_not_ignored():
    copies = [shlex.split(args) for keyword, args in dockerfile() if keyword == "COPY"]
    assert copies
    for parts in copies:
        for source in parts[:-1]:
            assert (BASE_DIR / source).exists(), f"COPY {source}: no such file"
            if source != ".":
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    for needed in ("manage.py", "requirements.txt", "supervisor_project", "workers", "apps", "environments", "templates"):
        assert (BASE_DIR / needed).exists()
        assert not ignored(needed), f"{needed} is excluded by .dockerignore"
    for excluded in (".venv", "storage", ".git"):
        assert ignored(excluded), f"{excluded} should not be sent to the build"


def test_the_requirements_are_installed_before_the_project_is_copied():
    instructions = dockerfile()
    install = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip install -r requirements.txt" in a)
    copy_requirements = next(i for i, (k, a) in enumerate(instructions) if k == "COPY" and "requirements.txt" in a)
    copy_all = next(i for i, (k, a) in enumerate(instructions) if k == "COPY" and shlex.split(a)[0] == ".")
    assert copy_requirements < install < copy_all


def test_the_default_command_serves_the_asgi_application_on_port_80():
    cmd = dockerfile_cmd()
    assert cmd == web_command(80, host="0.0.0.0", python="python") and "uvicorn" in requirement_names()
    assert ("EXPOSE", "80") in dockerfile()
    module, _, attribute = web_args(80)[-1].partition(":")  # what supervisor_project.web runs
    assert module_defines(module, attribute)
    assert not [args for keyword, args in dockerfile() if keyword == "ENTRYPOINT"]


def test_the_requirements_are_pinned_and_cover_every_role():
    lines = [
        line.split("#", 1)[0].strip()
        for line in (BASE_DIR / "requirements.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
    assert {"django", "uvicorn", "uvloop", "httptools", "a2wsgi", "redis", "rq", "django-rq", "psycopg", "django-environ"} <= requirement_names()


def test_the_image_carries_pg_dump_and_pg_restore_as_new_as_the_composed_postgresql():
    # A move (apps.moves) dumps and restores with them; older tools than the server refuse its dumps.
    [postgres] = [s for s in COMPOSE["services"].values() if str(s.get("image", "")).startswith("postgres:")]
    major = int(re.match(r"postgres:(\d+)", postgres["image"]).group(1))
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    installed = [int(v) for v in re.findall(r"postgresql-client-(\d+)", dockerfile)]
    assert installed and min(installed) >= major, (installed, major)
