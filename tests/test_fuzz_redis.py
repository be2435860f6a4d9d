"""Random bytes and random JSON in every key the project uses: the API, the admin, the proxy's routing, the agent and
the controller keep working (nothing 500s, nothing dies), and nothing written without the secret takes effect.

Seeded, so a failure is reproducible: the seed is in the test id.
"""

import json
import random
import time

import pytest
from django.urls import reverse

from apps.models import Placement
from controller.loop import Controller
from environments.models import Environment
from exchange import cache as config_cache
from exchange import contract, directory, events, registry, signing
from proxy import targets
from workers.agent import Agent

from .factories import create_application, mirror, register_environment

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 12


def random_json(rng, depth=0):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1e308, float("inf"), 2**70, rng.random() * 1e12])
    if kind == 3:
        return rng.choice(["", "running", "soon", "http://169.254.169.254/", "javascript:alert(1)", "x" * 5000,
                           "env_a", "crm", "\x00\udcff"])
    if kind == 4:
        return rng.choice([[], {}])
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["name", "url", "proxy_url", "heartbeat_at", "stopped_at", "pid", "state", "error", "at", "app",
            "environment", "environments", "display_name", "desired_state", "web_ok", "problem", "refusal", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


def random_value(rng):
    """Raw bytes, JSON, or JSON signed with the real secret (what a misbehaving insider could write)."""
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    text = json.dumps(random_json(rng), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == 1:
        return text
    if kind == 2:
        return signing.PREFIX + b"0" * 64 + b":" + text  # looks signed, is not
    return signing.seal(text, signer=rng.choice(("supervisor", "env_a", "env_b")))


def plant(r, rng):
    for _ in range(6):
        r.hset(contract.ENVIRONMENTS_KEY, rng.choice(["env_a", "env_b", "env_z", "Bad Name", "\xff"]), random_value(rng))
        r.hset(contract.STATUSES_KEY, rng.choice(["crm/env_a", "crm/env_b", "erp/env_a", "x", "crm/"]),
               random_value(rng))
        r.hset(contract.APPS_KEY, rng.choice(["crm", "erp", "ghost", ""]) or "x", random_value(rng))
        r.lpush(contract.app_log_key("crm"), random_value(rng))
        r.lpush(contract.app_errors_key("crm"), random_value(rng))
        r.hset(contract.app_requests_key("crm"), rng.choice(["env_a|2xx", "env_a|le|0.005", "env_a|sum", "env_a|errors",
                                                            "env_a|le|x", "Bad|2xx", "|", "env_a"]),
               rng.choice([b"1", b"-5", b"nan", b"inf", b"1e400", b"x", bytes([255]), b"2.5"]))
        r.hset(contract.USAGE_KEY, rng.choice(["env_a", "env_b", "env_z"]), random_value(rng))
    for key in (contract.CACHE_READY_KEY, contract.CONTROLLER_LEASE_KEY, contract.lock_key("erp"),
                contract.provision_lock_key("erp")):
        if rng.random() < 0.3:
            r.set(key, random_value(rng), px=2000)
    queue_key = f"rq:queue:{contract.queue_name('env_a')}"
    job_id = rng.choice(["bad.id", "x" * 300, "fuzz-job", "ping-crm-env_a-0"])
    r.rpush(queue_key, job_id)
    if rng.random() < 0.7 and "." not in job_id:
        r.hset(f"rq:job:{job_id}", mapping={
            field: random_value(rng) for field in rng.sample(
                ["data", "created_at", "timeout", "status", "origin", "meta", "success_callback_name",
                 "webhooks", "dependency_ids", "result_ttl", "enqueued_at"], rng.randrange(1, 8))})
    r.publish(contract.EVENTS_CHANNEL, random_value(rng))
    r.publish(contract.LOGS_CHANNEL, random_value(rng))


@pytest.fixture
def deployment(r):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a", "env_b"])
    create_application("erp", ["env_a"])
    mirror()
    return Agent("env_a", "http://env_a.test", "", 60)


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_random_entries_in_every_key_break_nothing_and_take_no_effect(deployment, r, admin_client, client, seed):
    rng = random.Random(seed)
    agent = deployment
    agent.register()
    plant(r, rng)

    # The controller survives a pass, and what it mirrors is only what verifies.
    Controller().run_pass()
    assert set(Environment.objects.values_list("name", flat=True)) == {"env_a", "env_b"}  # forgeries make no row
    for env in Environment.objects.filter(rejected__gt=""):
        assert not env.is_online()
    assert set(Placement.objects.values_list("state", flat=True)) <= set(contract.RUNTIME_STATES)

    # The agent takes the poison off its queue, and lives on.
    while agent.process_one(timeout=1):
        pass
    agent.ensure_registered()
    assert agent.queue.count == 0

    # The pages and the API answer.
    for url in (reverse("admin:apps_application_changelist"), reverse("admin:environments_environment_changelist"),
                reverse("admin:apps_application_change", args=[Placement.objects.first().application_id])):
        assert admin_client.get(url).status_code == 200, url
    for path in ("/api/apps/", "/api/environments/", "/api/apps/crm/", "/api/apps/crm/logs",
                 "/api/apps/crm/logs?errors=true", "/admin/", "/metrics"):
        assert admin_client.get(path).status_code == 200, path
    assert admin_client.get(reverse("admin:apps_application_logs", args=[
        Placement.objects.filter(application__name="crm").first().application_id]), {"errors": "true"}).status_code == 200

    # The proxy's routing reads only what verifies: no address but the registered ones ever comes out.
    for name in ("crm", "erp", "ghost"):
        view = directory.read(name)
        for registration in (view.environments.values() if view else ()):
            assert registration["url"].startswith("http://env_")
        incoming = targets.Incoming(name, "/admin/", f"/apps/{name}/admin/".encode(), b"", None, None, None)
        decision = targets.decide(view, incoming)
        if isinstance(decision, targets.Target):
            assert decision.base_url.startswith("http://env_")

    # Nothing in the configuration cache is taken unless the supervisor signed it.
    for name in ("crm", "erp"):
        entry = config_cache.lookup(r, name)
        assert entry is None or entry.get("name") == name


def test_random_events_never_end_a_listener(r):
    received = []
    listener = events.Listener(lambda: r, received.append).start()
    try:
        assert events.wait_subscribed(listener)
        rng = random.Random(7)
        for _ in range(50):
            r.publish(contract.EVENTS_CHANNEL, random_value(rng))
        events.publish(r, events.APP, name="crm")
        deadline = time.monotonic() + 5
        while {"type": "app", "name": "crm"} not in received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {"type": "app", "name": "crm"} in received
        assert listener.thread.is_alive()
    finally:
        listener.stop()


def test_registry_read_all_names_each_rejected_entry(r):
    r.hset(contract.ENVIRONMENTS_KEY, "env_x", b"\x00\x01")
    registry.announce(r, {"name": "env_y", "url": "http://env_y.test"})
    entries, rejected = registry.read_all(r)
    assert list(entries) == ["env_y"] and list(rejected) == ["env_x"]
