"""A restart asked for while an environment is offline is kept on its placement and carried out once by the
controller when the environment is back (apps.lifecycle, controller.loop); a stop cancels it."""

import pytest
from django.urls import reverse

from apps.models import Placement
from controller.loop import Controller
from exchange import channel

from .factories import ThreadAgent, create_application, mirror

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Hosted databases are app_<name> on PostgreSQL, shared by test files run at the same time: a name of its own.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def enqueued(monkeypatch):
    """(command, environment) of every command sent (the real enqueue still runs)."""
    sent = []
    real = channel.enqueue

    def spy(environment, command, app, *args, **kwargs):
        sent.append((command, environment))
        return real(environment, command, app, *args, **kwargs)

    monkeypatch.setattr(channel, "enqueue", spy)
    return sent


def post(client, path):
    return client.post(path, content_type="application/json", headers=AUTH)


@pytest.fixture
def running_then_offline(client):
    """rs_unit running on env_a, whose worker has since stopped."""
    with ThreadAgent("env_a"):
        create_application("rs_unit", ["env_a"])
        assert post(client, "/api/apps/rs_unit/start?timeout=60").status_code == 200
    mirror()


def reconcile_until_idle(controller):
    passes = 0
    while controller.reconcile_one():
        passes += 1
        assert passes < 5
    return passes


def test_offline_restart_answers_202_naming_the_environment_and_runs_once_when_back(client, running_then_offline,
                                                                                 enqueued):
    response = post(client, "/api/apps/rs_unit/restart?timeout=10")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["environment"] == "env_a"
    assert body["message"].startswith("restart rs_unit waits for env_a: environment env_a is offline")
    assert body["pending"]["waiting_for"] == ["env_a"]
    assert enqueued == []
    placement = Placement.objects.get(application__name="rs_unit")
    assert placement.restart_pending and placement.state == "running"

    controller = Controller()
    assert reconcile_until_idle(controller) == 0  # still offline: nothing is sent, the restart waits

    with ThreadAgent("env_a"):
        mirror()
        assert reconcile_until_idle(controller) == 1
        assert reconcile_until_idle(controller) == 0  # carried out: never again

    assert enqueued == [("restart", "env_a")]
    placement.refresh_from_db()
    assert not placement.restart_pending and placement.state == "running"
    assert (placement.restarts_asked, placement.restarts_done) == (1, 1)


def test_two_offline_restarts_run_once_when_back(client, running_then_offline, enqueued):
    assert post(client, "/api/apps/rs_unit/restart?timeout=10").status_code == 202
    assert post(client, "/api/apps/rs_unit/restart?timeout=10").status_code == 202

    with ThreadAgent("env_a"):
        mirror()
        assert reconcile_until_idle(Controller()) == 1

    assert enqueued == [("restart", "env_a")]


def test_a_stop_cancels_a_restart_still_waiting(client, running_then_offline, enqueued):
    assert post(client, "/api/apps/rs_unit/restart?timeout=10").status_code == 202
    stopped = post(client, "/api/apps/rs_unit/stop?timeout=10")
    assert stopped.status_code == 202 and stopped.json()["pending"]["desired_state"] == "stopped"

    with ThreadAgent("env_a"):
        mirror()
        reconcile_until_idle(Controller())

    assert enqueued == [("stop", "env_a")]
    assert not Placement.objects.get(application__name="rs_unit").restart_pending


def test_a_restart_while_online_leaves_nothing_waiting(client, enqueued):
    with ThreadAgent("env_a"):
        create_application("rs_unit", ["env_a"])
        assert post(client, "/api/apps/rs_unit/start?timeout=60").status_code == 200
        assert post(client, "/api/apps/rs_unit/restart?timeout=60").status_code == 200
        mirror()
        assert reconcile_until_idle(Controller()) == 0

    assert enqueued == [("start", "env_a"), ("restart", "env_a")]
    assert not Placement.objects.get(application__name="rs_unit").restart_pending


def test_a_restart_from_the_admin_is_kept_the_same_way(admin_client, running_then_offline):
    rs_unit = Placement.objects.get(application__name="rs_unit").application
    response = admin_client.post(reverse("admin:apps_application_restart", args=[rs_unit.pk]), {"post": "yes"},
                                 follow=True)

    [message] = [str(m) for m in response.context["messages"]]
    assert message.endswith("rs_unit stays desired running: the controller completes the restart on env_a once env_a "
                            "is back online.")
    assert Placement.objects.get(application__name="rs_unit").restart_pending


def test_a_restart_stopped_by_an_offline_first_environment_resumes_in_start_order_once(client, enqueued):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("rs_unit", ["env_a", "env_b"])
        assert post(client, "/api/apps/rs_unit/start?timeout=60").status_code == 200
    with ThreadAgent("env_b"):
        mirror()
        response = post(client, "/api/apps/rs_unit/restart?timeout=10")
        assert response.status_code == 202 and response.json()["environment"] == "env_a"
        assert reconcile_until_idle(Controller()) == 0  # env_b waits behind env_a, as a sequential restart would
        with ThreadAgent("env_a"):
            mirror()
            assert reconcile_until_idle(Controller()) == 1
            assert reconcile_until_idle(Controller()) == 0

    assert enqueued == [("start", "env_a"), ("start", "env_b"), ("restart", "env_a"), ("restart", "env_b")]
    assert not any(p.restart_pending for p in Placement.objects.filter(application__name="rs_unit"))
