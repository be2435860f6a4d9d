"""A real worker (uvicorn web + runworker agent) serving a hosted application's admin over real HTTP.

The test process plays the supervisor: it creates the application (password hashed with the default hashers, which
the worker uses) and starts it through the documented lifecycle, over Redis, to the real agent.
"""

import re
import time

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password

from apps import lifecycle
from apps.models import Application
from environments import mirror as registry_mirror
from exchange import contract, registry
from exchange.redis_client import supervisor_redis

from .conftest import free_port
from .factories import PASSWORD, create_application, enroll_test_key
from .processes import (
    http_ready,
    manage,
    own_postgres_databases,
    postgres_env,
    runworker,
    wait_for,
    web_process,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OWN_DATABASE = "appsup_it_web_env_a"


@pytest.fixture
def worker(tmp_path, redis_url):
    """Worker env_a: its own database migrated, then its web process and its agent."""
    with own_postgres_databases([OWN_DATABASE]):
        yield from _worker(tmp_path, redis_url)


def _worker(tmp_path, redis_url):
    port = free_port()
    env = worker_env("env_a", port, tmp_path / "env_a", redis_url, APP_HEARTBEAT_INTERVAL=1,
                     **postgres_env(OWN_DATABASE))
    manage(["migrate", "-v0"], env)
    processes = []
    try:
        processes.append(web_process(env, port, tmp_path / "web.log"))
        processes.append(runworker(env, tmp_path / "agent.log"))
        base = f"http://127.0.0.1:{port}"
        wait_for(http_ready(f"{base}/healthz"), what="the worker web")
        wait_for(lambda: "env_a" in registry.read(supervisor_redis()), what="the agent's registration")
        registry_mirror.sync(supervisor_redis())
        enroll_test_key("env_a")
        yield base, processes
    finally:
        for process in reversed(processes):
            process.stop()


def started_application(name):
    app = create_application(name, ["env_a"])
    # In-process tests hash with MD5; the worker checks passwords with the default hashers.
    password_hash = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    Application.objects.filter(pk=app.pk).update(admin_password_hash=password_hash)
    app.refresh_from_db()
    outcome = lifecycle.run(app, contract.START, timeout=90)
    assert outcome.ok, outcome.steps
    return app


def websocket_handshake_status(url):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def csrf_token(response):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text).group(1)


def test_hosted_admin_over_http_login_add_user_static_files_and_stop(worker):
    base, processes = worker
    app = started_application("crm")
    http = requests.Session()

    # The worker's own URLs: health, and no supervisor admin.
    assert requests.get(f"{base}/healthz", timeout=10).json()["environment"] == "env_a"
    assert requests.get(f"{base}/admin/", timeout=10).status_code == 404

    # Redirects carry the mount point.
    first = http.get(f"{base}/apps/crm/admin/", allow_redirects=False, timeout=10)
    assert first.status_code == 302
    assert first.headers["Location"] == "/apps/crm/admin/login/?next=/apps/crm/admin/"

    login = http.get(f"{base}{first.headers['Location']}", timeout=10)
    assert login.status_code == 200
    assert "Path=/apps/crm/" in login.headers["Set-Cookie"] and "csrftoken_crm=" in login.headers["Set-Cookie"]

    # Every static file the page links loads, below the mount point.
    assets = re.findall(r'(?:href|src)="(/[^"]*/static/[^"]+)"', login.text)
    assert assets and all(asset.startswith("/apps/crm/static/") for asset in assets)
    for asset in assets:
        assert http.get(f"{base}{asset}", timeout=10).status_code == 200, asset

    # Log in, as a browser does (it sends its Origin with a POST).
    done = http.post(f"{base}/apps/crm/admin/login/?next=/apps/crm/admin/",
                     data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": csrf_token(login)},
                     headers={"Origin": base}, allow_redirects=False, timeout=30)
    assert done.status_code == 302, done.text
    assert done.headers["Location"] == "/apps/crm/admin/"
    assert "sessionid_crm=" in done.headers["Set-Cookie"]

    # Add a user.
    form = http.get(f"{base}/apps/crm/admin/auth/user/add/", timeout=10)
    assert form.status_code == 200
    added = http.post(f"{base}/apps/crm/admin/auth/user/add/",
                      data={"username": "alice", "usable_password": "true", "password1": "alice-pass-123",
                            "password2": "alice-pass-123", "csrfmiddlewaretoken": csrf_token(form), "_save": "Save"},
                      headers={"Origin": base}, allow_redirects=False, timeout=30)
    assert added.status_code == 302, added.text
    assert re.fullmatch(r"/apps/crm/admin/auth/user/\d+/change/", added.headers["Location"])
    users = http.get(f"{base}/apps/crm/admin/auth/user/", timeout=10)
    assert ">alice</a>" in users.text and ">admin</a>" in users.text

    # Through the supervisor's proxy: the client's Host, the scheme it used; CSRF still passes.
    proxied = requests.Session()
    headers = {"Host": "localhost:14000", "X-Forwarded-Host": "localhost:14000", "X-Forwarded-Proto": "https"}
    page = proxied.get(f"{base}/apps/crm/admin/login/", headers=headers, timeout=10)
    via_proxy = proxied.post(f"{base}/apps/crm/admin/login/",
                             data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": csrf_token(page)},
                             headers={**headers, "Origin": "https://localhost:14000"}, allow_redirects=False,
                             timeout=30)
    assert via_proxy.status_code == 302, via_proxy.text

    # The hosted site has no WebSockets: refused at the handshake, not a crash.
    assert websocket_handshake_status(f"{base.replace('http', 'ws', 1)}/apps/crm/ws/") == 403

    # Stopped: the web process says so within a second or so, without being told.
    assert lifecycle.run(app, contract.STOP, timeout=60).ok
    stopped_at = time.monotonic()
    wait_for(lambda: http.get(f"{base}/apps/crm/admin/", timeout=10).status_code == 503, timeout=5,
             what="the stopped page")
    assert time.monotonic() - stopped_at < 2.5
    answer = http.get(f"{base}/apps/crm/admin/", headers={"Accept": "application/json"}, timeout=10)
    assert answer.json()["code"] == "stopped"

    web_log = processes[0].output()
    assert "Traceback" not in web_log, web_log


def test_a_status_write_is_in_force_on_the_very_next_request(worker, redis_url):
    """Events (exchange.events): the worker web drops its cached view when a status is written, so a stop is a 503
    on the very next request and a start a 200, well within the directory's one-second TTL."""
    import redis as redis_lib

    from exchange import status

    base, processes = worker
    started_application("crm")
    url = f"{base}/apps/crm/admin/login/"
    http = requests.Session()
    wait_for(lambda: http.get(url, timeout=10).status_code == 200, what="crm served")
    time.sleep(1)  # the web's listener subscribes on its first lookup
    plain = redis_lib.Redis.from_url(redis_url)
    misses = []
    for i in range(20):
        status.write(plain, "crm", "env_a", contract.STOPPED)
        stopped = http.get(url, timeout=10).status_code
        status.write(plain, "crm", "env_a", contract.RUNNING)
        running = http.get(url, timeout=10).status_code
        if (stopped, running) != (503, 200):
            misses.append((i, stopped, running))
    print(f"\n20 stop/start writes, each followed at once by a request: {len(misses)} misses")
    assert misses == []
    assert "Traceback" not in processes[0].output()
