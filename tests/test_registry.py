import json
import time

import pytest

from apps import cache
from apps.models import Application
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import cache as config_cache
from exchange import contract, registry

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db

REGISTRATION = {"name": "env_a", "url": "http://a:15000", "proxy_url": "http://worker_a", "version": "1.0.0",
                "host": "box", "pid": 42}


def test_registration_appears_in_the_supervisor_with_its_urls_and_version(r):
    registry.announce(r, REGISTRATION)
    registry_mirror.sync(r)

    env = Environment.objects.get(name="env_a")
    assert (env.url, env.proxy_url, env.version, env.host, env.pid) == (
        "http://a:15000", "http://worker_a", "1.0.0", "box", 42)
    assert env.is_online()


def test_heartbeat_moves_the_last_heartbeat_forward(r):
    registry.announce(r, REGISTRATION, now=1000.0)
    registry_mirror.sync(r)
    registry.announce(r, REGISTRATION, now=1120.0)
    assert registry_mirror.sync(r) == (0, 1)
    assert Environment.objects.get().last_heartbeat_at.timestamp() == 1120.0


def test_unchanged_registrations_are_not_rewritten(r):
    registry.announce(r, REGISTRATION, now=1000.0)
    registry_mirror.sync(r)
    assert registry_mirror.sync(r) == (0, 0)


def test_graceful_stop_makes_the_environment_offline_at_once(r):
    registry.announce(r, REGISTRATION)
    registry.withdraw(r, REGISTRATION)
    registry_mirror.sync(r)
    env = Environment.objects.get()
    assert not env.is_online()
    assert "stopped" in env.offline_reason()


def test_reregistering_after_a_stop_brings_it_back_online(r):
    registry.announce(r, REGISTRATION)
    registry.withdraw(r, REGISTRATION)
    registry.announce(r, REGISTRATION)
    registry_mirror.sync(r)
    assert Environment.objects.get().is_online()


def test_malformed_and_unsigned_entries_make_no_environment_and_are_only_counted(r):
    from exchange import signing

    r.hset(contract.ENVIRONMENTS_KEY, "junk", "{not json")
    r.hset(contract.ENVIRONMENTS_KEY, "nourl", signing.dumps({"name": "nourl"}, signer="nourl"))
    r.hset(contract.ENVIRONMENTS_KEY, "forged", json.dumps(dict(REGISTRATION, name="forged", heartbeat_at=time.time())))
    r.hset(contract.ENVIRONMENTS_KEY, "Not A Name", signing.dumps(dict(REGISTRATION, name="Not A Name"), signer="Not A Name"))
    registry.announce(r, REGISTRATION)

    registry_mirror.sync(r, registry_mirror.Seen())

    assert list(Environment.objects.values_list("name", flat=True)) == ["env_a"]
    assert Environment.objects.get().is_online() and not Environment.objects.get().rejected
    summary = registry_mirror.rejected_summary(r)
    reasons = {item["name"]: item["reason"] for item in summary["recent"]}
    assert summary["count"] == 4 and sorted(reasons) == ["Not A Name", "forged", "junk", "nourl"]
    assert "does not verify: not signed" in reasons["forged"]
    assert reasons["nourl"] == "its registration in Redis is malformed"


def test_thousands_of_forged_registrations_cost_no_row_and_a_bounded_summary(r, django_assert_max_num_queries):
    seen = registry_mirror.Seen()
    registry.announce(r, REGISTRATION)
    forged = {f"env_{i}": json.dumps(dict(REGISTRATION, name=f"env_{i}")) for i in range(5000)}
    r.hset(contract.ENVIRONMENTS_KEY, mapping=forged)

    with django_assert_max_num_queries(4):
        registry_mirror.sync(r, seen)
    with django_assert_max_num_queries(1):  # the next pass: nothing changed, nothing verified again
        assert registry_mirror.sync(r, seen) == (0, 0)

    assert Environment.objects.count() == 1
    summary = registry_mirror.rejected_summary(r)
    assert summary["count"] == 5000 and len(summary["recent"]) == registry_mirror.RECENT_REJECTED
    assert len(r.get(contract.REJECTED_REGISTRATIONS_KEY)) < 10_000
    r.hdel(contract.ENVIRONMENTS_KEY, *forged)
    registry_mirror.sync(r, seen)
    assert registry_mirror.rejected_summary(r)["count"] == 0


