"""Several processes per web (APP_WEB_PROCESSES=2), as deployed: the data plane's guarantees hold in each process.

A Redis server of the test's own (it is flushed and restarted), a supervisor web of two processes with its controller,
and environment env_a: a worker web of two processes and its agent, every web started the documented way
(``python -m supervisor_project.web``). uvicorn's processes share one listening socket, so which one answers a
connection is the kernel's choice: the test holds a keep-alive connection to each process, found by looking up
which process owns the server's end of the connection in /proc, and sends every request of a check on each.
"""

import http.client
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib

from exchange import contract, status

from .conftest import free_port
from .processes import (
    PYTHON,
    Process,
    RedisServer,
    base_env,
    http_ready,
    manage,
    own_postgres_databases,
    postgres_env,
    runworker,
    wait_for,
    web_process,
    worker_env,
)
from .test_redis_loss_processes import TOKEN, api, running_crm

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROCESSES = 2
DATABASES = ["appsup_it_wp_sup", "appsup_it_wp_env_a"]
CRM = "/apps/crm/admin/login/"


# -- which process answers a connection ----------------------------------------------------------------------------


def web_children(pid):
    """The processes uvicorn's manager started to serve (not multiprocessing's resource tracker)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def gone(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


def socket_inode(server_port, client_port):
    """The inode of the server's end of the TCP connection from CLIENT_PORT to SERVER_PORT on 127.0.0.1."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server_port and int(fields[2].split(":")[1], 16) == client_port:
            return fields[9]
    return None


def owner(pids, inode):
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    return None


class Pinned:
    """A keep-alive connection to one process of a web. uvicorn closes a connection idle for 5 s: a request after
    that opens connections until one lands on the same process again (probing /healthz, which reads nothing)."""

    def __init__(self, port, pids):
        self.port, self.pids = port, pids
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", "/healthz")  # answered: one of the processes has accepted the connection
        self.conn.getresponse().read()
        self.pid = owner(pids, socket_inode(port, self.conn.sock.getsockname()[1]))
        assert self.pid in pids, f"none of the web's processes {pids} owns the connection"

    def get(self, path, headers=None):
        for _ in range(2):
            try:
                self.conn.request("GET", path, headers=headers or {})
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (http.client.RemoteDisconnected, ConnectionError):
                self.conn.close()
                self.conn = each_process(self.port, self.pids)[self.pid].conn
        raise AssertionError(f"no answer from process {self.pid}")


def each_process(port, pids, attempts=400):
    """{pid: Pinned}, a connection to each of PIDS, the processes of the web on PORT."""
    pinned = {}
    for _ in range(attempts):
        conn = Pinned(port, pids)
        if conn.pid in pinned:
            conn.conn.close()
        else:
            pinned[conn.pid] = conn
        if len(pinned) == len(pids):
            return pinned
    raise AssertionError(f"after {attempts} connections, only {sorted(pinned)} of {pids} answered")


# -- the deployment ------------------------------------------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path):
    with own_postgres_databases(DATABASES + ["app_crm"]):
        workdir = tmp_path / "redis"
        workdir.mkdir()
        server = RedisServer(free_port(), workdir)
        server.start()
        port, worker_port = free_port(), free_port()
        supervisor_env = base_env(tmp_path / "supervisor", server.url, APP_MODE="supervisor",
                                  SUPERVISOR_API_TOKEN=TOKEN, APP_HEARTBEAT_INTERVAL=1, APP_HEARTBEAT_TIMEOUT=4,
                                  APP_WEB_PROCESSES=PROCESSES, **postgres_env(DATABASES[0]))
        env_a = worker_env("env_a", worker_port, tmp_path / "env_a", server.url, APP_HEARTBEAT_INTERVAL=1,
                           APP_HEARTBEAT_TIMEOUT=4, APP_WEB_PROCESSES=PROCESSES, **postgres_env(DATABASES[1]))
        processes = {}
        try:
            manage(["migrate", "-v0"], supervisor_env)
            manage(["migrate", "-v0"], env_a)
            processes["supervisor"] = web_process(supervisor_env, port, tmp_path / "supervisor-web.log")
            processes["env_a"] = web_process(env_a, worker_port, tmp_path / "env_a-web.log")
            processes["agent"] = runworker(env_a, tmp_path / "env_a-agent.log")
            processes["controller"] = Process([PYTHON, "manage.py", "runsupervisor"], supervisor_env,
                                              tmp_path / "runsupervisor.log")
            base = f"http://127.0.0.1:{port}"
            wait_for(http_ready(f"{base}/admin/login/"), what="the supervisor web")
            wait_for(http_ready(f"http://127.0.0.1:{worker_port}/healthz"), what="the worker web")
            webs = {}
            for role, web_port in (("supervisor", port), ("env_a", worker_port)):
                pids = wait_for(lambda: len(web_children(processes[role].pid)) == PROCESSES
                                and web_children(processes[role].pid), what=f"{role}'s {PROCESSES} processes")
                webs[role] = each_process(web_port, pids)
            yield {"base": base, "redis": server, "processes": processes, "webs": webs}
        finally:
            for process in reversed(processes.values()):
                process.stop()
            server.stop()


def every_process(webs):
    """(role, pid, Pinned) for each process of each web."""
    return [(role, pid, conn) for role, pinned in webs.items() for pid, conn in pinned.items()]


