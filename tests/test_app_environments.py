"""Changing an application's environments (apps.placements): PATCH /api/apps/<name>/, the admin's change form and the
controller completing what waited for an offline environment. Real Redis, real agents in threads (ThreadAgent)."""

# The application is crm_envs, not crm: on PostgreSQL its database (app_<name>) is on a server that other test runs
# may be using at the same time.

import json

import pytest

from apps.models import Application, Placement, Removal
from controller.loop import Controller
from environments.models import Environment
from exchange import cache as config_cache
from exchange import channel, contract, status
from workers import provisioning
from workers.models import HostedState

from .factories import ThreadAgent, create_application, hold_lock, register_environment
from .pages import messages_of
from .test_admin_applications import app_url

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def api_token(settings, controller_running):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def sent(monkeypatch):
    """The commands sent, as (command, environment, drop_database), in order (the real enqueue still runs)."""
    seen = []
    real = channel.enqueue

    def spy(environment, command, app, payload, *args, **kwargs):
        seen.append((command, environment, bool((payload or {}).get("drop_database"))))
        return real(environment, command, app, payload, *args, **kwargs)

    monkeypatch.setattr(channel, "enqueue", spy)
    return seen


def patch(client, name, body):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.patch(f"/api/apps/{name}/?timeout=60", data, content_type="application/json", headers=AUTH)


def command(client, name):
    return client.post(f"/api/apps/crm_envs/{name}?timeout=60", "{}", content_type="application/json", headers=AUTH)


def placed(name):
    return Application.objects.with_placements().get(name=name).environment_names()


# -- what is refused -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field, words", [
    ({"environments": ["env_a", "env_x"]}, "environments", "env_x"),
    ({"environments": ["env_b", "env_b"]}, "environments", "listed twice"),
    ({"environments": []}, "environments", "at least one"),
    ({"environments": "env_a,env_b"}, "environments", "list of environment names"),
    ({"environments": [1]}, "environments", "list of environment names"),
    ({"name": "other"}, "name", "cannot be changed"),
    ({"admin_password": "x"}, "admin_password", "cannot be changed"),
    ({"environments": ["env_a"], "colour": "red"}, "colour", "Unknown field"),
    ({"environments": ["env_a"], "drop_database": "yes"}, "drop_database", "true or false"),
    ({"concurrency": "many"}, "concurrency", "whole number"),
    ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
])
@pytest.mark.django_db
def test_a_change_names_what_is_wrong_and_changes_nothing(client, r, sent, body, field, words):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm_envs", ["env_b"], display_name="CRM")

    response = patch(client, "crm_envs", body)

    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert words in " ".join(errors[field]), errors
    assert placed("crm_envs") == ["env_b"] and Application.objects.get().display_name == "CRM"
    assert not sent and not Removal.objects.exists()


@pytest.mark.django_db
def test_a_change_may_not_add_a_draining_or_unverified_environment(client, r, sent):
    from environments import drain

    register_environment("env_a")
    register_environment("env_b")
    create_application("crm_envs", ["env_b"])
    drain.request(Environment.objects.get(name="env_a"))
    # env_c written to Redis by someone without the secret (no signature).
    r.hset(contract.ENVIRONMENTS_KEY, "env_c", json.dumps({"name": "env_c", "url": "http://evil.test:8000"}))

    draining = patch(client, "crm_envs", {"environments": ["env_b", "env_a"]})
    rejected = patch(client, "crm_envs", {"environments": ["env_b", "env_c"]})

    assert draining.status_code == 400 and "env_a is out of service" in " ".join(draining.json()["errors"]["environments"])
    assert rejected.status_code == 400 and "env_c takes no placements" in " ".join(rejected.json()["errors"]["environments"])
    assert placed("crm_envs") == ["env_b"] and not sent


@pytest.mark.parametrize("body", ["[]", "null", '"env_a"', "{"])
@pytest.mark.django_db
def test_a_change_that_is_not_a_json_object_is_refused(client, r, body):
    register_environment("env_a")
    create_application("crm_envs", ["env_a"])

    response = patch(client, "crm_envs", body)

    assert response.status_code == 400
    assert response.json()["errors"]["__all__"]


@pytest.mark.django_db
def test_a_change_of_an_unknown_application_is_404_and_of_a_form_body_415(client, r):
    register_environment("env_a")
    create_application("crm_envs", ["env_a"])

    assert patch(client, "nope", {"environments": ["env_a"]}).status_code == 404
    form = client.patch("/api/apps/crm_envs/", "environments=env_a", content_type="application/x-www-form-urlencoded",
                        headers=AUTH)
    assert form.status_code == 415