def test_a_real_environment_overwritten_by_a_forged_entry_keeps_its_addresses_and_is_not_online(r):
    registry.announce(r, REGISTRATION)
    registry_mirror.sync(r)
    forged = dict(REGISTRATION, url="http://attacker.example", proxy_url="http://attacker.example",
                  heartbeat_at=time.time())
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", json.dumps(forged))

    registry_mirror.sync(r)

    env = Environment.objects.get(name="env_a")
    assert env.url == REGISTRATION["url"] and env.proxy_url == REGISTRATION["proxy_url"]
    assert env.rejected and not env.is_online()
    registry.announce(r, REGISTRATION)  # its worker's next heartbeat
    registry_mirror.sync(r)
    assert Environment.objects.get(name="env_a").is_online()


def test_sync_reads_many_environments_in_constant_queries(r, django_assert_max_num_queries):
    for i in range(200):
        registry.announce(r, dict(REGISTRATION, name=f"env_{i}"))
    with django_assert_max_num_queries(5):  # SQLite's bulk insert of 200 rows may take two statements
        registry_mirror.sync(r)
    assert Environment.objects.count() == 200


def test_heartbeats_of_many_environments_are_mirrored_in_constant_queries(r, django_assert_max_num_queries):
    for i in range(200):
        registry.announce(r, dict(REGISTRATION, name=f"env_{i}"), now=1_000)
    registry_mirror.sync(r)
    for i in range(200):
        registry.announce(r, dict(REGISTRATION, name=f"env_{i}"), now=2_000)

    with django_assert_max_num_queries(4):
        assert registry_mirror.sync(r) == (0, 200)

    beats = set(Environment.objects.values_list("last_heartbeat_at", flat=True))
    assert {b.timestamp() for b in beats} == {2_000}


def test_a_long_lived_mirror_takes_heartbeats_and_other_changes_as_a_fresh_one_would(r):
    seen = registry_mirror.Seen()
    registry.announce(r, REGISTRATION, now=1000.0)
    registry_mirror.sync(r, seen)
    registry.announce(r, REGISTRATION, now=1120.5)  # a heartbeat: its time only changed
    assert registry_mirror.sync(r, seen) == (0, 1)
    assert Environment.objects.get().last_heartbeat_at.timestamp() == 1120.5
    registry.announce(r, dict(REGISTRATION, version="2.0.0", web_ok=False, problem="no answer"), now=1240.0)

    assert registry_mirror.sync(r, seen) == (0, 1)

    env = Environment.objects.get()
    assert (env.version, env.web_ok, env.problem, env.last_heartbeat_at.timestamp()) == (
        "2.0.0", False, "no answer", 1240.0)


def test_a_heartbeat_forged_on_a_real_entry_is_refused_by_a_long_lived_mirror(r):
    from exchange import signing

    seen = registry_mirror.Seen()
    registry.announce(r, REGISTRATION, now=1000.0)
    registry_mirror.sync(r, seen)
    real = r.hget(contract.ENVIRONMENTS_KEY, "env_a")
    # The same bytes with a later heartbeat, under the real entry's signature: what a heartbeat changes, unsigned.
    forged = real.replace(b'"heartbeat_at":1000.0', f'"heartbeat_at":{time.time()}'.encode())
    assert forged != real and signing.body_of(forged) != signing.body_of(real)
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", forged)

    registry_mirror.sync(r, seen)

    env = Environment.objects.get()
    assert env.rejected and env.last_heartbeat_at.timestamp() == 1000.0 and not env.is_online()
    registry.announce(r, REGISTRATION)  # its worker's next heartbeat
    registry_mirror.sync(r, seen)
    env = Environment.objects.get()
    assert not env.rejected and env.is_online()


