"""The agent tells the truth about its web process: it probes /healthz and shows web_ok and the problem in its
registration, which makes the environment degraded while its web does not answer."""

import http.server
import signal
import threading
import time

import pytest

from exchange import contract, registry
from workers.agent import Agent, probe_web

from .conftest import free_port
from .processes import http_ready, manage, runworker, wait_for, web_process, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class Web:
    """A probe whose answer the test sets (the real probe is tested against real servers below)."""

    def __init__(self):
        self.answer = (True, "")
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.answer


def test_the_probe_result_is_in_the_registration_and_a_change_is_announced_at_once(r):
    clock, web = Clock(), Web()
    agent = Agent("env_a", "http://a", "", 120, clock=clock, probe=web)
    agent.register()
    assert agent.probe_if_due()
    entry = registry.read(r)["env_a"]
    assert entry["web_ok"] is True and entry["problem"] == ""
    assert registry.status_of(entry, now=clock.now) == contract.ONLINE

    web.answer = (False, "the web process at http://a does not answer /healthz: connection refused")
    clock.now += 5
    assert agent.probe_if_due()
    entry = registry.read(r)["env_a"]
    assert entry["web_ok"] is False and "connection refused" in entry["problem"]
    assert entry["heartbeat_at"] == clock.now  # announced at once, not at the next heartbeat
    assert registry.status_of(entry, now=clock.now) == contract.DEGRADED


def test_the_probe_runs_every_few_seconds_and_not_in_between(r):
    clock, web = Clock(), Web()
    agent = Agent("env_a", "http://a", "", 120, clock=clock, probe=web)
    assert agent.probe_period == 5
    agent.probe_if_due()
    clock.now += 4.9
    assert agent.probe_if_due() is False
    clock.now += 0.1
    assert agent.probe_if_due() is True
    assert web.calls == 2
    assert Agent("env_a", "http://a", "", 2, probe=web).probe_period == 2  # never rarer than a heartbeat


def test_a_web_that_does_not_answer_is_probed_every_second_until_it_does(r):
    clock, web = Clock(), Web()
    web.answer = (False, "connection refused")
    agent = Agent("env_a", "http://a", "", 120, clock=clock, probe=web)
    agent.probe_if_due()
    clock.now += 0.9
    assert agent.probe_if_due() is False
    clock.now += 0.1
    web.answer = (True, "")
    assert agent.probe_if_due() is True and agent.registration["web_ok"] is True
    clock.now += 1
    assert agent.probe_if_due() is False  # answering again: back to the usual period


def test_an_unchanged_result_waits_for_the_next_heartbeat(r):
    clock, web = Clock(), Web()
    agent = Agent("env_a", "http://a", "", 120, clock=clock, probe=web)
    agent.register()
    agent.probe_if_due()
    beat = registry.read(r)["env_a"]["heartbeat_at"]
    clock.now += 5
    agent.probe_if_due()
    assert registry.read(r)["env_a"]["heartbeat_at"] == beat


def test_a_web_still_starting_with_its_agent_is_not_degraded_until_the_grace_ends(r):
    clock, web = Clock(), Web()
    web.answer = (False, "connection refused")
    agent = Agent("env_a", "http://a", "", 120, clock=clock, probe=web, startup_grace=30)
    agent.register()
    agent.probe_if_due()
    entry = registry.read(r)["env_a"]
    assert entry.get("web_ok") is None and "not answering yet" in entry["problem"]
    assert registry.status_of(entry, now=clock.now) == contract.ONLINE  # a deploy is not an incident

    clock.now += 30
    agent.probe_if_due()
    entry = registry.read(r)["env_a"]
    assert entry["web_ok"] is False and registry.status_of(entry, now=clock.now) == contract.DEGRADED


def test_a_web_that_answered_once_is_degraded_as_soon_as_it_stops(r):
    clock, web = Clock(), Web()
    agent = Agent("env_a", "http://a", "", 120, clock=clock, probe=web, startup_grace=30)
    agent.register()
    agent.probe_if_due()
    web.answer = (False, "connection refused")
    clock.now += 5
    agent.probe_if_due()
    assert registry.read(r)["env_a"]["web_ok"] is False


def test_a_probe_that_raises_counts_as_a_web_that_does_not_answer(r):
    def broken():
        raise RuntimeError("boom")

    agent = Agent("env_a", "http://a", "", 120, probe=broken, startup_grace=0)
    agent.register()
    agent.probe_if_due()
    entry = registry.read(r)["env_a"]
    assert entry["web_ok"] is False and "boom" in entry["problem"]


def test_without_a_probe_the_web_is_unknown_and_the_environment_online(r):
    agent = Agent("env_a", "http://a", "", 120)
    agent.register()
    assert agent.probe_if_due() is False
    entry = registry.read(r)["env_a"]
    assert "web_ok" not in entry
    assert registry.status_of(entry) == contract.ONLINE


def test_probe_web_against_a_server_that_answers_and_one_that_does_not():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert probe_web(f"http://127.0.0.1:{server.server_port}") == (True, "")
        assert probe_web(f"http://127.0.0.1:{server.server_port}/") == (True, "")
    finally:
        server.shutdown()
        server.server_close()
    port = free_port()
    ok, problem = probe_web(f"http://127.0.0.1:{port}")
    assert ok is False
    assert problem == f"the web process at http://127.0.0.1:{port} does not answer /healthz: connection refused"


def test_probe_web_gives_up_after_its_timeout():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never answers
    try:
        began = time.monotonic()
        ok, problem = probe_web(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        assert ok is False and "within" in problem
        assert time.monotonic() - began < 2
    finally:
        listener.close()


@pytest.mark.slow
def test_a_real_agent_reports_its_web_down_and_back(tmp_path, redis_url, r):
    port = free_port()
    env = worker_env("env_a", port, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=2)
    manage(["migrate", "-v0"], env)
    web = web_process(env, port, tmp_path / "web.log")
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(http_ready(f"http://127.0.0.1:{port}/healthz"), what="the worker web")
        wait_for(lambda: registry.status_of(registry.read(r).get("env_a")) == contract.ONLINE
                 and registry.read(r)["env_a"].get("web_ok") is True, what="online with its web")

        web.signal(signal.SIGKILL)
        web.wait(10)
        killed_at = time.monotonic()
        entry = wait_for(lambda: (e := registry.read(r)["env_a"]).get("web_ok") is False and e, timeout=10,
                         what="the web reported down")
        assert time.monotonic() - killed_at <= 2 * 2 + 1  # two probe periods (min(interval, 5) = 2 s)
        assert registry.status_of(entry) == contract.DEGRADED
        assert f"http://127.0.0.1:{port}" in entry["problem"]

        web.stop()
        web = web_process(env, port, tmp_path / "web-again.log")
        wait_for(lambda: registry.status_of(registry.read(r)["env_a"]) == contract.ONLINE, timeout=30,
                 what="online again")
        assert registry.read(r)["env_a"]["problem"] == ""
        assert agent.proc.poll() is None
    finally:
        web.stop()
        agent.stop()
