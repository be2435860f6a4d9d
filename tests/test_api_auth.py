"""Who may use the JSON API: a bearer token or a staff session; everyone else gets a JSON 401."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token-for-tests-012345678"


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


def bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def test_no_credentials_are_refused_with_a_bearer_challenge(client):
    response = client.get("/api/apps/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "authentication required" in response.json()["error"]


def test_a_wrong_token_is_refused_saying_the_token_is_wrong(client):
    response = client.get("/api/apps/", headers=bearer("guess"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "invalid bearer token" in response.json()["error"]


def test_an_authorization_header_that_is_not_bearer_is_refused(client):
    response = client.get("/api/apps/", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]


def test_an_empty_configured_token_matches_nothing(client, settings):
    settings.SUPERVISOR_API_TOKEN = ""
    for header in ({"Authorization": "Bearer "}, {"Authorization": "Bearer x"}, bearer("")):
        response = client.get("/api/apps/", headers=header)
        assert response.status_code == 401, header
    assert "not set" in client.get("/api/apps/", headers=bearer("x")).json()["error"]


def test_the_configured_bearer_token_gives_access(client):
    response = client.get("/api/apps/", headers=bearer())
    assert response.status_code == 200
    assert response.json() == {"apps": [], "next": None}


def test_a_staff_session_gives_access(admin_client):
    assert admin_client.get("/api/environments/").status_code == 200


def test_a_session_of_a_user_who_is_not_staff_is_refused(client):
    user = get_user_model().objects.create_user("visitor", password="irrelevant-pass")
    client.force_login(user)
    response = client.get("/api/apps/")
    assert response.status_code == 401
    assert "not active staff" in response.json()["error"]


def test_a_wrong_token_is_refused_even_alongside_a_staff_session(admin_client):
    assert admin_client.get("/api/apps/", headers=bearer("guess")).status_code == 401


def test_a_session_must_pass_the_csrf_check_on_unsafe_methods(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    refused = client.post("/api/apps/", {}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]

    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    accepted = client.post("/api/apps/", {}, content_type="application/json", headers={"X-CSRFToken": secret})
    assert accepted.status_code == 400  # past the CSRF check, on to validation


def test_a_bearer_token_needs_no_csrf_token():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/apps/", {}, content_type="application/json", headers=bearer())
    assert response.status_code == 400


def test_a_wrong_method_is_a_json_405_with_allow(client):
    response = client.put("/api/apps/", headers=bearer())
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert "PUT" in response.json()["error"]


def test_an_unknown_endpoint_is_a_json_404(client):
    response = client.get("/api/nothing/here", headers=bearer())
    assert response.status_code == 404
    assert "no API endpoint" in response.json()["error"]


def test_an_unexpected_error_is_a_json_500(client, monkeypatch):
    from environments import api

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "environment_dict", broken)
    from environments.models import Environment

    Environment.objects.create(name="env_a", url="http://env_a.test:8000")
    response = client.get("/api/environments/", headers=bearer())
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the supervisor's log has the details"}
