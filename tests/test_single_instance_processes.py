"""A single instance as a new user runs it: APP_MODE unset, no Redis configured, `manage.py migrate`, then one
web process (uvicorn). And the embedded Redis of a supervisor without a Redis URL, which must stop with its process."""

import contextlib
import os
import re
import signal
from pathlib import Path

import pytest
import requests

from .conftest import free_port
from .factories import PASSWORD
from .processes import (
    PYTHON,
    Process,
    base_env,
    environment_key,
    http_ready,
    manage,
    own_postgres_databases,
    postgres_env,
    wait_for,
    web_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKEN = "single-instance-process-token-01"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATABASE = "appsup_single_instance"


def env_without_redis(storage, **extra):
    """The documented variables only: no APP_SUPERVISOR_REDIS_URL, APP_COMMAND_REDIS_URL, APP_SHARED_SECRET."""
    env = base_env(storage, "", SUPERVISOR_API_TOKEN=TOKEN, **postgres_env(DATABASE))
    for name in ("APP_SUPERVISOR_REDIS_URL", "APP_COMMAND_REDIS_URL", "APP_SHARED_SECRET"):
        env.pop(name)
    env.update(extra)
    if env.get("APP_MODE") == "worker":  # a worker holds its own key, never the supervisor's
        env.pop("APP_SUPERVISOR_KEY", None)
        env.setdefault("APP_ENVIRONMENT_KEY", environment_key(env["ENVIRONMENT_NAME"]))
    return env


def redis_servers_under(path):
    """Pids of the redis-server processes working in PATH (the embedded Redis runs in APP_STORAGE_DIR/redis)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "redis-server" and \
                    os.readlink(entry / "cwd").startswith(str(path)):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@contextlib.contextmanager
def stopped_with_sigterm(process):
    """Run the block with PROCESS, then stop it as a deployment does: SIGTERM, and it must exit 0."""
    try:
        yield process
    finally:
        process.signal(signal.SIGTERM)
        code = process.wait(20)
        output = process.output()
        process.stop()
    assert code == 0, output


def serving(env, tmp_path, log_name):
    """A web process of ENV, once it answers; its base URL is ``.base``."""
    port = free_port()
    web = web_process(env, port, tmp_path / log_name)
    web.base = f"http://127.0.0.1:{port}"
    try:
        wait_for(http_ready(f"{web.base}/healthz"), timeout=30, what=f"{log_name} to serve")
    except BaseException:
        web.stop()
        raise
    return stopped_with_sigterm(web)


@pytest.fixture
def database():
    with own_postgres_databases([DATABASE]):
        yield


def test_one_web_process_without_redis_creates_starts_serves_and_stops_an_application_on_local(tmp_path, database):
    storage = tmp_path / "single"
    env = env_without_redis(storage)
    env.pop("APP_MODE")  # unset, as a new user leaves it
    manage(["migrate", "--verbosity", "0"], env)
    with serving(env, tmp_path, "single.log") as web:
        base = web.base
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200

        environments = requests.get(f"{base}/api/environments/", headers=AUTH, timeout=5).json()["environments"]
        assert [(e["name"], e["status"]) for e in environments] == [("local", "online")]

        created = requests.post(f"{base}/api/apps/", headers=AUTH, timeout=10, json={
            "name": "crm", "display_name": "CRM", "admin_username": "boss", "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        assert created.json()["environments"] == ["local"]

        started = requests.post(f"{base}/api/apps/crm/start", headers=AUTH, timeout=120)
        assert started.status_code == 200, started.text
        assert started.json()["statuses"]["local"]["state"] == "running"

        browser = requests.Session()
        login = browser.get(f"{base}/apps/crm/admin/", timeout=10)  # to the application's own login page
        assert login.status_code == 200 and login.url.startswith(f"{base}/apps/crm/admin/login/"), login.text[:300]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        admin = browser.post(login.url, timeout=10, data={
            "username": "boss", "password": PASSWORD, "csrfmiddlewaretoken": token})
        assert admin.status_code == 200 and admin.url == f"{base}/apps/crm/admin/", admin.text[:300]
        assert "Site administration" in admin.text

        stopped = requests.post(f"{base}/api/apps/crm/stop", headers=AUTH, timeout=60)
        assert stopped.status_code == 200, stopped.text
        assert browser.get(f"{base}/apps/crm/admin/", timeout=10).status_code == 503

        assert not (storage / "redis").exists()
        assert redis_servers_under(storage) == []


def test_a_restarted_single_instance_serves_what_was_running(tmp_path, database):
    storage = tmp_path / "single"
    env = env_without_redis(storage)
    env.pop("APP_MODE")
    manage(["migrate", "--verbosity", "0"], env)
    for attempt in (1, 2):
        with serving(env, tmp_path, f"single-{attempt}.log") as web:
            base = web.base
            if attempt == 1:
                assert requests.post(f"{base}/api/apps/", headers=AUTH, timeout=10, json={
                    "name": "crm", "admin_username": "boss", "admin_password": PASSWORD}).status_code == 201
                assert requests.post(f"{base}/api/apps/crm/start", headers=AUTH, timeout=120).status_code == 200
            assert requests.get(f"{base}/apps/crm/admin/login/", timeout=10).status_code == 200


def test_the_embedded_redis_of_a_supervisor_without_a_redis_url_stops_with_its_web_process(tmp_path, database):
    storage = tmp_path / "supervisor"
    env = env_without_redis(storage, APP_MODE="supervisor", APP_SHARED_SECRET="x" * 32)
    manage(["migrate", "--verbosity", "0"], env)
    with serving(env, tmp_path, "supervisor.log") as web:
        base = web.base
        # Creating an application reads the environments' registrations: the first request that needs Redis.
        response = requests.post(f"{base}/api/apps/", headers=AUTH, timeout=30, json={
            "name": "crm", "environments": ["env_a"], "admin_username": "boss", "admin_password": PASSWORD})
        assert response.status_code == 400, response.text  # no such environment; Redis was asked all the same
        assert redis_servers_under(storage), "the embedded Redis did not start"
    wait_for(lambda: redis_servers_under(storage) == [], timeout=10, what="the embedded Redis to stop")


@pytest.mark.parametrize("role", ["runsupervisor", "runworker"])
def test_the_embedded_redis_stops_with_the_controller_or_agent_that_started_it(tmp_path, database, role):
    storage = tmp_path / role
    extra = {"APP_MODE": "supervisor"} if role == "runsupervisor" else {
        "APP_MODE": "worker", "ENVIRONMENT_NAME": "env_a", "ENVIRONMENT_URL": "http://127.0.0.1:9"}
    env = env_without_redis(storage, APP_SHARED_SECRET="x" * 32, **extra)
    manage(["migrate", "--verbosity", "0"], env)
    args = ["manage.py", role] + (["--no-web-probe"] if role == "runworker" else [])
    with stopped_with_sigterm(Process([PYTHON, *args], env, tmp_path / f"{role}.log")) as process:
        ready = "holds the lease" if role == "runsupervisor" else "registered"  # its signal handlers are in place
        wait_for(lambda: ready in process.output(), timeout=30, what=f"{role} to run")
        assert redis_servers_under(storage)
    wait_for(lambda: redis_servers_under(storage) == [], timeout=10, what="the embedded Redis to stop")


def test_a_single_instance_offers_no_command_queue_dashboard(tmp_path):
    # It runs commands in its own process: the RQ dashboard would only say that Redis does not answer.
    env = env_without_redis(tmp_path / "single")
    env.pop("APP_MODE")
    shown = manage(["shell", "-c", "from django.contrib import admin; from django_rq.models import Dashboard; "
                    "print(admin.site.is_registered(Dashboard))"], env)
    assert shown.stdout.strip().splitlines()[-1] == "False"
