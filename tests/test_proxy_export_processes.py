"""The exported nginx configuration at work: a real nginx with the file ``manage.py exportproxy`` wrote, in front of
stand-in workers (what it forwards, and to whom), then in front of a local cluster (a hosted admin through nginx)."""

import hashlib
import http.client
import json
import os
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest
import requests
from websockets.sync.client import connect as ws_connect

from exchange import registry, status
from proxy import export, nginx

from .conftest import free_port
from .local_cluster import Cluster
from .processes import Process, http_ready, manage, wait_for
from .proxy_upstreams import EchoUpstream, WebSocketEcho, header
from .test_proxy_export import NGINX, configure

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"),
]

PASSWORD = "correct-horse-battery"
WITHHELD = {"sessionid", "csrftoken", "django_language", "messages"}


@contextmanager
def running_nginx(tmp_path, text):
    """nginx serving TEXT (an exported file) on a free port of 127.0.0.1; yields its base URL. The file's listen
    line is replaced by that port, as an operator's own listen would be."""
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir(exist_ok=True)
    include = prefix / "appsup.conf"
    include.write_text("\n".join(f"    listen 127.0.0.1:{port};" if line.startswith("    listen ") else line
                                 for line in text.splitlines()) + "\n")
    conf = prefix / "nginx.conf"
    conf.write_text(nginx.standalone(include, prefix, listen_user_root=os.geteuid() == 0))
    checked = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    process = Process([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")], os.environ,
                      prefix / "nginx.out")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(port), timeout=15, what="nginx")
        yield base
    finally:
        process.stop()


