"""Old signed values copied back into Redis serve nothing: a replayed status keeps no stopped application online, a
replayed registration diverts no traffic, and an environment offline past its heartbeat timeout is no proxy target.
Real processes (supervisor web, its controller, worker web and agent), real Redis, an attacker with a plain Redis
client and no secret."""

import contextlib
import signal
import socket
import threading
import time

import pytest
import redis as redis_lib
import requests

from exchange.contract import ENVIRONMENTS_KEY, STATUSES_KEY, status_field

from .conftest import free_port
from .local_cluster import TIMEOUT, Cluster
from .processes import http_ready, wait_for, web_process

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
# How long requests are counted after a replay: well past the agent's loop turn (1 s) and the heartbeat timeout.
WATCH_SECONDS = 10.0


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        wait_for(lambda: c.status_of("env_a") == "online", what="env_a online")
        created = c.api("POST", "apps/", json={"name": "shop", "environments": ["env_a"], "admin_username": "boss",
                                               "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        assert c.api("POST", "apps/shop/start").status_code == 200
        yield c
    finally:
        c.stop()


@pytest.fixture
def attacker(redis_url):
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


def page(base):
    return f"{base}/apps/shop/admin/login/"


def code(url):
    try:
        return requests.get(url, allow_redirects=False, timeout=10).status_code
    except requests.ConnectionError:
        return None


@pytest.mark.parametrize("read_between", [True, False], ids=["stop-read-first", "replayed-before-any-read"])
def test_a_replayed_running_status_keeps_no_stopped_application_online(cluster, attacker, read_between):
    # Without a request between the stop and the replay, neither the proxy nor the worker web has read the
    # "stopped" that the replayed "running" is older than: the worker serves by its own record all the same.
    worker = f"http://127.0.0.1:{cluster.worker_ports['env_a']}"
    wait_for(lambda: code(page(cluster.base)) == 200 and code(page(worker)) == 200, what="shop served")
    running = attacker.hget(STATUSES_KEY, status_field("shop", "env_a"))
    assert cluster.api("POST", "apps/shop/stop").status_code == 200
    if read_between:
        wait_for(lambda: code(page(cluster.base)) == 503 and code(page(worker)) == 503,
                 what="shop refused once stopped")

    attacker.hset(STATUSES_KEY, status_field("shop", "env_a"), running)
    answers = []
    end = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < end:
        answers += [("proxy", code(page(cluster.base))), ("worker", code(page(worker)))]
        time.sleep(0.1)

    served = [answer for answer in answers if answer[1] == 200]
    print(f"{len(served)} of {len(answers)} requests served in {WATCH_SECONDS:.0f} s after the replay")
    assert served == [], f"{len(served)} of {len(answers)} requests served after the replay"
    if read_between:
        assert {c for _, c in answers} == {503}
        # The agent wrote its own state back over the replayed one.
        assert attacker.hget(STATUSES_KEY, status_field("shop", "env_a")) != running
        assert cluster.api("GET", "apps/shop").json()["statuses"]["env_a"]["state"] == "stopped"


class Listener:
    """A TCP listener on PORT that counts the connections it accepts (and answers each with a 200)."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ndiverted")
            conn.close()

    def close(self):
        self.done.set()
        self.thread.join(5)
        self.sock.close()


def test_a_replayed_registration_diverts_no_traffic(cluster, attacker):
    wait_for(lambda: code(page(cluster.base)) == 200, what="shop served")
    old = attacker.hget(ENVIRONMENTS_KEY, "env_a")
    old_port = cluster.worker_ports["env_a"]

    # env_a restarts on a new port.
    for process in (cluster.agents["env_a"], cluster.webs["env_a"]):
        process.stop()
    new_port = free_port()
    cluster.worker_envs["env_a"].update(ENVIRONMENT_URL=f"http://127.0.0.1:{new_port}")
    cluster.webs["env_a"] = cluster._track(web_process(cluster.worker_envs["env_a"], new_port,
                                                       cluster.tmp / "env_a-web-2.log"))
    wait_for(http_ready(f"http://127.0.0.1:{new_port}/healthz"), what="env_a's new web")
    cluster.start_agent("env_a")
    wait_for(lambda: str(new_port).encode() in (attacker.hget(ENVIRONMENTS_KEY, "env_a") or b""),
             what="env_a registered at its new address")
    wait_for(lambda: code(page(cluster.base)) == 200, what="shop served from env_a's new address")

    listener = Listener(old_port)
    answers = []
    try:
        # Written back whenever the agent has written its own (after each heartbeat), for longer than the timeout.
        end = time.monotonic() + WATCH_SECONDS + TIMEOUT
        while time.monotonic() < end:
            if attacker.hget(ENVIRONMENTS_KEY, "env_a") != old:
                attacker.hset(ENVIRONMENTS_KEY, "env_a", old)
            answers.append(code(page(cluster.base)))
            time.sleep(0.05)
    finally:
        listener.close()

    assert listener.accepted == 0, f"{listener.accepted} of {len(answers)} proxied requests reached the old address"
    # Served from the new address, or refused once the newest registration this supervisor saw is older than the
    # timeout (the replays leave little time to read the agent's own): denied, never diverted.
    assert set(answers) <= {200, 503}, answers
    print(f"{answers.count(200)} served, {answers.count(503)} refused of {len(answers)}")


def test_an_environment_offline_past_its_timeout_is_no_proxy_target(cluster):
    wait_for(lambda: code(page(cluster.base)) == 200, what="shop served")
    agent = cluster.agents["env_a"]
    agent.signal(signal.SIGSTOP)  # the agent heartbeats no more; its web still answers
    try:
        time.sleep(TIMEOUT + 1.5)
        assert cluster.status_of("env_a") == "offline"
        refused = requests.get(page(cluster.base), headers={"Accept": "application/json"}, timeout=10)
        assert refused.status_code == 503, refused.text[:500]
        body = refused.json()
        assert body["error"] == "not-running"
        assert "offline" in body["message"] and "no heartbeat" in body["message"]
        # Its web itself would still have answered: the refusal is the proxy's.
        assert code(page(f"http://127.0.0.1:{cluster.worker_ports['env_a']}")) == 200
    finally:
        agent.signal(signal.SIGCONT)
    wait_for(lambda: code(page(cluster.base)) == 200, what="shop served again once env_a heartbeats")
