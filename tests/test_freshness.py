"""Old signed values copied back into Redis (replays) replace nothing newer: the ``seq`` every status and registration
carries (exchange.sequence), as the request path's directory, the supervisor's mirrors, the live stream and the agent
use it. The same attacks end to end, with real processes: test_freshness_processes.py."""

import json
import time

import pytest

from apps import mirror as status_mirror
from apps.models import Placement
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import cache as config_cache
from exchange import contract, directory, registry, sequence, signing, status
from workers.agent import Agent

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)

FIELD = contract.status_field("crm", "env_a")


def _registration(url="http://env-a.test:8000", **extra):
    return dict({"name": "env_a", "url": url, "proxy_url": "", "version": "1.0.0", "host": "h", "pid": 1}, **extra)


def _configure(r):
    config_cache.replace_all(r, {"crm": {"name": "crm", "display_name": "CRM", "environments": ["env_a"]}})


def test_sequence_numbers_only_grow_within_a_process_whatever_the_clock(monkeypatch):
    first = sequence.new()
    monkeypatch.setattr(time, "time_ns", lambda: 5)  # the clock stepped far back
    assert sequence.new() == first + 1 and sequence.new() == first + 2


def test_an_entry_without_seq_is_ordered_by_its_time():
    assert sequence.of({"seq": 7, "at": 100.0}, "at") == 7
    assert sequence.of({"at": 100.5}, "at") == 100_500_000_000
    assert sequence.of({"heartbeat_at": 10.0, "stopped_at": 20.0}, "heartbeat_at", "stopped_at") == 20 * 10**9
    assert sequence.of({"heartbeat_at": None}, "heartbeat_at") == 0


def test_statuses_and_registrations_carry_a_growing_seq_and_a_wrong_one_is_malformed(r):
    first, second = status.write(r, "crm", "env_a", contract.RUNNING), status.write(r, "crm", "env_a", "stopped")
    assert second["seq"] > first["seq"]
    registry.announce(r, _registration())
    one = registry.decode(r.hget(contract.ENVIRONMENTS_KEY, "env_a"), "env_a")
    registry.announce(r, _registration())
    two = registry.decode(r.hget(contract.ENVIRONMENTS_KEY, "env_a"), "env_a")
    assert two["seq"] > one["seq"]
    for seq in (-1, "1", 1.5, True, 2**63):
        assert status.decode(signing.dumps(dict(first, seq=seq), signer="env_a"), "crm", "env_a") is None
        assert registry.decode(signing.dumps(dict(one, seq=seq), signer="env_a"), "env_a") is None


def test_entries_written_without_seq_by_an_earlier_version_are_still_read(r):
    legacy_status = {"app": "crm", "environment": "env_a", "state": "running", "error": "", "traceback": "",
                     "at": time.time()}
    legacy_registration = dict(_registration(), heartbeat_at=time.time(), stopped_at=None)
    r.hset(contract.STATUSES_KEY, FIELD, signing.dumps(legacy_status, signer="env_a"))
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(legacy_registration, signer="env_a"))
    _configure(r)

    view = directory.Directory(ttl=0).lookup("crm")

    assert view.statuses["env_a"]["state"] == "running" and view.environments["env_a"]["url"] == legacy_registration["url"]


# --- The directory -------------------------------------------------------------------------------------------------


def test_the_directory_takes_no_status_older_than_one_it_has_seen(r):
    _configure(r)
    registry.announce(r, _registration())
    status.write(r, "crm", "env_a", contract.RUNNING)
    running = r.hget(contract.STATUSES_KEY, FIELD)
    d = directory.Directory(ttl=0)
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.RUNNING
    status.write(r, "crm", "env_a", contract.STOPPED)
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.STOPPED

    r.hset(contract.STATUSES_KEY, FIELD, running)  # replayed

    view = d.lookup("crm")
    assert view.statuses["env_a"]["state"] == contract.STOPPED and not view.complete
    status.write(r, "crm", "env_a", contract.RUNNING)  # a real start since
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.RUNNING


def test_the_directory_takes_no_registration_older_than_one_it_has_seen_by_any_application(r):
    config_cache.replace_all(r, {name: {"name": name, "environments": ["env_a"]} for name in ("crm", "erp")})
    registry.announce(r, _registration("http://old.test:8000"))
    old = r.hget(contract.ENVIRONMENTS_KEY, "env_a")
    registry.announce(r, _registration("http://new.test:8000"))
    d = directory.Directory(ttl=0)
    assert d.lookup("crm").environments["env_a"]["url"] == "http://new.test:8000"

    r.hset(contract.ENVIRONMENTS_KEY, "env_a", old)

    assert d.lookup("crm").environments["env_a"]["url"] == "http://new.test:8000"
    # erp was never read: what this process saw of env_a through crm is what it knows of env_a.
    assert d.lookup("erp").environments["env_a"]["url"] == "http://new.test:8000"
    d.clear()  # a fresh process: takes the replay until the agent writes its own again
    assert d.lookup("erp").environments["env_a"]["url"] == "http://old.test:8000"


# --- The supervisor's mirrors -----------------------------------------------------------------------------------


