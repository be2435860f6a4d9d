"""The access proxy end to end, as deployed: the supervisor web started the documented way (uvicorn on
supervisor_project.asgi:application, APP_MODE=supervisor, configured by environment variables), stand-in workers
registered through Redis, real HTTP and WebSocket clients."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect as ws_connect

from apps import cache
from apps.models import Application
from exchange import contract, status

from .conftest import free_port
from .factories import create_application, register_environment
from .processes import base_env, http_ready, wait_for, web_process
from .proxy_upstreams import EchoUpstream, WebSocketEcho, header

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def workers():
    with EchoUpstream("A") as a, EchoUpstream("B") as b, WebSocketEcho() as ws:
        yield a, b, ws


@pytest.fixture
def supervisor(tmp_path, redis_url):
    port = free_port()
    env = base_env(tmp_path / "supervisor", redis_url, APP_MODE="supervisor", APP_PROXY_READ_TIMEOUT="1",
                   APP_PROXY_CONNECT_TIMEOUT="2")
    process = web_process(env, port, tmp_path / "supervisor.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(http_ready(f"{base}/apps/"), what="the supervisor web")
        process.base = base
        yield process
    finally:
        process.stop()


def publish(r, name, environments, states):
    app = create_application(name, environments)
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    for env, state in states.items():
        status.write(r, name, env, state)


def test_the_supervisor_proxies_applications_to_their_environments(supervisor, workers, r):
    a, b, ws = workers
    register_environment("env_a", url="http://worker-a.example:15000", proxy_url=a.url)
    register_environment("env_b", url=b.url)
    register_environment("env_ws", url=ws.url)
    register_environment("env_dead", url=f"http://127.0.0.1:{free_port()}")
    publish(r, "crm", ["env_a"], {"env_a": contract.RUNNING})
    publish(r, "shop", ["env_a", "env_b"], {"env_a": contract.RUNNING, "env_b": contract.RUNNING})
    publish(r, "chat", ["env_ws"], {"env_ws": contract.RUNNING})
    publish(r, "off", ["env_b"], {"env_b": contract.STOPPED})
    publish(r, "lost", ["env_dead"], {"env_dead": contract.RUNNING})
    base = supervisor.base
    host = base.removeprefix("http://")

    # Straight through to the one environment, through its proxy URL, path and query as sent.
    echo = requests.get(f"{base}/apps/crm/admin/?q=%2F1", headers={"Cookie": "sessionid=x; sessionid_crm=y"},
                        timeout=10).json()
    assert (echo["server"], echo["target"]) == ("A", "/apps/crm/admin/?q=%2F1")
    assert header(echo, "Host") == [host] and header(echo, "X-Forwarded-Host") == [host]
    assert header(echo, "X-Forwarded-For") == ["127.0.0.1"] and header(echo, "Cookie") == ["sessionid_crm=y"]

    # An upload arrives whole.
    data = os.urandom(5 * 1024 * 1024)
    echo = requests.post(f"{base}/apps/crm/upload/", data=data, timeout=30).json()
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()

    # The worker's own address in a redirect comes back as the supervisor's.
    moved = requests.get(f"{base}/apps/crm/redirect", params={"to": "http://worker-a.example:15000/apps/crm/x/"},
                         allow_redirects=False, timeout=10)
    assert moved.headers["Location"] == f"{base}/apps/crm/x/"

    # Two environments: a choice page, then the choice, remembered.
    session = requests.Session()
    choose = session.get(f"{base}/apps/shop/", timeout=10)
    assert choose.status_code == 300 and "?_env=env_b" in choose.text
    assert session.get(f"{base}/apps/shop/?_env=env_b", timeout=10).json()["server"] == "B"
    assert session.get(f"{base}/apps/shop/later/", timeout=10).json()["server"] == "B"

    # The pages that say why not.
    assert requests.get(f"{base}/apps/nope/", timeout=10).status_code == 404
    off = requests.get(f"{base}/apps/off/", timeout=10)
    assert off.status_code == 503 and "env_b" in off.text
    lost = requests.get(f"{base}/apps/lost/", headers={"Accept": "application/json"}, timeout=10)
    assert lost.status_code == 502 and lost.json()["environment"] == "env_dead"
    # APP_PROXY_READ_TIMEOUT=1 from the process's environment.
    slow = requests.get(f"{base}/apps/crm/slow?delay=3", timeout=10)
    assert slow.status_code == 504

    # A WebSocket, both ways.
    with ws_connect(base.replace("http://", "ws://") + "/apps/chat/socket/") as socket:
        assert json.loads(socket.recv(timeout=10))["path"] == "/apps/chat/socket/"
        socket.send("ping")
        assert socket.recv(timeout=10) == "ping"

    # The rest is still the supervisor's Django site.
    login = requests.get(f"{base}/admin/login/", timeout=10)
    assert login.status_code == 200 and "App Supervisor" in login.text


def test_a_large_download_does_not_grow_the_supervisor(supervisor, workers, r):
    a, _, _ = workers
    register_environment("env_a", url=a.url)
    publish(r, "files", ["env_a"], {"env_a": contract.RUNNING})
    base = supervisor.base
    requests.get(f"{base}/apps/files/warm-up", timeout=10)
    before = rss_bytes(supervisor.pid)

    size = 1024 * 1024 * 1024
    with requests.get(f"{base}/apps/files/big?size={size}", stream=True, timeout=60) as response:
        received = len(response.raw.read(4 * 1024 * 1024))
        time.sleep(2)  # the client stalls
        stalled = rss_bytes(supervisor.pid)
        in_flight = a.sent
        began = time.monotonic()
        peak = stalled
        for chunk in response.iter_content(1024 * 1024):
            received += len(chunk)
            if received % (64 * 1024 * 1024) < 1024 * 1024:
                peak = max(peak, rss_bytes(supervisor.pid))
        seconds = time.monotonic() - began
    assert received == size
    grown = (max(stalled, peak) - before) / 1024 / 1024
    assert grown < 64, f"the supervisor grew by {grown:.0f} MiB during a 1 GiB download"
    assert in_flight < 64 * 1024 * 1024
    print(f"\n1 GiB through the proxy: {size / seconds / 1024 / 1024:.0f} MiB/s, supervisor RSS +{grown:.1f} MiB, "
          f"{in_flight / 1024 / 1024:.1f} MiB left the worker while the client stalled")
