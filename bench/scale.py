"""Figure 4, control-plane scale, and the supervisor's cost of processing heartbeats.

A supervisor-only setup per size (a database of its own: a temporary SQLite file, or with --postgres a PostgreSQL
database created for the run; a Redis database of its own on the cluster's Redis) with N environments registered in
Redis and 10×N applications, one placement each, each with a reported state in Redis. Seeded directly (bulk
INSERTs, one Redis pipeline), not through the API. A subprocess populates it and, in-process, counts each page's
queries and times the controller's mirror (``Controller.mirror``: where heartbeats and reported states reach the
database; pages only read) after every environment heartbeats, and whole controller passes, at both sizes.
Against the big one, a real supervisor web process (uvicorn, started the documented way) is timed over HTTP: every
admin list, the Open page, pages of GET /api/apps/ and GET /api/environments/ (the first and one far down, via the
cursor) and /metrics. ``measure`` runs in the orchestrator; ``main`` runs in the subprocesses.
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
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path

import requests

from supervisor_project.web import web_command

from .cluster import ROOT, port_free, run_json


def pages(n_envs):
    """Label -> path of what is timed, for N_ENVS environments (10× as many applications)."""
    return {
        "Environments admin": "/admin/environments/environment/",
        "Applications admin": "/admin/apps/application/",
        "Applications admin, needs attention": "/admin/apps/application/?attention=yes",
        "Applications admin, one environment": f"/admin/apps/application/?environment={env_name(n_envs // 2)}",
        "Applications admin, searched": "/admin/apps/application/?q=App+12",
        "Open page (admin's View site)": "/admin/apps/application/open/",
        "Open page, last page": f"/admin/apps/application/open/?p={n_envs * 10 // 100}",
        "GET /api/apps/ (a page of 1,000)": "/api/apps/?limit=1000",
        "GET /api/apps/ (the page after the middle, via the cursor)":
            f"/api/apps/?limit=1000&after={app_name(n_envs * 5)}",
        "GET /api/environments/ (a page of 1,000)": "/api/environments/?limit=1000",
        "GET /api/environments/ (the page after the middle, via the cursor)":
            f"/api/environments/?limit=1000&after={env_name(n_envs // 2)}",
        "GET /metrics": "/metrics",
    }


def env_name(i):
    return f"env{i:05d}"


def app_name(i):
    return f"app{i:06d}"


USERNAME, PASSWORD = "bench", "bench-password"
TOKEN = "bench-scale-0123456789abcdef0123"


DIALECTS = ("SQLite", "PostgreSQL")
# With --postgres: where the bench creates (and drops again) a database per size; never the CI's database.
POSTGRES = {"DB_HOST": "127.0.0.1", "DB_PORT": "5432", "DB_USER": "postgres", "DB_PASSWORD": ""}
POSTGRES_DATABASE = "appsup_bench"


def measure(cluster, quick, postgres=False):
    sizes = (1000, 100) if quick else (10000, 1000)  # environments; applications are 10× that
    repeats, heartbeat_repeats = (3, 3) if quick else (7, 5)
    out = {"sizes": sizes}
    for dialect in DIALECTS if postgres else DIALECTS[:1]:
        results, environs = {}, {}
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            # Small size first: the big one's database is the one the web process serves next.
            for db, envs in enumerate(reversed(sizes), start=5):
                env = cluster.django_environ()
                redis_url = cluster.state["redis_url"]
                redis_url += ("&" if "?" in redis_url else "?") + f"db={db}"
                env.update(APP_SUPERVISOR_REDIS_URL=redis_url, APP_COMMAND_REDIS_URL=redis_url, APP_STORAGE_DIR=tmp,
                           # The default interval, so environments stay online (timeout 260 s) for the whole run.
                           APP_HEARTBEAT_INTERVAL="120",
                           SUPERVISOR_API_TOKEN=TOKEN, ALLOWED_HOSTS="testserver,127.0.0.1,localhost")
                if dialect == "PostgreSQL":
                    env.update(POSTGRES, DB_DIALECT="postgres", DB_DATABASE=fresh_postgres_database(envs))
                else:
                    env.update(DB_DATABASE=str(Path(tmp) / f"scale-{envs}.sqlite3"))
                environs[envs] = env
                results[envs] = run_json("bench.scale", ["populate", str(envs), str(envs * 10),
                                                         str(heartbeat_repeats)], env)
            big, small = sizes
            try:
                http = measure_http(environs[big], Path(tmp), cluster.base_port + 500, big, repeats)
            finally:
                if dialect == "PostgreSQL":
                    for envs in sizes:
                        drop_postgres_database(envs)
        out[dialect] = {"big": results[big], "small": results[small], "http": http}
    return out


def _postgres_admin():
    import psycopg

    return psycopg.connect(host=POSTGRES["DB_HOST"], port=POSTGRES["DB_PORT"], user=POSTGRES["DB_USER"],
                           dbname="postgres", autocommit=True)


def fresh_postgres_database(envs):
    name = f"{POSTGRES_DATABASE}_{envs}"
    with _postgres_admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_postgres_database(envs):
    with _postgres_admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DATABASE}_{envs}" WITH (FORCE)')


# -- over HTTP, against the supervisor's web process (orchestrator) ----------------------------------------------


def measure_http(env, tmp, first_port, n_envs, repeats):
    paths = pages(n_envs)
    port = next(p for p in range(first_port, first_port + 100) if port_free(p))
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "web.log", "w")
    proc = subprocess.Popen(web_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, url, tmp / "web.log")
        admin = login(url)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {TOKEN}"
        session_of = {label: admin if path.startswith("/admin/") else api for label, path in paths.items()}

        def get(label):
            began = time.perf_counter()
            response = session_of[label].get(url + paths[label], timeout=300)  # reads the whole body
            ms = (time.perf_counter() - began) * 1000
            if response.status_code != 200 or response.url != url + paths[label]:
                raise RuntimeError(f"GET {paths[label]}: {response.status_code} at {response.url}")
            return ms, response

        for label in paths:  # warm up, and check that each page shows what it should
            _, response = get(label)
            check(paths[label], response, n_envs)
        times = {label: [] for label in paths}
        for _ in range(repeats):  # round robin over the pages
            for label in paths:
                times[label].append(get(label)[0])

    finally:
        stop(proc)
        log.close()
    return {"port": port, "repeats": repeats, "ms": {k: statistics.median(v) for k, v in times.items()}}


def check(path, response, n_envs):
    """The page lists what it should: a full page of the API, rows in the admin lists."""
    if path.startswith("/api/"):
        key = "apps" if path.startswith("/api/apps/") else "environments"
        listed = response.json()[key]
        following = response.json()["next"]
        if not listed or (len(listed) < 1000 and following) or (len(listed) == 1000 and not following and
                                                                  key == "apps" and n_envs * 10 > 1000):
            raise RuntimeError(f"GET {path} lists {len(listed)} {key} (and next={following!r})")
    elif path.startswith("/admin/") and "attention" not in path and 'data-live-' not in response.text:
        raise RuntimeError(f"GET {path} shows no rows")


def wait_healthy(proc, url, log_path, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web process exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the web process did not answer /healthz within {timeout} s: {log_path.read_text()[-2000:]}")


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


def report_all(redis, placements, now):
    """What the workers' reports of every placement leave in Redis (exchange.status.write's entries), in one
    pipeline."""
    from exchange import signing
    from exchange.contract import STATUSES_KEY, status_field

    pipe = redis.pipeline(transaction=False)
    for app, env, state in placements:
        entry = {"app": app, "environment": env, "state": state, "error": "", "traceback": "", "at": now}
        pipe.hset(STATUSES_KEY, status_field(app, env), signing.dumps(entry, signer=env))
    pipe.execute()


def bench_signing_keys(n_envs):
    """This process writes what N agents would, each signed with its own environment's key (exchange.keys): keys
    derived from the names, held here as the agents would each hold theirs."""
    import base64
    import hashlib

    from django.conf import settings

    own = dict(settings.APP_SIGNING_KEYS)
    for i in range(n_envs):
        own[env_name(i)] = base64.urlsafe_b64encode(hashlib.sha256(f"bench:{env_name(i)}".encode()).digest()).decode()
    settings.APP_SIGNING_KEYS = own
    return own


def populate(n_envs, n_apps, sync_repeats):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.models import Application, Placement
    from controller.loop import Controller
    from environments import enrollment
    from environments.models import Environment
    from exchange import contract, keys
    from exchange.redis_client import supervisor_redis

    began = time.perf_counter()
    call_command("migrate", verbosity=0)
    r = supervisor_redis()
    r.flushdb()
    now = timezone.now()
    signing_keys = bench_signing_keys(n_envs)
    Environment.objects.bulk_create(
        (Environment(name=env_name(i), url=f"http://127.0.0.1:{20000 + i}", version=contract.VERSION,
                     host="bench", pid=1000 + i, last_heartbeat_at=now,
                     public_keys=[keys.public_text(keys.private_key(signing_keys[env_name(i)]))])
         for i in range(n_envs)), batch_size=5000)
    enrollment.publish(r)
    envs = list(Environment.objects.order_by("pk"))
    heartbeat_all(r, envs, time.time())
    # One application in a hundred failed once and waits for a retry tomorrow: it needs attention, and the
    # controller leaves it alone during the bench.
    Application.objects.bulk_create(
        (Application(name=app_name(i), display_name=f"App {i}", desired_state=contract.RUNNING,
                     admin_username="boss", admin_password_hash="!unusable", attempts=int(i % 100 == 0),
                     next_attempt_at=now + timedelta(days=1) if i % 100 == 0 else None,
                     last_error="start failed on env00000: bench" if i % 100 == 0 else "")
         for i in range(n_apps)), batch_size=5000)
    apps = list(Application.objects.order_by("pk").values_list("pk", "name"))
    Placement.objects.bulk_create(
        (Placement(application_id=pk, environment=envs[i % len(envs)], position=0, state=contract.RUNNING,
                   state_at=now) for i, (pk, _) in enumerate(apps)), batch_size=5000)
    report_all(r, [(name, envs[i % len(envs)].name, contract.RUNNING) for i, (_, name) in enumerate(apps)],
               now.timestamp())
    get_user_model().objects.create_superuser(USERNAME, "bench@example.com", PASSWORD)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # What autovacuum does soon after a bulk load (PostgreSQL 13 and later vacuum after many inserts too):
            # statistics for the planner, and the visibility map that lets counts read an index alone.
            cursor.execute("VACUUM ANALYZE")
    seed_seconds = time.perf_counter() - began

    client = Client()
    client.force_login(get_user_model().objects.get(username=USERNAME))
    queries = {}
    for label, path in pages(n_envs).items():
        assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200, path  # warm up
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
        assert response.status_code == 200, (path, response.status_code)
        queries[label] = len(ctx.captured_queries)

    controller = Controller()
    controller.run_pass()  # warm up: the controller has held the lease, built the cache and mirrored before
    controller.run_pass()
    sync_ms, echo_ms = [], []
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
        # The next mirror reads back the events the last one published (one per heartbeat; see apps.mirror.Seen).
        began = time.perf_counter()
        controller.mirror()
        echo_ms.append((time.perf_counter() - began) * 1000)
    sync_queries = len(ctx.captured_queries)

    # Whole passes (lease, cache check, mirror, alerts, reconcile candidates, health), reconciling inline: after
    # all environments heartbeat, the pass after it, and with nothing new.
    pass_ms = {"heartbeats": [], "after": [], "idle": []}
    pass_queries = {}
    for _ in range(sync_repeats):
        for kind in pass_ms:
            if kind == "heartbeats":
                heartbeat_all(r, envs, time.time())
            with CaptureQueriesContext(connection) as ctx:
                began = time.perf_counter()
                assert controller.run_pass(), "the bench's controller does not hold the lease"
                pass_ms[kind].append((time.perf_counter() - began) * 1000)
            pass_queries[kind] = len(ctx.captured_queries)
    return {"envs": n_envs, "apps": n_apps, "seed_seconds": seed_seconds, "queries": queries,
            "sync_repeats": sync_repeats, "sync_ms": statistics.median(sync_ms), "sync_all_ms": sync_ms,
            "sync_queries": sync_queries, "echo_ms": statistics.median(echo_ms), "pass_ms": {k: statistics.median(v) for k, v in pass_ms.items()},
            "pass_queries": pass_queries}


def main():
    import django

    django.setup()
    print(json.dumps(populate(*map(int, sys.argv[2:5]))))


if __name__ == "__main__":
    main()