def test_a_heartbeat_restores_a_registration_redis_lost(r):
    registry.announce(r, REGISTRATION)
    r.flushdb()
    registry.announce(r, REGISTRATION)
    assert "env_a" in registry.read(r)


def test_configuration_cache_is_rebuilt_from_the_database_when_redis_comes_back_empty(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    cache.rebuild(r)
    r.flushdb()

    assert cache.ensure(r) is True
    assert config_cache.lookup(r, "crm")["environments"] == ["env_a"]
    assert cache.ensure(r) is False  # complete now: not rebuilt again


def test_cache_entry_lists_environments_in_start_order(r):
    register_environment("env_a")
    register_environment("env_b")
    app = create_application("crm", ["env_b", "env_a"])
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    assert config_cache.lookup(r, "crm")["environments"] == ["env_b", "env_a"]


def test_is_alive_uses_the_timeout_not_the_interval(settings):
    settings.APP_HEARTBEAT_INTERVAL = 120
    settings.APP_HEARTBEAT_TIMEOUT = 260
    now = time.time()
    assert registry.is_alive({"heartbeat_at": now - 200}, now=now)  # late heartbeat: still online
    assert not registry.is_alive({"heartbeat_at": now - 261}, now=now)


def test_without_the_environments_key_enrolled_nothing_of_it_verifies_nor_can_be_signed(r, settings):
    from django.core.exceptions import ImproperlyConfigured

    from exchange import keys

    registry.announce(r, REGISTRATION)
    settings.APP_SIGNING_KEYS = {}
    keys.published.reset()
    entries, rejected = registry.read_all(r)
    assert entries == {} and "environment 'env_a', which is not enrolled here" in rejected["env_a"]
    with pytest.raises(ImproperlyConfigured, match="no key of environment 'env_a'"):
        registry.announce(r, REGISTRATION)


def test_a_registration_of_env_a_signed_with_env_bs_key_is_refused(r):
    from exchange import signing

    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(dict(REGISTRATION, heartbeat_at=time.time(), seq=1),
                                                            signer="env_b"))
    entries, rejected = registry.read_all(r)
    assert entries == {} and "signed by 'env_b', not by 'env_a'" in rejected["env_a"]
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(dict(REGISTRATION, heartbeat_at=time.time(), seq=1),
                                                            signer="env_a"))
    assert set(registry.read(r)) == {"env_a"}


def test_statuses_read_in_one_query_are_what_each_environment_says_of_itself(r, django_assert_num_queries):
    now = time.time()
    register_environment("env_online")
    register_environment("env_late", heartbeat_at=now - 10_000)
    register_environment("env_stopped")
    registry.withdraw(r, {"name": "env_stopped"})
    registry.announce(r, {"name": "env_degraded", "url": "http://d.test", "web_ok": False, "problem": "no answer"})
    registry_mirror.sync(r)

    with django_assert_num_queries(1):
        statuses = registry_mirror.statuses()

    assert statuses == {e.name: e.status() for e in Environment.objects.all()}
    assert statuses == {"env_online": contract.ONLINE, "env_late": contract.OFFLINE, "env_stopped": contract.OFFLINE,
                        "env_degraded": contract.DEGRADED}


def test_rows_once_made_of_registrations_that_never_verified_are_dropped_by_the_migration():
    from importlib import import_module

    from django.apps import apps as django_apps

    migration = import_module("environments.migrations.0005_drop_rows_of_rejected_registrations")
    Environment.objects.create(name="ghost", url="", rejected="not signed")
    Environment.objects.create(name="overwritten", url="http://a.test", rejected="not signed")
    register_environment("hosting")
    create_application("crm", ["hosting"])
    Environment.objects.filter(name="hosting").update(url="", rejected="not signed")

    migration.drop_rejected_rows(django_apps, None)

    assert sorted(Environment.objects.values_list("name", flat=True)) == ["hosting", "overwritten"]
