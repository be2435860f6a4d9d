"""Draining an environment, the parts that need no worker (environments.drain): what is refused, where applications
would go, the states it reads, the admin's actions."""

import pytest
from django.urls import reverse

from apps.forms import ApplicationCreateForm
from environments import drain
from environments.api import environment_dict
from environments.models import Environment

from .factories import PASSWORD, create_application, register_environment
from .pages import messages_of

pytestmark = pytest.mark.django_db


def form(environments):
    return ApplicationCreateForm({"name": "crm", "environments": environments, "admin_username": "boss",
                                  "admin_password": PASSWORD})


def test_a_draining_environment_takes_no_new_application_naming_it():
    register_environment("env_a")
    register_environment("env_b")
    drain.request(Environment.objects.get(name="env_b"))
    refused = form(["env_a", "env_b"])
    assert not refused.is_valid()
    assert "env_b" in refused.errors["environments"][0]
    drain.undrain(Environment.objects.get(name="env_b"))
    assert form(["env_a", "env_b"]).is_valid()


def test_an_application_goes_to_the_online_environment_with_the_fewest_that_does_not_host_it():
    for name in ("env_a", "env_b", "env_c", "env_d"):
        register_environment(name)
    register_environment("env_z", heartbeat_at=0)  # offline: never a destination, whatever it hosts
    drain.request(Environment.objects.get(name="env_d"))  # draining: never a destination
    create_application("one", ["env_b"])
    create_application("two", ["env_b"])
    moving = create_application("crm", ["env_c", "env_a"])
    # env_a hosts crm, env_b hosts two others, env_c hosts crm: env_b is the only one left.
    assert drain.destination_for(moving).name == "env_b"
    lonely = create_application("hr", ["env_b"])
    # env_a and env_c host one each (crm): the first by name.
    assert drain.destination_for(lonely).name == "env_a"


def test_status_reads_draining_then_drained_and_a_drain_of_nothing_ends_at_once():
    register_environment("env_a")
    env = drain.request(Environment.objects.get(name="env_a"))
    shown = environment_dict(env)
    assert (shown["status"], shown["liveness"], shown["drain"], shown["drain_left"]) == ("draining", "online",
                                                                                      "draining", {})
    assert drain.step() is True
    assert environment_dict(Environment.objects.get(name="env_a"))["status"] == "drained"
    assert drain.step() is False
    assert "drain" not in environment_dict(drain.undrain(Environment.objects.get(name="env_a")))


def test_the_admin_drains_and_undrains(admin_client):
    register_environment("env_a")
    changelist = reverse("admin:environments_environment_changelist")
    pk = Environment.objects.get(name="env_a").pk
    response = admin_client.post(changelist, {"action": "drain", "_selected_action": [pk]}, follow=True)
    assert messages_of(response)[0][1].startswith("Draining env_a")
    assert Environment.objects.get(pk=pk).drain_state == "draining"
    assert "draining" in admin_client.get(changelist).content.decode()
    admin_client.post(changelist, {"action": "undrain", "_selected_action": [pk]}, follow=True)
    assert Environment.objects.get(pk=pk).drain_state is None


def test_metrics_show_each_environment_out_of_service(admin_client):
    register_environment("env_a")
    register_environment("env_b")
    drain.request(Environment.objects.get(name="env_b"))
    text = admin_client.get("/metrics").content.decode()
    assert 'appsup_environment_drain{environment="env_b",state="draining"} 1.0' in text
    assert 'appsup_environment_drain_left{environment="env_b"} 0.0' in text
    assert 'appsup_environment_drain{environment="env_a"' not in text


@pytest.mark.django_db(transaction=True)
def test_a_move_cut_off_by_a_crash_is_closed_once_its_lock_is_free(r):
    from datetime import timedelta

    from django.utils import timezone

    from apps import moves
    from apps.models import Move
    from exchange import cache

    register_environment("env_a")
    register_environment("env_b")
    application = create_application("crm", ["env_a"])
    Move.objects.create(application=application, source=Environment.objects.get(name="env_a"),
                        destination=Environment.objects.get(name="env_b"), step="load",
                        started_at=timezone.now() - timedelta(minutes=1))
    cache.write(r, "crm", application.cache_entry())
    assert cache.lookup(r, "crm")["moving"] == {"from": "env_a", "to": "env_b"}

    assert moves.close_cut_off() is True
    record = Move.objects.get()
    assert record.state == Move.FAILED and "cut off during its load" in record.error
    assert "moving" not in cache.lookup(r, "crm")  # the source takes writes again
    assert moves.close_cut_off() is False


def test_a_draining_environment_is_no_destination_for_a_move():
    from apps import moves

    register_environment("env_a")
    register_environment("env_b")
    application = create_application("crm", ["env_a"])
    drain.request(Environment.objects.get(name="env_b"))
    with pytest.raises(moves.MoveRefused, match="out of service"):
        moves.check(application, "env_a", "env_b")


def test_each_change_of_a_drain_is_announced_to_open_pages(r):
    import json

    register_environment("env_a")
    listener = r.pubsub()
    listener.subscribe("appsup:events")
    listener.get_message(timeout=1)  # the subscription's confirmation
    drain.request(Environment.objects.get(name="env_a"))
    drain.step()
    drain.undrain(Environment.objects.get(name="env_a"))
    seen = []
    while (message := listener.get_message(timeout=0.5)) is not None:
        seen.append(json.loads(message["data"]))
    assert [(e["type"], e["name"]) for e in seen] == [("environment", "env_a")] * 3


@pytest.mark.django_db(transaction=True)
def test_a_move_cut_off_after_its_switch_is_closed_as_done_naming_the_leftover(r):
    from datetime import timedelta

    from django.utils import timezone

    from apps import moves
    from apps.models import Move

    register_environment("env_a")
    register_environment("env_b")
    application = create_application("crm", ["env_b"])  # the switch committed: it is placed on env_b
    Move.objects.create(application=application, source=Environment.objects.get(name="env_a"),
                        destination=Environment.objects.get(name="env_b"), step="remove",
                        started_at=timezone.now() - timedelta(minutes=1))
    assert moves.close_cut_off() is True
    record = Move.objects.get()
    assert record.state == Move.DONE and "not removed from env_a" in record.error
