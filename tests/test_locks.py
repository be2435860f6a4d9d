"""exchange.locks: the controller lease and the lifecycle locks carry signed holder values; planted ones are broken."""

import json
import time

import pytest

from apps import lifecycle
from controller.lease import Lease
from exchange import contract, locks, signing

from .factories import ThreadAgent, create_application, hold_lock, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_planted_lease_is_broken_and_counted_and_the_controller_holds_it(r):
    r.set(contract.CONTROLLER_LEASE_KEY, "attacker", ex=3600)

    lease = Lease(r, holder="real")

    assert lease.hold() and lease.current_holder() == "real"
    assert locks.forgeries(r) == {contract.LEASE_LOCK: 1}
    r.set(contract.CONTROLLER_LEASE_KEY, "attacker again")  # renewed by the attacker: taken back at the next pass
    assert lease.hold() and lease.current_holder() == "real"
    assert locks.forgeries(r) == {contract.LEASE_LOCK: 2}


def test_a_replayed_genuine_lease_past_its_time_is_broken(r):
    old = signing.dumps({"lock": contract.CONTROLLER_LEASE_KEY, "holder": "dead",
                         "until": time.time() - locks.CLOCK_SKEW - 1})
    r.set(contract.CONTROLLER_LEASE_KEY, old)

    assert Lease(r, holder="real").hold()


def test_a_genuine_value_of_another_lock_copied_onto_the_lease_is_broken(r):
    hold_lock("crm")
    r.set(contract.CONTROLLER_LEASE_KEY, r.get(contract.lock_key("crm")))

    assert Lease(r, holder="real").hold()


def test_a_genuine_holder_is_respected_and_its_renewal_keeps_it(r):
    first, second = Lease(r, holder="first", ttl=5), Lease(r, holder="second", ttl=5)
    assert first.hold()
    before = r.get(contract.CONTROLLER_LEASE_KEY)
    time.sleep(0.01)

    assert not second.hold() and first.hold()
    after = r.get(contract.CONTROLLER_LEASE_KEY)
    assert after != before and json.loads(signing.unseal(after))["until"] > json.loads(signing.unseal(before))["until"]
    assert locks.forgeries(r) == {}


def test_a_holder_whose_value_was_replaced_neither_renews_nor_releases_it(r):
    held = hold_lock("crm")
    r.set(contract.lock_key("crm"), "planted")
    with pytest.raises(locks.LockNotOwnedError):
        held.reacquire()
    with pytest.raises(locks.LockNotOwnedError):
        held.release()
    assert r.get(contract.lock_key("crm")) == b"planted"


def test_a_planted_application_lock_does_not_refuse_the_operators_command(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    r.set(contract.lock_key("crm"), "held", ex=3600)

    with ThreadAgent("env_a"):
        outcome = lifecycle.run(app, contract.START, timeout=20)

    assert outcome.ok, outcome.failure
    assert locks.forgeries(r) == {contract.APP_LOCK: 1}


def test_forgeries_are_counted_in_metrics(r, admin_client):
    r.set(contract.CONTROLLER_LEASE_KEY, "attacker")
    Lease(r, holder="real").hold()
    r.hset(contract.FORGED_LOCKS_KEY, mapping={"junk kind": 5, contract.APP_LOCK: "not a number"})

    text = admin_client.get("/metrics").content.decode()

    assert 'appsup_forged_locks_broken_total{lock="lease"} 1.0' in text
    assert 'appsup_forged_locks_broken_total{lock="app"} 0.0' in text and "junk kind" not in text
