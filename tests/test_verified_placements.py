"""Only environments whose registration verified take placements: one written to Redis without the shared secret
is refused by name, in the API and in the admin's add form (apps.forms)."""

import json
import time

import pytest
import redis
from django.urls import reverse

from apps.models import Application
from environments.models import Environment
from exchange.contract import ENVIRONMENTS_KEY

from .factories import PASSWORD, mirror, register_environment

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def forged(redis_url):
    """env_x, written to Redis by someone without the secret (a plain client, no signature), and mirrored."""
    register_environment("env_a")
    plain = redis.Redis.from_url(redis_url)
    plain.hset(ENVIRONMENTS_KEY, "env_x", json.dumps({
        "name": "env_x", "url": "http://evil.test:8000", "proxy_url": "", "version": "1", "host": "evil", "pid": 1,
        "heartbeat_at": time.time()}))
    mirror()
    return "env_x"


def create(client, environments):
    return client.post("/api/apps/", json.dumps({
        "name": "crm", "environments": environments, "admin_username": "boss", "admin_password": PASSWORD}),
        content_type="application/json", headers=AUTH)


def test_an_environment_whose_registration_never_verified_is_refused_with_400_naming_it(client, forged):
    response = create(client, ["env_a", "env_x"])

    assert response.status_code == 400, response.content
    [message] = response.json()["errors"]["environments"]
    assert message.startswith("Environment env_x takes no placements: its registration in Redis does not verify: "
                              "not signed")
    assert message.endswith("Verified: env_a.")
    assert not Application.objects.exists()


def test_an_environment_whose_registration_was_overwritten_without_the_secret_is_refused(client, r, redis_url):
    register_environment("env_a")
    register_environment("env_b")
    redis.Redis.from_url(redis_url).hset(ENVIRONMENTS_KEY, "env_b", b"not signed at all")
    mirror()
    assert Environment.objects.get(name="env_b").rejected  # the row stays, shown as rejected

    response = create(client, ["env_b"])

    assert response.status_code == 400
    assert response.json()["errors"]["environments"][0].startswith("Environment env_b takes no placements")


def test_a_name_nobody_registered_is_refused_as_unknown(client, forged):
    response = create(client, ["env_nowhere"])

    assert response.status_code == 400
    assert response.json()["errors"]["environments"] == ["Unknown environment: env_nowhere. Known: env_a."]


def test_the_admin_add_form_refuses_it_with_a_form_error(admin_client, forged):
    response = admin_client.post(reverse("admin:apps_application_add"), {
        "name": "crm", "environments_0": "env_x", "environments_1": "", "environments_2": "", "environments_3": "",
        "admin_username": "boss", "admin_password": PASSWORD})

    assert response.status_code == 200
    [message] = response.context["adminform"].form.errors["environments"]
    assert message.startswith("Environment env_x takes no placements")
    assert not Application.objects.exists()


def test_a_verified_environment_still_takes_placements(client, forged):
    assert create(client, ["env_a"]).status_code == 201
