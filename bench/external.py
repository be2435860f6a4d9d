"""The exported data plane: a hosted app's pages through nginx, configured by ``manage.py exportproxy``, vs straight
from the worker. The same pages, load and alternating A/B runs as the proxy cost (bench/proxy.py), so the two
figures read side by side: what the Python proxy costs, and what an operator gets by exporting to nginx.

``measure`` returns None when nginx is not installed; otherwise bench.proxy's dict for each page, with "proxy"
meaning nginx here: {label: {"path", "ratio" (nginx rps ÷ direct rps), "rps_proxy", "rps_direct", "p50_proxy",
"p50_direct", "p99_proxy", "p99_direct" (ms), "errors", "rounds", "seconds", "tool"}}.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import requests

from proxy import nginx as nginx_config

from . import proxy
from .cluster import ROOT, port_free

APP = proxy.APP


def measure(cluster, quick):
    binary = shutil.which("nginx")
    if binary is None:
        return None
    _running_app(cluster)
    prefix = cluster.storage / "nginx"
    prefix.mkdir(exist_ok=True)
    port = _free_port()
    include = prefix / "appsup.conf"
    done = subprocess.run(
        [sys.executable, "manage.py", "exportproxy", "--output", str(include), "--supervisor-upstream", cluster.url,
         "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, env=cluster.django_environ(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"exportproxy failed ({done.returncode}): {done.stderr[-2000:]}")
    if f"\n    {APP} appsup_env_" not in include.read_text():
        raise RuntimeError(f"the export does not route {APP}: {done.stderr.strip()}")
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config.standalone(include, prefix, listen_user_root=os.geteuid() == 0))
    log = open(prefix / "nginx.out", "w")
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base + f"/apps/{APP}/{proxy.PAGES['login page']}", process)
        rounds, seconds = (3, 2.0) if quick else (5, 5.0)
        # bench.proxy's comparison, with nginx where the supervisor was.
        through_nginx = SimpleNamespace(url=base, env_url=cluster.env_url)
        return {label: proxy._compare(through_nginx, f"/apps/{APP}/{path}", rounds, seconds)
                for label, path in proxy.PAGES.items()}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


def _running_app(cluster):
    """The proxy figure's application, created and started unless that figure already did."""
    if cluster.api("GET", f"apps/{APP}/").status_code == 404:
        cluster.create_app(APP, ["env_a"])
    cluster.command(APP, "start")


def _free_port(start=39000):
    for port in range(start, start + 500):
        if port_free(port):
            return port
    raise RuntimeError("no free port for nginx")


def _wait_for(url, process, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited ({process.returncode})")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 through nginx")
