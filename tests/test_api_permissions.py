"""The JSON API enforces Django's model permissions as the admin does; the bootstrap token acts as a superuser."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from apps.models import OPERATE_PERMISSION, Application
from environments.models import Environment

from .factories import create_application, register_environment, staff_user

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token-for-permission-tests"
NEW_APP = {"name": "erp", "display_name": "ERP", "environments": ["env_a"], "admin_username": "boss",
           "admin_password": "correct-horse-battery"}
WRITES = [
    ("post", "/api/apps/", "apps.add_application"),
    ("post", "/api/apps/crm/start", OPERATE_PERMISSION),
    ("post", "/api/apps/crm/stop", OPERATE_PERMISSION),
    ("post", "/api/apps/crm/restart", OPERATE_PERMISSION),
    ("delete", "/api/apps/crm/?drop_database=true", "apps.delete_application"),
    ("delete", "/api/environments/env_a?force=true", "environments.delete_environment"),
]
READS = [
    ("/api/apps/", "apps.view_application"),
    ("/api/apps/crm/", "apps.view_application"),
    ("/api/environments/", "environments.view_environment"),
]


@pytest.fixture(autouse=True)
def crm(settings, controller_running, r):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    register_environment("env_a")
    return create_application("crm", ["env_a"])


def call(client, method, path, **kwargs):
    if method == "post":
        return client.post(path, json.dumps(NEW_APP), content_type="application/json", **kwargs)
    return getattr(client, method)(path, **kwargs)


def test_a_staff_user_without_permissions_gets_403_from_every_api_write(client):
    client.force_login(staff_user("intern"))
    for method, path, permission in WRITES:
        response = call(client, method, path)
        assert response.status_code == 403, path
        assert response.json()["permission"] == permission, path
        assert permission in response.json()["error"] and "intern" in response.json()["error"]
    assert list(Application.objects.values_list("name", flat=True)) == ["crm"]
    assert Environment.objects.filter(name="env_a").exists()
    assert Application.objects.get(name="crm").desired_state == "stopped"


def test_a_staff_user_without_permissions_reads_nothing(client):
    client.force_login(staff_user("intern"))
    for path, permission in READS:
        response = client.get(path)
        assert (response.status_code, response.json()["permission"]) == (403, permission), path


def test_a_user_with_view_permission_lists_apps_but_cannot_start_one(client):
    client.force_login(staff_user("viewer", "apps.view_application"))
    listed = client.get("/api/apps/")
    assert listed.status_code == 200 and [app["name"] for app in listed.json()["apps"]] == ["crm"]
    assert client.get("/api/apps/crm/").status_code == 200
    refused = client.post("/api/apps/crm/start", content_type="application/json")
    assert (refused.status_code, refused.json()["permission"]) == (403, "apps.operate_application")
    assert Application.objects.get(name="crm").desired_state == "stopped"


def test_the_change_permission_lets_a_user_read_as_the_admin_does(client):
    client.force_login(staff_user("editor", "apps.change_application"))
    assert client.get("/api/apps/").status_code == 200
    assert client.get("/api/environments/").status_code == 403  # no permission on environments


def test_each_write_passes_with_exactly_its_own_permission(client):
    """With its permission a request reaches the endpoint, which then answers for what it names (an unknown
    application or environment: 404; a create naming an unknown environment: 400); with all the others it does not."""
    for index, (method, path, permission) in enumerate(WRITES):
        client.force_login(staff_user(f"other{index}", *[p for _, _, p in WRITES if p != permission]))
        assert call(client, method, path).status_code == 403, path
        client.force_login(staff_user(f"holder{index}", permission))
        if path == "/api/apps/":
            response = client.post(path, json.dumps({**NEW_APP, "environments": ["env_ghost"]}),
                                   content_type="application/json")
            assert response.status_code == 400, path
        else:
            ghost = path.replace("crm", "ghost").replace("env_a", "env_ghost")
            assert call(client, method, ghost).status_code == 404, ghost


def test_permissions_granted_through_a_group_count(client):
    group = Group.objects.create(name="operators")
    group.permissions.add(Permission.objects.get(codename="operate_application"))
    user = staff_user("ops")
    user.groups.add(group)
    client.force_login(user)
    assert client.post("/api/apps/ghost/start", content_type="application/json").status_code == 404  # let in; the endpoint knows no ghost


def test_a_superuser_session_and_the_bootstrap_token_need_no_permission(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    assert client.get("/api/environments/").status_code == 200
    client.logout()
    token = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/environments/", headers=token).status_code == 200
    assert client.post("/api/apps/ghost/start", content_type="application/json", headers=token).status_code == 404


def test_a_method_not_allowed_is_405_before_any_permission(client):
    client.force_login(staff_user("intern"))
    assert client.put("/api/apps/").status_code == 405