def test_the_controllers_status_mirror_takes_no_older_seq_even_at_the_same_time(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    seen = status_mirror.Seen()
    at = time.time()
    status.write(r, "crm", "env_a", contract.STOPPED, now=at)
    newer = r.hget(contract.STATUSES_KEY, FIELD)
    status_mirror.refresh_all(r, seen)
    # Same time, lower seq (an older write of that moment copied back): not taken.
    entry = json.loads(signing.unseal(newer))
    r.hset(contract.STATUSES_KEY, FIELD, signing.dumps(dict(entry, state="running", seq=entry["seq"] - 1), signer="env_a"))
    Placement.objects.update(state_at=None)  # let the time alone decide: it would take it

    status_mirror.refresh_all(r, seen)

    assert Placement.objects.get().state == contract.STOPPED
    assert seen.seqs[FIELD.encode()] == entry["seq"]


def test_a_replayed_status_changes_no_placement(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    seen = status_mirror.Seen()
    status.write(r, "crm", "env_a", contract.RUNNING)
    running = r.hget(contract.STATUSES_KEY, FIELD)
    status.write(r, "crm", "env_a", contract.STOPPED)
    status_mirror.refresh_all(r, seen)
    r.hset(contract.STATUSES_KEY, FIELD, running)
    seen.full_read_at = None  # the replay announced nothing: read everything, as a sweep does

    assert status_mirror.refresh_all(r, seen) == []
    assert status_mirror.refresh(r, Placement.objects.all()) == []
    assert Placement.objects.get().state == contract.STOPPED


@pytest.mark.parametrize("long_lived", [True, False])
def test_a_replayed_registration_changes_no_environment(r, long_lived):
    seen = registry_mirror.Seen() if long_lived else None
    registry.announce(r, _registration("http://old.test:8000"), now=time.time() - 5)
    old = r.hget(contract.ENVIRONMENTS_KEY, "env_a")
    registry_mirror.sync(r, seen)
    registry.announce(r, _registration("http://new.test:8000"), now=float(int(time.time())))  # exact in a row
    newer = r.hget(contract.ENVIRONMENTS_KEY, "env_a")
    registry_mirror.sync(r, seen)

    r.hset(contract.ENVIRONMENTS_KEY, "env_a", old)
    registry_mirror.sync(r, seen)

    env = Environment.objects.get()
    assert env.url == "http://new.test:8000" and env.is_online()
    # An older heartbeat of the same registration (the heartbeat-only path of a long-lived mirror) neither.
    entry = json.loads(signing.unseal(newer))
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(dict(entry, heartbeat_at=entry["heartbeat_at"] - 3,
                                                                    seq=entry["seq"] - 1), signer="env_a"))
    registry_mirror.sync(r, seen)
    assert Environment.objects.get().last_heartbeat_at.timestamp() == entry["heartbeat_at"]
    registry.announce(r, _registration("http://new.test:8000"))  # the agent's next heartbeat is taken
    registry_mirror.sync(r, seen)
    assert Environment.objects.get().last_heartbeat_at.timestamp() > entry["heartbeat_at"]


# --- The agent ---------------------------------------------------------------------------------------------------


def test_the_agent_writes_its_own_registration_back_over_a_replay_in_one_loop_turn(r):
    agent = Agent("env_a", "http://old.test:8000", "", 120)
    agent.register()
    old = r.hget(contract.ENVIRONMENTS_KEY, "env_a")
    agent.registration["url"] = "http://new.test:8000"
    agent.announce()
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", old)

    assert agent.ensure_registered() is False  # not registered again: written again

    entry = registry.decode(r.hget(contract.ENVIRONMENTS_KEY, "env_a"), "env_a")
    assert entry["url"] == "http://new.test:8000" and entry["seq"] > registry.decode(old)["seq"]


def test_the_agent_writes_its_own_state_back_over_a_replay_in_one_loop_turn(r):
    from workers import commands

    register_environment("env_a")
    create_application("crm", ["env_a"])
    _configure(r)
    agent = Agent("env_a", "http://a.test", "", 120)
    agent.register()
    commands._report("crm", "env_a", contract.RUNNING)
    running = r.hget(contract.STATUSES_KEY, FIELD)
    commands._report("crm", "env_a", contract.STOPPED)
    stopped = r.hget(contract.STATUSES_KEY, FIELD)
    assert agent.republish_if_changed() == []  # nothing to do: one HMGET

    r.hset(contract.STATUSES_KEY, FIELD, running)

    assert agent.republish_if_changed() == ["crm"]
    assert r.hget(contract.STATUSES_KEY, FIELD) == stopped  # byte for byte what it wrote


def test_an_agent_started_after_a_replay_writes_what_its_worker_holds(r, monkeypatch):
    from workers import commands

    register_environment("env_a")
    create_application("crm", ["env_a"])
    _configure(r)
    commands._report("crm", "env_a", contract.RUNNING)
    running = r.hget(contract.STATUSES_KEY, FIELD)
    commands._report("crm", "env_a", contract.STOPPED)
    stopped = r.hget(contract.STATUSES_KEY, FIELD)
    monkeypatch.setattr(status, "_written", {})  # a new agent process: it wrote nothing yet

    Agent("env_a", "http://a.test", "", 120).register()
    assert r.hget(contract.STATUSES_KEY, FIELD) == stopped  # its own, as it is: taken, not written again

    monkeypatch.setattr(status, "_written", {})
    r.hset(contract.STATUSES_KEY, FIELD, running)
    Agent("env_a", "http://a.test", "", 120).register()
    entry = status.decode(r.hget(contract.STATUSES_KEY, FIELD), "crm", "env_a")
    assert entry["state"] == contract.STOPPED and entry["seq"] > status.decode(stopped, "crm", "env_a")["seq"]