@pytest.mark.django_db(transaction=True)
def test_a_change_while_another_operation_runs_is_423_and_changes_nothing(client, r, sent, settings):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm_envs", ["env_b"])
    lock = hold_lock("crm_envs")
    try:
        response = client.patch("/api/apps/crm_envs/?timeout=1", json.dumps({"environments": ["env_b", "env_a"],
                                                                         "display_name": "New"}),
                                content_type="application/json", headers=AUTH)
    finally:
        lock.release()

    assert response.status_code == 423
    assert "in progress" in response.json()["error"]
    assert placed("crm_envs") == ["env_b"] and Application.objects.get().display_name != "New" and not sent


@pytest.mark.django_db(transaction=True)
def test_the_display_name_and_share_change_without_any_command(client, r, sent):
    register_environment("env_a")
    create_application("crm_envs", ["env_a"])

    response = patch(client, "crm_envs", {"display_name": "Customers", "concurrency": 4, "request_timeout": None})

    assert response.status_code == 200, response.json()
    assert (response.json()["display_name"], response.json()["concurrency"]) == ("Customers", 4)
    assert config_cache.lookup(r, "crm_envs")["display_name"] == "Customers"
    assert not sent


# -- online: done before the answer --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_added_environment_is_provisioned_and_started_and_a_removed_one_removed_keeping_its_data(client, r, sent):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm_envs", ["env_b"], admin_username="boss")
        assert command(client, "start").status_code == 200
        sent.clear()

        added = patch(client, "crm_envs", {"environments": ["env_b", "env_a"]})

        assert added.status_code == 200, added.json()
        assert added.json()["environments"] == ["env_b", "env_a"]
        assert {env: s["state"] for env, s in added.json()["statuses"].items()} == {"env_a": "running",
                                                                                     "env_b": "running"}
        assert sent == [("start", "env_a", False)]
        assert config_cache.lookup(r, "crm_envs")["environments"] == ["env_b", "env_a"]
        assert provisioning.database_exists("crm_envs")

        removed = patch(client, "crm_envs", {"environments": ["env_b"]})

        assert removed.status_code == 200, removed.json()
        assert removed.json()["environments"] == ["env_b"]
        assert list(removed.json()["statuses"]) == ["env_b"]
        assert sent[1:] == [("remove", "env_a", False)]
        entry = config_cache.lookup(r, "crm_envs")
        assert entry["environments"] == ["env_b"] and entry[contract.LEAVING] == []
        assert not Removal.objects.exists()
        assert r.hget(contract.STATUSES_KEY, contract.status_field("crm_envs", "env_a")) is None
        assert provisioning.database_exists("crm_envs")  # kept


@pytest.mark.django_db(transaction=True)
def test_a_new_order_sends_nothing_and_a_stopped_app_is_not_started_where_it_is_added(client, r, sent):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm_envs", ["env_b"])

        response = patch(client, "crm_envs", {"environments": ["env_a", "env_b"]})
        assert response.status_code == 200, response.json()
        assert response.json()["statuses"]["env_a"]["state"] == "stopped"

        reordered = patch(client, "crm_envs", {"environments": ["env_b", "env_a"]})
        assert reordered.status_code == 200
        assert reordered.json()["environments"] == ["env_b", "env_a"]
        assert config_cache.lookup(r, "crm_envs")["environments"] == ["env_b", "env_a"]
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_drop_database_drops_it_where_the_application_is_removed(client, r, sent):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm_envs", ["env_b", "env_a"])
        assert command(client, "start").status_code == 200
        command(client, "stop")  # both share this test's storage
        sent.clear()

        response = patch(client, "crm_envs", {"environments": ["env_b"], "drop_database": True})

    assert response.status_code == 200, response.json()
    assert sent == [("remove", "env_a", True)]
    assert not provisioning.database_exists("crm_envs")


