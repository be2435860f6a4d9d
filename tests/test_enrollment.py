"""Enrolling environments' keys (environments.enrollment, manage.py enrollenvironment), publishing them to Redis,
trust on first use, and the controller's repair of the configuration cache (apps.cache.repair)."""

import json
import time

import pytest
from django.core.management import CommandError, call_command

from controller.loop import Controller
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import cache, contract, keys, registry, signing

from .factories import create_application, register_environment
from .processes import SUPERVISOR_KEY, environment_key, environment_public_key

pytestmark = pytest.mark.django_db(transaction=True)

REGISTRATION = {"name": "env_a", "url": "http://env_a.test:8000", "proxy_url": "", "version": "1.0.0",
                "host": "h", "pid": 1}


@pytest.fixture
def supervisor_only(settings):
    """The supervisor as deployed: its own key only; an environment verifies only once its key is published."""
    settings.APP_SIGNING_KEYS = {"supervisor": SUPERVISOR_KEY}
    keys.published.reset()


def announce_as(r, name, key, **extra):
    """What env NAME's agent writes, holding KEY."""
    entry = dict(REGISTRATION, name=name, heartbeat_at=time.time(), seq=time.time_ns() // 1000, stopped_at=None,
                 public_key=keys.public_text(keys.private_key(key)), **extra)
    r.hset(contract.ENVIRONMENTS_KEY, name, signing.dumps(entry, signer=name, key=key))


def test_an_unenrolled_environment_is_rejected_with_a_visible_reason(r, supervisor_only):
    announce_as(r, "env_a", environment_key("env_a"))

    registry_mirror.sync(r, registry_mirror.Seen())

    assert not Environment.objects.exists()
    [item] = registry_mirror.rejected_summary(r)["recent"]
    assert item["name"] == "env_a" and "which is not enrolled here" in item["reason"]


def test_enrolling_by_command_makes_its_registrations_verify(r, supervisor_only, capsys):
    call_command("enrollenvironment", "env_a", f"--public-key={environment_public_key('env_a')}")
    announce_as(r, "env_a", environment_key("env_a"))

    registry_mirror.sync(r, registry_mirror.Seen())

    env = Environment.objects.get(name="env_a")
    assert env.public_keys == [environment_public_key("env_a")] and env.is_online() and not env.rejected
    assert "1 key(s) valid" in capsys.readouterr().out


def test_a_bad_key_or_name_is_refused_by_the_command_naming_it(r, supervisor_only):
    with pytest.raises(CommandError, match="not an Ed25519 key"):
        call_command("enrollenvironment", "env_a", "--public-key=nope")
    with pytest.raises(CommandError, match="not an environment name"):
        call_command("enrollenvironment", "Env A", f"--public-key={environment_public_key('env_a')}")
    assert not Environment.objects.exists()


def test_env_bs_key_never_speaks_for_enrolled_env_a(r, supervisor_only):
    call_command("enrollenvironment", "env_a", f"--public-key={environment_public_key('env_a')}")
    call_command("enrollenvironment", "env_b", f"--public-key={environment_public_key('env_b')}")
    announce_as(r, "env_a", environment_key("env_b"))  # signed as env_a, with env_b's key

    assert registry.read(r) == {}
    entry = dict(REGISTRATION, heartbeat_at=time.time(), seq=1, stopped_at=None)
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(entry, signer="env_b", key=environment_key("env_b")))
    assert registry.read(r) == {}


def test_rotation_keeps_both_keys_valid_until_the_old_one_is_retired(r, supervisor_only):
    new_private, new_public = keys.generate()
    call_command("enrollenvironment", "env_a", f"--public-key={environment_public_key('env_a')}")
    call_command("enrollenvironment", "env_a", f"--public-key={new_public}", "--keep-current")

    announce_as(r, "env_a", environment_key("env_a"))
    assert set(registry.read(r)) == {"env_a"}
    announce_as(r, "env_a", new_private)
    assert set(registry.read(r)) == {"env_a"}

    call_command("enrollenvironment", "env_a", f"--retire={environment_public_key('env_a')}")
    announce_as(r, "env_a", environment_key("env_a"))
    assert registry.read(r) == {}
    with pytest.raises(CommandError, match="at most 2"):
        third = keys.generate()[1]
        call_command("enrollenvironment", "env_a", f"--public-key={environment_public_key('env_a')}", "--keep-current")
        call_command("enrollenvironment", "env_a", f"--public-key={third}", "--keep-current")


def test_trust_on_first_use_only_when_turned_on_and_only_once(r, supervisor_only, settings):
    announce_as(r, "env_a", environment_key("env_a"))
    registry_mirror.sync(r)
    assert not Environment.objects.exists()

    settings.APP_TRUST_ON_FIRST_USE = True
    registry_mirror.sync(r)
    env = Environment.objects.get(name="env_a")
    assert env.public_keys == [environment_public_key("env_a")] and env.url == REGISTRATION["url"]
    assert env.is_online()

    # Someone else's key for the now enrolled name is refused, not trusted.
    announce_as(r, "env_a", environment_key("env_b"))
    registry_mirror.sync(r)
    assert Environment.objects.get(name="env_a").public_keys == [environment_public_key("env_a")]
    assert "not enrolled" in Environment.objects.get(name="env_a").rejected