def _answers(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        return True
    except OSError:
        return False


def raw_get(base, target, headers=None):
    """GET TARGET exactly as written (no client-side normalisation of dot segments); the decoded JSON echo."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", target, headers=headers or {})
    response = conn.getresponse()
    return json.loads(response.read())


@pytest.mark.django_db
def test_nginx_confines_a_workers_cookies_and_bounds_request_heads(r, tmp_path):
    with EchoUpstream("S") as sup, EchoUpstream("A") as a:
        registry.announce(r, {"name": "env_a", "url": a.url, "version": "1", "host": "h", "pid": 1})
        configure(r, {"crm": ["env_a"]})
        status.write(r, "crm", "env_a", "running")
        text = nginx.render(export.collect(r, export.supervisor_upstream(sup.url)), withheld_cookies=WITHHELD,
                            head_timeout=2)
        with running_nginx(tmp_path, text) as base:
            response = requests.get(f"{base}/apps/crm/cookies", timeout=10, params={"set": [
                "theme=dark; Path=/", "wide=1; Domain=.example.com; Path=/apps/crm/", "cart=7; Path=/apps/crm/x/"]})
            assert response.raw.headers.getlist("Set-Cookie") == [
                "theme=dark; Path=/apps/crm/", "wide=1; Domain=127.0.0.1; Path=/apps/crm/", "cart=7; Path=/apps/crm/x/"]

            port = int(base.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /apps/crm/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.1 400 ")  # nginx's "Request Header Or Cookie Too Large"
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(b"GET /apps/crm/ HTTP/1.1\r\nHost: x\r\n")
                while sock.recv(65536):
                    pass
                assert time.monotonic() - started < 5
        assert len(a.requests) == 1  # neither bounded request reached the worker


@pytest.mark.django_db
def test_nginx_forwards_what_the_proxy_forwards_to_whom_it_would(r, tmp_path):
    with EchoUpstream("S") as sup, EchoUpstream("A") as a, EchoUpstream("B") as b, WebSocketEcho() as ws:
        registry.announce(r, {"name": "env_a", "url": "http://worker-a.example:15000", "proxy_url": a.url,
                              "version": "1", "host": "h", "pid": 1})
        registry.announce(r, {"name": "env_b", "url": b.url, "version": "1", "host": "h", "pid": 1})
        registry.announce(r, {"name": "env_ws", "url": ws.url, "version": "1", "host": "h", "pid": 1})
        configure(r, {"crm": ["env_a"], "idle": ["env_a"], "shop": ["env_a", "env_b"], "chat": ["env_ws"]})
        for app, env in (("crm", "env_a"), ("shop", "env_a"), ("shop", "env_b"), ("chat", "env_ws")):
            status.write(r, app, env, "running")
        text = nginx.render(export.collect(r, export.supervisor_upstream(sup.url)), withheld_cookies=WITHHELD)

        with running_nginx(tmp_path, text) as base:
            host = base.removeprefix("http://")
            # Straight to the one environment, path and query as sent; the supervisor's cookies withheld.
            cookies = "sessionid=x; sessionid_crm=y; csrftoken=z; appsup_env=env_b; other=1"
            echo = requests.get(f"{base}/apps/crm/admin/?q=%2F1", headers={"Cookie": cookies}, timeout=10).json()
            assert (echo["server"], echo["target"]) == ("A", "/apps/crm/admin/?q=%2F1")
            assert header(echo, "Cookie") == ["sessionid_crm=y; other=1"]
            assert header(echo, "Host") == [host] and header(echo, "X-Forwarded-Host") == [host]
            echo = requests.get(f"{base}/apps/crm/", headers={"X-Forwarded-For": "10.9.9.9"}, timeout=10).json()
            assert header(echo, "X-Forwarded-For") == ["10.9.9.9, 127.0.0.1"]
            assert header(echo, "X-Forwarded-Proto") == ["http"]
            assert header(requests.get(f"{base}/apps/crm/", headers={"Cookie": "sessionid=x"}, timeout=10).json(),
                          "Cookie") == []

            # A big upload arrives whole; a redirect naming the worker comes back naming nginx's host.
            data = os.urandom(5 * 1024 * 1024)
            echo = requests.post(f"{base}/apps/crm/upload/", data=data, timeout=30).json()
            assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()
            for worker_url in ("http://worker-a.example:15000", a.url):
                moved = requests.get(f"{base}/apps/crm/redirect", params={"to": f"{worker_url}/apps/crm/x/"},
                                     allow_redirects=False, timeout=10)
                assert moved.headers["Location"] == f"{base}/apps/crm/x/"

            # Several environments: the remembered one; no choice, or a choice being made, is the supervisor's.
            assert requests.get(f"{base}/apps/shop/", cookies={"appsup_env": "env_b"}, timeout=10).json()["server"] == "B"
            assert requests.get(f"{base}/apps/shop/", cookies={"appsup_env": "env_a"}, timeout=10).json()["server"] == "A"
            chooser = requests.get(f"{base}/apps/shop/", timeout=10).json()
            assert chooser["server"] == "S" and header(chooser, "Cookie") == []
            picked = requests.get(f"{base}/apps/shop/x/?a=1&_env=env_b", cookies={"appsup_env": "env_a"},
                                  timeout=10).json()
            assert (picked["server"], picked["target"]) == ("S", "/apps/shop/x/?a=1&_env=env_b")
            assert header(picked, "Cookie") == ["appsup_env=env_a"]  # the supervisor gets its own cookies
            assert raw_get(base, "/apps/crm/?%5Fenv=env_a")["server"] == "S"

            # Not running, unknown, or not a plain path: the supervisor answers (503, 404, 400).
            for target in ("/apps/idle/", "/apps/nope/", "/apps/crm", "/apps/crm/../shop/", "/apps/crm/%2e%2e/x",
                           "/apps/crm//x", "/apps/CRM/", "/admin/login/"):
                echo = raw_get(base, target)
                assert (echo["server"], echo["target"]) == ("S", target)

            # A WebSocket, both ways.
            with ws_connect(base.replace("http://", "ws://") + "/apps/chat/socket/") as socket:
                assert json.loads(socket.recv(timeout=10))["path"] == "/apps/chat/socket/"
                socket.send("ping")
                assert socket.recv(timeout=10) == "ping"


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        for name in ("crm", "idle"):
            created = c.api("POST", "apps/", json={"name": name, "display_name": f"{name.upper()} hosted",
                                                   "environments": ["env_a"], "admin_username": "boss",
                                                   "admin_password": PASSWORD})
            assert created.status_code == 201, created.text
        assert c.api("POST", "apps/crm/start").status_code == 200
        yield c
    finally:
        c.stop()


@pytest.mark.django_db(transaction=True)
def test_a_hosted_admin_through_nginx_exported_from_a_running_cluster(cluster, tmp_path):
    output = tmp_path / "appsup.conf"
    done = manage(["exportproxy", "--output", str(output), "--supervisor-upstream", cluster.base],
                  cluster.supervisor_env)
    assert "1 application routed by nginx to 1 environment" in done.stderr
    assert "application idle (not running: stopped on env_a)" in done.stderr

    with running_nginx(tmp_path, output.read_text()) as base:
        hosted = requests.get(f"{base}/apps/crm/admin/login/", timeout=30)
        assert hosted.status_code == 200 and "CRM hosted" in hosted.text and "App Supervisor" not in hosted.text
        stopped = requests.get(f"{base}/apps/idle/admin/login/", timeout=30)
        assert stopped.status_code == 503 and "IDLE hosted is stopped" in stopped.text
        supervisor = requests.get(f"{base}/admin/login/", timeout=30)
        assert supervisor.status_code == 200 and "App Supervisor" in supervisor.text
        assert http_ready(f"{base}/healthz")()
