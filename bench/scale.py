"""Figure 4, control-plane scale, and the supervisor's cost of processing heartbeats.

A supervisor-only setup per size (temporary SQLite database, a Redis database of its own on the cluster's Redis)
with N environments registered in Redis and 10×N applications, one placement each. A subprocess populates it and,
in-process, counts each page's queries and times the controller's mirror (``Controller.mirror``: where heartbeats
and reported states reach the database; pages only read) after every environment heartbeats, at both sizes.
Against the big one, a real supervisor web process (daphne, started the documented way) is timed over HTTP: the
Environments and Applications admin changelists and GET /api/apps/. ``measure`` runs in the orchestrator; ``main`` runs in the subprocesses.
"""

import contextlib
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from datetime import timezone as dt_timezone
from pathlib import Path

import requests

from .cluster import ROOT, port_free, run_json

PAGES = {
    "Environments admin": "/admin/environments/environment/",
    "Applications admin": "/admin/apps/application/",
    "GET /api/apps/ (a page of 1,000)": "/api/apps/?limit=1000",
}
USERNAME, PASSWORD = "bench", "bench-password"
TOKEN = "bench-scale"


def measure(cluster, quick):
    sizes = (100, 10) if quick else (1000, 100)  # environments; applications are 10× that
    repeats, heartbeat_repeats = (3, 3) if quick else (7, 5)
    results, environs = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        # Small size first: the big one's database is the one daphne serves next.
        for db, envs in enumerate(reversed(sizes), start=5):
            env = cluster.django_environ()
            redis_url = cluster.state["redis_url"]
            redis_url += ("&" if "?" in redis_url else "?") + f"db={db}"
            env.update(APP_SUPERVISOR_REDIS_URL=redis_url, APP_COMMAND_REDIS_URL=redis_url,
                       DB_DATABASE=str(Path(tmp) / f"scale-{envs}.sqlite3"), APP_STORAGE_DIR=tmp,
                       # The default interval, so environments stay online (timeout 260 s) for the whole run.
                       APP_HEARTBEAT_INTERVAL="120",
                       SUPERVISOR_API_TOKEN=TOKEN, ALLOWED_HOSTS="testserver,127.0.0.1,localhost")
            environs[envs] = env
            results[envs] = run_json("bench.scale", ["populate", str(envs), str(envs * 10), str(heartbeat_repeats)],
                                     env)
        big, small = sizes
        http = measure_http(environs[big], Path(tmp), cluster.base_port + 500, big, repeats)
    return {"sizes": sizes, "big": results[big], "small": results[small], "http": http}


# -- over HTTP, against daphne (orchestrator) -------------------------------------------------------------------


def measure_http(env, tmp, first_port, n_envs, repeats):
    port = next(p for p in range(first_port, first_port + 100) if port_free(p))
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "daphne.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "supervisor_project.asgi:application"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, url, tmp / "daphne.log")
        admin = login(url)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {TOKEN}"
        session_of = {label: api if path.startswith("/api/") else admin for label, path in PAGES.items()}

        def get(label):
            began = time.perf_counter()
            response = session_of[label].get(url + PAGES[label], timeout=300)  # reads the whole body
            ms = (time.perf_counter() - began) * 1000
            if response.status_code != 200 or response.url != url + PAGES[label]:
                raise RuntimeError(f"GET {PAGES[label]}: {response.status_code} at {response.url}")
            return ms, response

        for label in PAGES:  # warm up
            _, response = get(label)
            if path_is_api(label) and len(response.json()["apps"]) != min(n_envs * 10, 1000):
                raise RuntimeError(f"GET /api/apps/ lists {len(response.json()['apps'])} apps, "
                                   f"not {min(n_envs * 10, 1000)}")
        times = {label: [] for label in PAGES}
        for _ in range(repeats):  # round robin over the pages
            for label in PAGES:
                times[label].append(get(label)[0])

    finally:
        stop(proc)
        log.close()
    return {"port": port, "repeats": repeats, "ms": {k: statistics.median(v) for k, v in times.items()}}


