"""Figure 1, serving speed: a hosted application's pages straight from a worker and through the supervisor's proxy,
against a bare Django project, all in one run of alternating load runs.

The login page (a rendered Django view, what users mostly load) is measured from a bare Django project
(``bench.bare``) under gunicorn with 1 process and 8 threads (the reference), under uvicorn the way every role of
this project is served (Django's WSGI handler on 8 threads) and under uvicorn with Django's ASGI handler (the way
not taken); then straight from a worker and through the supervisor. The static file (whitenoise, from memory) is
where the worker's own work is smallest and the proxy's share largest. When nginx is installed, both pages are also
measured through nginx configured by ``manage.py exportproxy`` (bench.external). Every server is one process
(nginx: one worker process).
"""

import contextlib
import os
import statistics
import subprocess
import sys

import requests

from supervisor_project.web import web_args

from . import external, load
from .cluster import ROOT, free_port, wait_answering

APP = "bproxy"
LOGIN, STATIC = "admin/login/", "static/admin/css/base.css"
BARE_GUNICORN = "bare Django, gunicorn"
BARE_UVICORN = "bare Django, uvicorn"
BARE_ASGI = "bare Django, uvicorn, Django's ASGI handler"
WORKER, SUPERVISOR, NGINX = "worker", "supervisor", "nginx (exported configuration)"


def measure(cluster, quick):
    cluster.create_app(APP, ["env_a"])
    cluster.command(APP, "start")
    rounds, seconds = (3, 2.0) if quick else (5, 5.0)
    through = f"{cluster.url}/apps/{APP}/"
    direct = f"{cluster.env_url('env_a')}/apps/{APP}/"
    with bare_servers(cluster.storage) as bare, external.nginx(cluster) as nginx:
        login = {BARE_GUNICORN: bare[BARE_GUNICORN] + "/admin/login/", BARE_UVICORN: bare[BARE_UVICORN] + "/admin/login/",
                 BARE_ASGI: bare[BARE_ASGI] + "/admin/login/", WORKER: direct + LOGIN, SUPERVISOR: through + LOGIN}
        static = {WORKER: direct + STATIC, SUPERVISOR: through + STATIC}
        if nginx is not None:
            login[NGINX] = f"{nginx}/apps/{APP}/{LOGIN}"
            static[NGINX] = f"{nginx}/apps/{APP}/{STATIC}"
        return {"login page": alternate(login, rounds, seconds), "static file": alternate(static, rounds, seconds)}


def alternate(urls, rounds, seconds):
    """{"runs": {name: [load.run result per round]}, …}: every URL once per round, in turn (A B C A B C …)."""
    for url in urls.values():
        r = requests.get(url, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code}")
        load.run(url, seconds=1.0)  # warm up
    runs = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            runs[name].append(load.run(url, seconds=seconds))
    return {"urls": urls, "runs": runs, "rounds": rounds, "seconds": seconds, "tool": load.tool()}


def ratio(figure, a, b):
    """Median over rounds of A's requests/s ÷ B's (each pair taken in the same round)."""
    runs = figure["runs"]
    return statistics.median(x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b]))


def median(figure, name, key):
    return statistics.median(run[key] for run in figure["runs"][name])


def errors(figure):
    return sum(run["errors"] for runs in figure["runs"].values() for run in runs)


# -- the bare project --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def bare_servers(storage):
    """{name: base URL} of the bare project under each server, migrated into a SQLite file under STORAGE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DB_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="bench.bare.settings", BARE_DATABASE=str(storage / "bare.sqlite3"))
    subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    ports = {name: free_port() for name in (BARE_GUNICORN, BARE_UVICORN, BARE_ASGI)}
    commands = {
        BARE_GUNICORN: ["gunicorn", "--workers", "1", "--threads", "8", "--bind", f"127.0.0.1:{ports[BARE_GUNICORN]}",
                        "bench.bare.wsgi"],
        # The same server and options as every role's web process (supervisor_project.web.web_args).
        BARE_UVICORN: ["uvicorn", *web_args(ports[BARE_UVICORN], application="bench.bare.asgi:application")],
        BARE_ASGI: ["uvicorn", *web_args(ports[BARE_ASGI], application="bench.bare.asgi:django_asgi")],
    }
    processes = []
    try:
        for name, args in commands.items():
            log = open(storage / f"bare-{ports[name]}.log", "w")
            processes.append(subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for url, process in zip(urls.values(), processes):
            wait_answering(url + "/admin/login/", process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
