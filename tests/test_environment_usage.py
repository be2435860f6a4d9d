"""CPU and memory of each environment's web and agent (exchange.usage): the worker web tells its own on /healthz,
the agent reports it with its own at each heartbeat, the Environments page shows both; a forged, malformed or old
report is shown as unknown."""

import http.server
import json
import threading
import time

import pytest
from django.test import Client

from exchange import contract, registry, signing, usage
from workers.agent import Agent, probe_web

from .factories import register_environment

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_measure_is_this_process_s_cpu_and_memory():
    measured = usage.measure()
    assert usage.valid(measured) == measured
    assert measured["rss"] > 10_000_000 and measured["cpu"] >= 0


def test_a_worker_s_healthz_tells_its_usage_and_a_supervisor_s_does_not(settings):
    settings.APP_MODE = "worker"
    settings.ENVIRONMENT_NAME = "env_a"
    settings.ROOT_URLCONF = "workers.urls"
    assert usage.valid(Client().get("/healthz").json()["usage"]) is not None
    settings.APP_MODE = "supervisor"
    settings.ROOT_URLCONF = "supervisor_project.urls"
    assert "usage" not in Client().get("/healthz").json()


def serving(body):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("body, expected", [
    (json.dumps({"status": "ok", "usage": {"cpu": 12.5, "rss": 80_000_000}}).encode(),
     (True, "", {"cpu": 12.5, "rss": 80_000_000})),
    (json.dumps({"status": "ok", "usage": {"cpu": "lots", "rss": 1}}).encode(), (True, "")),
    (b"ok", (True, "")),
])
def test_the_probe_reads_the_web_s_usage_when_it_is_one(body, expected):
    server = serving(body)
    try:
        assert probe_web(f"http://127.0.0.1:{server.server_port}") == expected
    finally:
        server.shutdown()


def test_each_heartbeat_reports_the_agent_s_and_the_web_s_usage(r):
    web = {"cpu": 3.0, "rss": 50_000_000}
    agent = Agent("env_a", "http://a", "", 120, probe=lambda: (True, "", web))
    agent.register()
    assert agent.probe_if_due()
    agent.announce()
    found = usage.read(r, ["env_a"], stale=60)["env_a"]
    assert found["web"] == web
    assert found["agent"]["rss"] > 10_000_000
    # the registration is unchanged by it: a heartbeat still changes nothing there but its time
    assert "usage" not in registry.read(r)["env_a"]

    agent.probe = lambda: (False, "connection refused")
    agent.last_probe = None
    agent.probe_if_due()
    agent.announce()
    assert usage.read(r, ["env_a"], stale=60)["env_a"]["web"] is None  # a web that does not answer: unknown


def test_the_environments_page_shows_it_and_unknown_for_what_does_not_verify(admin_client, r):
    for name in ("env_a", "env_b", "env_c", "env_d"):
        register_environment(name)
    usage.write(r, "env_a", {"cpu": 1.5, "rss": 90_000_000}, {"cpu": 25.0, "rss": 120_000_000})
    r.hset(contract.USAGE_KEY, "env_b", json.dumps({"at": time.time(), "agent": {"cpu": 99, "rss": 1}}))  # unsigned
    r.hset(contract.USAGE_KEY, "env_c", signing.dumps({"at": "soon", "agent": []}, signer="env_c"))
    usage.write(r, "env_d", {"cpu": 7.0, "rss": 1}, None, now=time.time() - 3600)  # older than the timeout

    page = admin_client.get("/admin/environments/environment/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "web: 25.0 % CPU · 120 MB" in text and "agent: 1.5 % CPU · 90 MB" in text
    assert "99.0 % CPU" not in text and "7.0 % CPU" not in text
    assert text.count('<span class="appsup-muted">unknown</span>') == 3
