"""The exported data plane: nginx, configured by ``manage.py exportproxy``, in front of the bench cluster.
bench.proxy measures the hosted pages through it beside the supervisor's proxy and the worker, in the same
alternating runs: what the Python proxy costs, and what an operator gets by exporting to nginx.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys

from proxy import nginx as nginx_config

from .cluster import ROOT, free_port, wait_answering

APP = "bproxy"  # bench.proxy's application, running when this starts
LOGIN = "admin/login/"


@contextlib.contextmanager
def nginx(cluster):
    """The base URL of nginx serving the cluster's exported routing (the proxy figure's application running), or
    None when nginx is not installed."""
    binary = shutil.which("nginx")
    if binary is None:
        yield None
        return
    prefix = cluster.storage / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
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
        wait_answering(f"{base}/apps/{APP}/{LOGIN}", process, timeout=15)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()