def test_a_registration_offering_a_key_it_is_not_signed_with_is_never_trusted(r, supervisor_only, settings):
    settings.APP_TRUST_ON_FIRST_USE = True
    entry = dict(REGISTRATION, heartbeat_at=time.time(), seq=1, stopped_at=None,
                 public_key=environment_public_key("env_a"))
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(entry, signer="env_a", key=environment_key("env_b")))

    registry_mirror.sync(r)

    assert not Environment.objects.exists()


def test_the_controller_publishes_enrolled_keys_again_after_redis_lost_them(r, supervisor_only):
    call_command("enrollenvironment", "env_a", f"--public-key={environment_public_key('env_a')}")
    controller = Controller()
    controller.publish_keys()
    r.flushdb()
    keys.published.reset()
    announce_as(r, "env_a", environment_key("env_a"))
    assert registry.read(r) == {}

    controller.publish_keys()

    assert set(registry.read(r)) == {"env_a"}


def test_keys_written_to_redis_by_anyone_but_the_supervisor_are_not_taken(r, supervisor_only):
    r.hset(contract.ENVIRONMENT_KEYS_KEY, "env_a", json.dumps({"environment": "env_a",
                                                               "keys": [environment_public_key("env_a")]}))
    announce_as(r, "env_a", environment_key("env_a"))
    assert registry.read(r) == {}


def test_the_controller_repairs_a_configuration_entry_that_differs_from_the_database(r, settings):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a"])
    controller = Controller()
    controller.rebuild_cache_if_missing()
    good = r.hget(contract.APPS_KEY, "crm")
    assert controller.repair_cache(force=True) == []

    entry = dict(json.loads(signing.body_of(good)), environments=["env_b"])
    # Signed as "supervisor" with env_b's key: no reader takes it, and the controller writes the real one back.
    r.hset(contract.APPS_KEY, "crm", signing.dumps(entry, signer="supervisor", key=environment_key("env_b")))
    assert cache.lookup(r, "crm") is None
    assert controller.repair_cache(force=True) == ["crm"]
    assert cache.lookup(r, "crm")["environments"] == ["env_a"]

    # A genuine but different entry (an old one copied back, or altered by the supervisor's own key) too.
    r.hset(contract.APPS_KEY, "crm", signing.dumps(entry, signer="supervisor"))
    r.hset(contract.APPS_KEY, "ghost", signing.dumps({"name": "ghost", "environments": ["env_b"]},
                                                     signer="supervisor"))
    assert sorted(controller.repair_cache(force=True)) == ["crm", "ghost"]
    assert cache.lookup(r, "crm")["environments"] == ["env_a"] and cache.lookup(r, "ghost") is None
    assert r.hget(contract.REFUSED_KEY, contract.REFUSED_CONFIG) == b"3"
    assert controller.repair_cache(force=True) == []  # unchanged bytes are not compared again


def test_a_status_signed_by_another_environment_is_refused_and_counted(r):
    from apps import mirror as status_mirror
    from apps.models import Placement

    register_environment("env_a")
    create_application("crm", ["env_a"])
    entry = {"app": "crm", "environment": "env_a", "state": "error", "error": "phish", "traceback": "",
             "at": time.time(), "seq": 1}
    r.hset(contract.STATUSES_KEY, "crm/env_a", signing.dumps(entry, signer="env_b"))

    status_mirror.refresh_all(r, status_mirror.Seen())

    assert Placement.objects.get().state != contract.ERROR
    assert r.hget(contract.REFUSED_KEY, contract.REFUSED_STATUS) == b"1"


def test_the_admin_records_replaces_and_retires_an_environments_key(admin_client, r, supervisor_only):
    from django.urls import reverse

    call_command("enrollenvironment", "env_a", f"--public-key={environment_public_key('env_a')}")
    env = Environment.objects.get(name="env_a")
    url = reverse("admin:environments_environment_keys", args=[env.pk])
    assert keys.key_id(environment_public_key("env_a")) in admin_client.get(url).content.decode()

    new_private, new_public = keys.generate()
    bad = admin_client.post(url, {"public_key": "nope"})
    assert bad.status_code == 400 and "not an Ed25519 key" in bad.content.decode()
    assert admin_client.post(url, {"public_key": new_public, "keep_current": "on"}).status_code == 302
    assert Environment.objects.get(name="env_a").public_keys == [environment_public_key("env_a"), new_public]
    announce_as(r, "env_a", new_private)
    assert set(registry.read(r)) == {"env_a"}

    assert admin_client.post(url, {"retire": new_public}).status_code == 302
    assert registry.read(r) == {}  # published at once: the retired key is refused
    assert admin_client.post(url, {"public_key": new_public}).status_code == 302  # replaces
    assert Environment.objects.get(name="env_a").public_keys == [new_public]


def test_a_public_key_beginning_with_a_dash_is_enrolled_as_the_cluster_and_the_docs_pass_it(r, supervisor_only):
    """One key in 64 begins with "-" (URL-safe base64), which argparse takes for an option unless it is joined to
    its option: the documented and the launcher's form is --public-key=KEY."""
    public = next(public for _, public in iter(keys.generate, None) if public.startswith("-"))
    call_command("enrollenvironment", "env_a", f"--public-key={public}")
    assert Environment.objects.get(name="env_a").public_keys == [public]