def path_is_api(label):
    return PAGES[label].startswith("/api/")


def wait_healthy(proc, url, log_path, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"daphne did not answer /healthz within {timeout} s: {log_path.read_text()[-2000:]}")


def login(url):
    """A session logged in through the admin's login form, as a browser would."""
    session = requests.Session()
    form = session.get(url + "/admin/login/", timeout=30)
    form.raise_for_status()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    if "csrftoken" not in session.cookies:
        raise RuntimeError("the admin login page set no csrftoken cookie")
    done = session.post(url + "/admin/login/", timeout=30, data={
        "csrfmiddlewaretoken": token, "username": USERNAME, "password": PASSWORD, "next": "/admin/"})
    if done.status_code != 200 or done.url != url + "/admin/" or "sessionid" not in session.cookies:
        raise RuntimeError(f"admin login failed: {done.status_code} at {done.url}")
    return session


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- in-process (subprocesses with Django set up) ---------------------------------------------------------------


def heartbeat_all(redis, environments, now):
    """What N agents' heartbeats do to Redis (registry.announce each), sent in one pipeline."""
    from exchange import registry

    pipe = redis.pipeline(transaction=False)
    for e in environments:
        registry.announce(pipe, {"name": e.name, "url": e.url, "proxy_url": e.proxy_url, "version": e.version,
                                 "host": e.host, "pid": e.pid}, now=now)
    pipe.execute()


def populate(n_envs, n_apps, sync_repeats):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.models import Application, Placement
    from controller.loop import Controller
    from environments.models import Environment
    from exchange import contract
    from exchange.redis_client import supervisor_redis

    call_command("migrate", verbosity=0)
    r = supervisor_redis()
    r.flushdb()
    now = timezone.now()
    Environment.objects.bulk_create(
        Environment(name=f"env{i:04d}", url=f"http://127.0.0.1:{20000 + i}", version=contract.VERSION,
                    host="bench", pid=1000 + i, last_heartbeat_at=now) for i in range(n_envs))
    envs = list(Environment.objects.order_by("pk"))
    heartbeat_all(r, envs, time.time())
    Application.objects.bulk_create(
        Application(name=f"app{i:05d}", display_name=f"App {i}", desired_state=contract.RUNNING,
                    admin_username="boss", admin_password_hash="!unusable") for i in range(n_apps))
    apps = list(Application.objects.order_by("pk"))
    Placement.objects.bulk_create(
        Placement(application=a, environment=envs[i % len(envs)], position=0, state=contract.RUNNING, state_at=now)
        for i, a in enumerate(apps))
    get_user_model().objects.create_superuser(USERNAME, "bench@example.com", PASSWORD)

    client = Client()
    client.force_login(get_user_model().objects.get(username=USERNAME))
    queries = {}
    for label, path in PAGES.items():
        assert client.get(path).status_code == 200, path  # warm up
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(path)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
        assert response.status_code == 200, (path, response.status_code)
        queries[label] = len(ctx.captured_queries)

    controller = Controller()
    controller.mirror()  # warm up: the controller has mirrored before
    sync_ms = []
    for _ in range(sync_repeats):
        at = time.time()
        heartbeat_all(r, envs, at)
        with CaptureQueriesContext(connection) as ctx:
            began = time.perf_counter()
            controller.mirror()
            sync_ms.append((time.perf_counter() - began) * 1000)
        since = datetime.fromtimestamp(at, dt_timezone.utc)
        mirrored = Environment.objects.filter(last_heartbeat_at__gte=since).count()
        assert mirrored == n_envs, f"the controller mirrored {mirrored} of {n_envs} heartbeats"
    return {"envs": n_envs, "apps": n_apps, "queries": queries, "sync_repeats": sync_repeats,
            "sync_ms": statistics.median(sync_ms), "sync_all_ms": sync_ms, "sync_queries": len(ctx.captured_queries)}


def main():
    import django

    django.setup()
    print(json.dumps(populate(*map(int, sys.argv[2:5]))))


if __name__ == "__main__":
    main()