def read_crm_everywhere(deployment):
    """crm started through the API, then read by every process of both webs (each one's first lookup also
    subscribes it to events)."""
    base, webs = deployment["base"], deployment["webs"]
    running_crm(base)
    for role, pid, conn in every_process(webs):
        wait_for(lambda conn=conn: conn.get(CRM) == 200, timeout=30, what=f"crm served by {role} process {pid}")
    time.sleep(1.5)  # every listener has subscribed


def no_traceback(deployment):
    for role in ("supervisor", "env_a"):
        output = deployment["processes"][role].output()
        assert "Traceback" not in output, output


# -- the guarantees, in each process -------------------------------------------------------------------------------


def test_a_stop_answered_by_the_api_is_a_503_on_the_very_next_request_to_each_process(deployment):
    base, webs = deployment["base"], deployment["webs"]
    read_crm_everywhere(deployment)
    for _ in range(3):
        assert api(base, "POST", "apps/crm/stop").status_code == 200
        assert {(role, pid): conn.get(CRM) for role, pid, conn in every_process(webs)} == \
            {(role, pid): 503 for role, pid, _ in every_process(webs)}
        assert api(base, "POST", "apps/crm/start").status_code == 200
        assert {(role, pid): conn.get(CRM) for role, pid, conn in every_process(webs)} == \
            {(role, pid): 200 for role, pid, _ in every_process(webs)}
    no_traceback(deployment)


def test_a_status_written_to_redis_is_in_force_on_the_very_next_request_to_each_worker_process(deployment):
    """What the agent writes (a signed status), written here straight to Redis, 20 times each way: each worker
    process drops its cached view on the event, well within the directory's one-second TTL. The controller is
    stopped first: it would answer a "stopped" it did not ask for by starting crm again ("starting": 503); and so is
    the agent, which writes its own state back over any other it finds (its older sequence number is then taken for
    a replay by processes that saw this test's newer one)."""
    read_crm_everywhere(deployment)
    deployment["processes"]["controller"].stop()
    deployment["processes"]["agent"].stop()
    plain = redis_lib.Redis.from_url(deployment["redis"].url)
    misses = []
    for i in range(20):
        for pid, conn in deployment["webs"]["env_a"].items():
            status.write(plain, "crm", "env_a", contract.STOPPED)
            stopped = conn.get(CRM)
            status.write(plain, "crm", "env_a", contract.RUNNING)
            running = conn.get(CRM)
            if (stopped, running) != (503, 200):
                misses.append((i, pid, stopped, running))
    plain.close()
    assert misses == []
    no_traceback(deployment)


def load_each_process(webs, fault, seconds=6.0, fault_at=2.0):
    """GET crm on every process of both webs in turn, from one client per process, while FAULT is called once."""
    failures, counts, done = [], {}, threading.Event()
    began = time.monotonic()

    def client(role, pid, conn):
        while not done.is_set():
            try:
                outcome = conn.get(CRM)
            except (OSError, http.client.HTTPException, AssertionError) as exc:
                outcome = type(exc).__name__
            counts[(role, pid)] = counts.get((role, pid), 0) + 1
            if outcome != 200:
                failures.append((role, pid, outcome, round(time.monotonic() - began, 2)))

    threads = [threading.Thread(target=client, args=each, daemon=True) for each in every_process(webs)]
    for thread in threads:
        thread.start()
    time.sleep(fault_at)
    fault()
    time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    done.set()
    for thread in threads:
        thread.join(20)
    return counts, failures


def test_redis_flushed_or_restarted_empty_fails_no_request_on_any_process(deployment):
    server, webs = deployment["redis"], deployment["webs"]
    read_crm_everywhere(deployment)
    client = redis_lib.Redis.from_url(server.url)
    flushed = load_each_process(webs, client.flushall)
    client.close()

    def restart_empty():
        server.kill()
        time.sleep(1.0)
        server.start()

    restarted = load_each_process(webs, restart_empty)
    print(f"\nFLUSHALL: requests per process {flushed[0]}, failed {flushed[1][:10]}"
          f"\nrestarted empty: requests per process {restarted[0]}, failed {restarted[1][:10]}")
    for counts, failures in (flushed, restarted):
        assert len(counts) == 2 * PROCESSES and min(counts.values()) > 20
        assert failures == []
    no_traceback(deployment)


def websocket_handshake(port, pids):
    """{pid: status} of /ws/events/ handshakes with the API token until each of PIDS has answered one."""
    answered = {}
    for _ in range(400):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /ws/events/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            head = sock.recv(4096)
            pid = owner(pids, socket_inode(port, sock.getsockname()[1]))
            answered.setdefault(pid, int(head.split()[1]))
        if set(answered) == set(pids):
            return answered
    raise AssertionError(f"only {sorted(answered)} of {pids} answered a handshake")


def test_the_supervisor_web_serves_the_proxy_the_events_socket_and_the_admin_from_each_process(deployment):
    webs, processes = deployment["webs"], deployment["processes"]
    read_crm_everywhere(deployment)  # the proxy, from each supervisor process
    supervisor = webs["supervisor"]
    assert {pid: conn.get("/admin/login/") for pid, conn in supervisor.items()} == dict.fromkeys(supervisor, 200)
    port = next(iter(supervisor.values())).port
    assert websocket_handshake(port, list(supervisor)) == dict.fromkeys(supervisor, 101)

    # SIGTERM to a web stops all its processes cleanly.
    for role in ("supervisor", "env_a"):
        pids = list(webs[role])
        processes[role].signal(signal.SIGTERM)
        assert processes[role].wait(30) == 0, processes[role].output()
        wait_for(lambda pids=pids: all(gone(pid) for pid in pids), timeout=10, what=f"{role}'s processes gone")
    no_traceback(deployment)
