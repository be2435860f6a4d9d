"""Figure 4, control-plane scale: a supervisor-only setup (temporary SQLite database, a Redis database of its own)
with N environments (registered in Redis) and 10×N applications with placements; times the Environments and
Applications admin changelists and GET /api/apps/ through Django's test Client, and counts their queries at two
sizes. ``measure`` runs in the orchestrator; ``main`` is one size, in its own process."""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .cluster import run_json

PAGES = {
    "Environments admin": "/admin/environments/environment/",
    "Applications admin": "/admin/apps/application/",
    "GET /api/apps/": "/api/apps/",
}


def measure(cluster, quick):
    sizes = (100, 10) if quick else (1000, 100)  # environments; applications are 10× that
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for db, envs in enumerate(sizes, start=5):
            env = cluster.django_environ()
            redis_url = cluster.state["redis_url"]
            redis_url += ("&" if "?" in redis_url else "?") + f"db={db}"
            env.update(APP_SUPERVISOR_REDIS_URL=redis_url, APP_COMMAND_REDIS_URL=redis_url,
                       DB_DATABASE=str(Path(tmp) / f"scale-{envs}.sqlite3"), APP_STORAGE_DIR=tmp,
                       SUPERVISOR_API_TOKEN="bench-scale", ALLOWED_HOSTS="testserver,127.0.0.1,localhost")
            results[envs] = run_json("bench.scale", [str(envs), str(envs * 10), "3" if quick else "7"], env)
    big, small = sizes
    return {"sizes": sizes, "big": results[big], "small": results[small]}


def main():
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from environments.models import Environment
    from apps.models import Application, Placement
    from supervisor_project import contract
    from supervisor_project.redis_client import supervisor_redis
    from django.utils import timezone

    n_envs, n_apps, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    call_command("migrate", verbosity=0)
    r = supervisor_redis()
    r.flushdb()
    now = timezone.now()
    envs = Environment.objects.bulk_create(
        Environment(name=f"env{i:04d}", url=f"http://127.0.0.1:{20000 + i}", version=contract.VERSION,
                    host="bench", pid=1000 + i, last_heartbeat_at=now) for i in range(n_envs))
    pipe = r.pipeline()
    t = time.time()
    for e in envs:
        pipe.hset(contract.ENVIRONMENTS_KEY, e.name, json.dumps({
            "name": e.name, "url": e.url, "proxy_url": "", "version": contract.VERSION, "host": "bench",
            "pid": e.pid, "heartbeat_at": t, "stopped_at": None}))
    pipe.execute()
    envs = list(Environment.objects.order_by("pk"))
    apps = Application.objects.bulk_create(
        Application(name=f"app{i:05d}", display_name=f"App {i}", desired_state=contract.RUNNING,
                    admin_username="boss", admin_password_hash="!unusable") for i in range(n_apps))
    apps = list(Application.objects.order_by("pk"))
    Placement.objects.bulk_create(
        Placement(application=a, environment=envs[i % len(envs)], position=0, state=contract.RUNNING, state_at=now)
        for i, a in enumerate(apps))
    get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    for path in PAGES.values():  # warm up (also fills the configuration cache)
        assert client.get(path).status_code == 200, path
    times = {label: [] for label in PAGES}
    queries = {}
    for _ in range(repeats):  # round robin over the pages
        for label, path in PAGES.items():
            with CaptureQueriesContext(connection) as ctx:
                began = time.perf_counter()
                response = client.get(path)
                if hasattr(response, "streaming_content"):
                    b"".join(response.streaming_content)
                else:
                    response.content
                times[label].append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (path, response.status_code)
            queries[label] = len(ctx.captured_queries)
    print(json.dumps({"envs": n_envs, "apps": n_apps, "repeats": repeats,
                      "ms": {k: statistics.median(v) for k, v in times.items()}, "queries": queries}))


if __name__ == "__main__":
    main()