# -- offline: recorded, completed by the controller ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_offline_environments_wait_for_the_controller_which_completes_the_change_once_they_are_back(client, r,
                                                                                                    sent):
    register_environment("env_a", heartbeat_at=0)  # registered long ago, silent since: offline
    with ThreadAgent("env_b"):
        create_application("crm_envs", ["env_b"])
        assert command(client, "start").status_code == 200
        sent.clear()

        added = patch(client, "crm_envs", {"environments": ["env_b", "env_a"]})

        assert added.status_code == 202, added.json()
        body = added.json()
        assert body["environments"] == ["env_b", "env_a"]
        assert body["pending"]["waiting_for"] == ["env_a"] and body["pending"]["added"] == ["env_a"]
        assert "started on env_a" in body["pending"]["message"]
        assert sent == []

        # Back online: the controller starts it there, as it completes any start. (Both agents of this test share
        # one database, where env_b's record of crm_envs would pass for env_a's.)
        HostedState.objects.all().delete()
        with ThreadAgent("env_a"):
            controller = Controller(timeout=60)
            controller.mirror()
            assert controller.reconcile_one()
            assert dict(Placement.objects.values_list("environment__name", "state")) == {
                "env_a": "running", "env_b": "running"}
        assert sent == [("start", "env_a", False)]

    register_environment("env_a", heartbeat_at=0)
    with ThreadAgent("env_b"):
        left = patch(client, "crm_envs", {"environments": ["env_b"], "drop_database": True})

        assert left.status_code == 202, left.json()
        assert left.json()["pending"] == {
            "added": [], "removed": ["env_a"], "waiting_for": ["env_a"],
            "message": "crm_envs is removed from env_a by the controller once env_a is back online"}
        assert left.json()["environments"] == ["env_b"]
        entry = config_cache.lookup(r, "crm_envs")
        assert entry["environments"] == ["env_b"] and entry[contract.LEAVING] == ["env_a"]
        assert Removal.objects.get().drop_database
        controller = Controller(timeout=60)
        controller.mirror()
        assert not controller.remove_one()  # still offline: nothing sent

        with ThreadAgent("env_a"):
            controller.mirror()
            assert controller.remove_one()

    assert sent[-1] == ("remove", "env_a", True)
    assert not Removal.objects.exists()
    assert config_cache.lookup(r, "crm_envs")[contract.LEAVING] == []


@pytest.mark.django_db(transaction=True)
def test_an_environment_added_back_before_its_removal_ran_keeps_the_application(client, r, sent):
    register_environment("env_a", heartbeat_at=0)
    register_environment("env_b")
    create_application("crm_envs", ["env_b", "env_a"])

    assert patch(client, "crm_envs", {"environments": ["env_b"]}).status_code == 202
    assert Removal.objects.filter(environment__name="env_a").exists()
    back = patch(client, "crm_envs", {"environments": ["env_a", "env_b"]})

    assert back.status_code == 200, back.json()  # stopped: nothing to start, nothing waits
    assert back.json()["environments"] == ["env_a", "env_b"]
    assert not Removal.objects.exists()
    assert config_cache.lookup(r, "crm_envs")[contract.LEAVING] == []
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_deleting_an_application_forgets_its_states_where_its_removal_was_pending(client, r):
    register_environment("env_a", heartbeat_at=0)
    with ThreadAgent("env_b"):
        create_application("crm_envs", ["env_b", "env_a"])
        status.write(r, "crm_envs", "env_a", contract.RUNNING)
        assert patch(client, "crm_envs", {"environments": ["env_b"]}).status_code == 202

        assert client.delete("/api/apps/crm_envs/?timeout=60", headers=AUTH).status_code == 204

    assert not Application.objects.exists() and not Removal.objects.exists()
    assert r.hget(contract.STATUSES_KEY, contract.status_field("crm_envs", "env_a")) is None
    assert config_cache.lookup(r, "crm_envs") is None


# -- the admin -----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_admin_change_form_adds_and_removes_environments(admin_client, r, sent):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm_envs", ["env_b"])
        assert admin_client.post(app_url("start", "crm_envs"), {"post": "yes"}).status_code == 302
        sent.clear()
        url = app_url("change", "crm_envs")

        response = admin_client.post(url, {"display_name": "CRM", "environments_0": "env_b",
                                           "environments_1": "env_a"}, follow=True)

        assert placed("crm_envs") == ["env_b", "env_a"]
        assert sent == [("start", "env_a", False)]
        text = " ".join(text for _, text in messages_of(response))
        assert "crm_envs now runs on env_b → env_a" in text and "Started on env_a" in text

        response = admin_client.post(url, {"display_name": "CRM", "environments_0": "env_b"}, follow=True)

        assert placed("crm_envs") == ["env_b"]
        assert sent[-1] == ("remove", "env_a", False)
        assert "Removed from env_a" in " ".join(text for _, text in messages_of(response))


@pytest.mark.django_db
def test_the_admin_change_form_refuses_no_environment_and_shows_a_pending_removal(admin_client, r):
    register_environment("env_a", heartbeat_at=0)
    register_environment("env_b")
    application = create_application("crm_envs", ["env_b"])
    Removal.objects.create(application=application, environment=Environment.objects.get(name="env_a"))
    url = app_url("change", "crm_envs")

    response = admin_client.post(url, {"display_name": "CRM", "environments_0": "", "environments_1": ""})

    assert response.status_code == 200
    assert "at least one environment" in response.context["adminform"].form.errors["environments"][0]
    html = admin_client.get(url).content.decode()
    assert "env_a: waiting for it to be back online" in html and "its database is kept" in html
