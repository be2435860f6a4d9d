"""Per-user API tokens: created in the admin and shown once, stored hashed, acting with their user's permissions,
refused once expired or revoked; the last use is recorded."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from apitokens.models import ApiToken

from .factories import create_application, register_environment, staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def crm(settings, controller_running, r):
    settings.SUPERVISOR_API_TOKEN = ""  # per-user tokens work without the bootstrap one
    register_environment("env_a")
    return create_application("crm", ["env_a"])


def issued(user, **fields):
    api_token = ApiToken(user=user, name="script", **fields)
    token = api_token.issue()
    api_token.save()
    return token


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_token_with_view_permission_lists_apps_but_cannot_start_one(client):
    token = issued(staff_user("reader", "apps.view_application"))
    listed = client.get("/api/apps/", headers=bearer(token))
    assert listed.status_code == 200 and [app["name"] for app in listed.json()["apps"]] == ["crm"]
    refused = client.post("/api/apps/crm/start", content_type="application/json", headers=bearer(token))
    assert (refused.status_code, refused.json()["permission"]) == (403, "apps.operate_application")


def test_a_token_needs_no_csrf_token_for_writes_it_is_allowed(client):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    token = issued(staff_user("operator", "apps.operate_application"))
    answer = strict.post("/api/apps/ghost/start", content_type="application/json", headers=bearer(token))
    assert answer.status_code == 404  # let in (no CSRF asked of a bearer token); the endpoint knows no ghost


def test_an_expired_or_revoked_token_or_an_inactive_user_is_refused(client):
    user = staff_user("reader", "apps.view_application")
    expired = issued(user, expires_at=timezone.now() - timedelta(seconds=1))
    revoked = issued(user, revoked_at=timezone.now())
    for token in (expired, revoked, "appsup_" + "x" * 43):
        answer = client.get("/api/apps/", headers=bearer(token))
        assert answer.status_code == 401 and "expired" in answer.json()["error"], token
    live = issued(user, expires_at=timezone.now() + timedelta(days=1))
    assert client.get("/api/apps/", headers=bearer(live)).status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/apps/", headers=bearer(live)).status_code == 401


def test_only_the_hash_is_stored_and_the_last_use_is_recorded(client):
    token = issued(staff_user("reader", "apps.view_application"))
    stored = ApiToken.objects.get()
    assert stored.key_hash == hashlib.sha256(token.encode()).hexdigest() and token not in stored.hint
    assert stored.last_used_at is None
    client.get("/api/apps/", headers=bearer(token))
    used = ApiToken.objects.get().last_used_at
    assert used is not None
    client.get("/api/apps/", headers=bearer(token))
    assert ApiToken.objects.get().last_used_at == used  # at most once a minute


def test_the_admin_creates_a_token_shows_it_once_and_revokes_it(client):
    client.force_login(staff_user("ops", "apps.view_application", "apitokens.add_apitoken",
                                  "apitokens.view_apitoken", "apitokens.change_apitoken"))
    created = client.post(reverse("admin:apitokens_apitoken_add"), {"name": "deploy"}, follow=True)
    shown = re.search(r"is (appsup_[A-Za-z0-9_-]+)", created.content.decode()).group(1)
    api_token = ApiToken.objects.get()
    assert api_token.user.username == "ops"  # a non-superuser's token is always their own
    assert shown not in client.get(reverse("admin:apitokens_apitoken_change", args=[api_token.pk])).content.decode()
    client.logout()
    assert client.get("/api/apps/", headers=bearer(shown)).status_code == 200

    client.force_login(get_user_model().objects.get(username="ops"))
    client.post(reverse("admin:apitokens_apitoken_changelist"),
                {"action": "revoke", "_selected_action": [api_token.pk]})
    client.logout()
    assert client.get("/api/apps/", headers=bearer(shown)).status_code == 401


def test_a_staff_user_sees_and_revokes_only_their_own_tokens(client):
    roots = issued(get_user_model().objects.create_superuser("root", password="x"))
    client.force_login(staff_user("ops", "apitokens.view_apitoken", "apitokens.change_apitoken"))
    page = client.get(reverse("admin:apitokens_apitoken_changelist")).content.decode()
    assert "root" not in page
    client.post(reverse("admin:apitokens_apitoken_changelist"),
                {"action": "revoke", "_selected_action": [ApiToken.objects.get().pk]})
    assert ApiToken.objects.get().revoked_at is None
    assert ApiToken.objects.for_token(roots) is not None
