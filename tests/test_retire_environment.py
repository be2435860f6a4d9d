"""Forgetting an environment that will never answer: DELETE /api/environments/<name> and the admin's "Forget
environment" (environments.retire)."""

import pytest
from django.urls import reverse

from apps.models import Application, Placement
from environments.models import Environment
from exchange import cache, contract, registry, status

from .factories import create_application, mirror, register_environment

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def env_b_dead(r):
    """crm on env_a and env_b, erp only on env_b, and env_b's worker gone for good."""
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a", "env_b"])
    create_application("erp", ["env_b"])
    status.write(r, "crm", "env_b", contract.RUNNING)
    register_environment("env_b", heartbeat_at=0)  # its last heartbeat long past: offline
    mirror()


def delete(client, path):
    return client.delete(path, headers=AUTH)


def test_an_environment_hosting_applications_is_refused_without_force_naming_them(client, env_b_dead):
    response = delete(client, "/api/environments/env_b")

    assert response.status_code == 409
    body = response.json()
    assert body["environment"] == "env_b" and body["applications"] == ["crm", "erp"]
    assert body["error"] == (
        "environment env_b hosts applications (crm, erp). Forgetting env_b removes the environment and its placements "
        "of crm, erp: the applications keep their other placements and keep running there; their data on env_b "
        "(databases, files) is not reachable and is not deleted. Hosted only on env_b: erp, left with no environment "
        "(delete them, or place them elsewhere). To do that, ask again with force=true.")
    assert Environment.objects.filter(name="env_b").exists()
    assert Placement.objects.filter(environment__name="env_b").count() == 2


def test_force_removes_the_environment_and_its_placements_and_the_applications_keep_the_others(client, r, env_b_dead):
    response = delete(client, "/api/environments/env_b?force=true")

    assert response.status_code == 204, response.content
    assert not Environment.objects.filter(name="env_b").exists()
    crm = Application.objects.get(name="crm")
    assert crm.environment_names() == ["env_a"]
    assert Application.objects.get(name="erp").environment_names() == []
    # Redis forgets it too: no registration (the mirror would bring the row back), the applications' cache entries
    # name env_a only, and crm's status there is gone (the proxy offers env_b no more).
    assert "env_b" not in registry.read(r)
    assert cache.lookup(r, "crm")["environments"] == ["env_a"]
    assert r.hget(contract.STATUSES_KEY, contract.status_field("crm", "env_b")) is None
    mirror()
    assert not Environment.objects.filter(name="env_b").exists()


def test_an_application_left_with_no_environment_is_deleted_without_force(client, env_b_dead):
    assert delete(client, "/api/environments/env_b?force=true").status_code == 204

    assert delete(client, "/api/apps/erp").status_code == 204
    assert not Application.objects.filter(name="erp").exists()


def test_a_forgotten_environment_whose_worker_comes_back_is_new_and_hosts_nothing(client, env_b_dead):
    assert delete(client, "/api/environments/env_b?force=true").status_code == 204

    register_environment("env_b")  # its worker was not dead after all: it heartbeats again

    environment = Environment.objects.get(name="env_b")
    assert environment.is_online() and not environment.placements.exists()
    assert Application.objects.get(name="crm").environment_names() == ["env_a"]


def test_an_online_environment_is_not_forgotten_even_with_force(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    response = delete(client, "/api/environments/env_a?force=true")

    assert response.status_code == 409
    assert response.json()["error"].startswith("environment env_a is online: its worker would register it again")
    assert Environment.objects.filter(name="env_a").exists()


def test_an_offline_environment_hosting_nothing_is_deleted_without_force(client, r):
    register_environment("env_c", heartbeat_at=0)

    assert delete(client, "/api/environments/env_c").status_code == 204
    assert not Environment.objects.filter(name="env_c").exists()
    assert "env_c" not in registry.read(r)


@pytest.mark.parametrize("path, code", [
    ("/api/environments/nowhere", 404),
    ("/api/environments/env_b?force=maybe", 400),
])
def test_bad_requests_are_refused_saying_what_is_wrong(client, env_b_dead, path, code):
    response = delete(client, path)

    assert response.status_code == code
    assert "nowhere" in response.json()["error"] or "force='maybe'" in response.json()["error"]


def test_deleting_an_environment_needs_credentials(client, env_b_dead):
    assert client.delete("/api/environments/env_b?force=true").status_code == 401
    assert Environment.objects.filter(name="env_b").exists()


# -- the admin -------------------------------------------------------------------------------------------------


def forget_url(name):
    return reverse("admin:environments_environment_forget", args=[Environment.objects.get(name=name).pk])


def test_the_admin_confirmation_names_the_applications_and_says_their_data_there_is_not_reachable(admin_client,
                                                                                                 env_b_dead):
    change = admin_client.get(reverse("admin:environments_environment_change",
                                      args=[Environment.objects.get(name="env_b").pk]))
    assert "Forget environment" in change.content.decode()

    page = admin_client.get(forget_url("env_b"))

    assert page.status_code == 200
    text = page.content.decode()
    assert "Forget environment env_b?" in text
    assert "<strong>crm</strong>: keeps running on its other environments" in text
    assert "<strong>erp</strong>: hosted only here, left with no environment" in text
    assert "their data on env_b (databases, files) is not reachable" in text
    assert 'id="site-name"' in text  # extends admin/base_site.html
    assert Environment.objects.filter(name="env_b").exists()  # nothing happens before the confirmation


def test_confirming_in_the_admin_forgets_it(admin_client, r, env_b_dead):
    response = admin_client.post(forget_url("env_b"), {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert "Environment env_b was forgotten, with its placements of crm, erp." in response.content.decode()
    assert not Environment.objects.filter(name="env_b").exists()
    assert cache.lookup(r, "crm")["environments"] == ["env_a"]


def test_the_admin_action_leads_to_the_confirmation(admin_client, env_b_dead):
    env_b = Environment.objects.get(name="env_b")
    response = admin_client.post(reverse("admin:environments_environment_changelist"),
                                 {"action": "forget", "_selected_action": [env_b.pk]})

    assert response.status_code == 302 and response["Location"] == forget_url("env_b")


def test_the_admin_refuses_to_forget_an_online_environment(admin_client):
    register_environment("env_a")

    page = admin_client.get(forget_url("env_a"))
    assert "is online: its worker would register it again" in page.content.decode()
    admin_client.post(forget_url("env_a"), {"post": "yes"})
    assert Environment.objects.filter(name="env_a").exists()


def test_force_removes_an_application_whose_environments_will_never_answer(client, r, env_b_dead):
    refused = delete(client, "/api/apps/erp")
    assert refused.status_code == 409
    assert "DELETE /api/apps/erp?force=true removes the application without it" in refused.json()["error"]

    response = delete(client, "/api/apps/erp?force=true")

    assert response.status_code == 204, response.content
    assert not Application.objects.filter(name="erp").exists()
    assert cache.lookup(r, "erp") is None  # the proxy answers 404
