"""The admin's start, stop and restart need apps.operate_application, as the API's do; editing does not give it."""

import pytest
from django.urls import reverse

from apps.models import Application
from exchange import contract
from exchange.channel import queue_for

from .factories import create_application, register_environment, staff_user

pytestmark = pytest.mark.django_db

COMMANDS = ("start", "stop", "restart")


@pytest.fixture(autouse=True)
def crm(controller_running, r):
    register_environment("env_a")
    return create_application("crm", ["env_a"])


def url(view, application):
    return reverse(f"admin:apps_application_{view}", args=[application.pk])


def test_an_editor_without_the_operate_permission_can_neither_see_nor_use_start_stop_restart(client, crm):
    client.force_login(staff_user("editor", "apps.view_application", "apps.change_application"))

    changelist = client.get(reverse("admin:apps_application_changelist")).content.decode()
    change = client.get(url("change", crm)).content.decode()
    for command in COMMANDS:
        assert f'<option value="{command}">' not in changelist
        assert f'href="{url(command, crm)}"' not in change
        assert client.get(url(command, crm)).status_code == 403
        assert client.post(url(command, crm), {"post": "yes"}).status_code == 403
    client.post(reverse("admin:apps_application_changelist"),
                {"action": "start", "_selected_action": [crm.pk], "post": "yes"})
    assert queue_for("env_a").count == 0
    assert Application.objects.get(pk=crm.pk).desired_state == contract.STOPPED


def test_an_operator_gets_the_actions_and_the_buttons(client, crm):
    client.force_login(staff_user("operator", "apps.view_application", "apps.operate_application"))

    changelist = client.get(reverse("admin:apps_application_changelist")).content.decode()
    change = client.get(url("change", crm)).content.decode()
    for command in COMMANDS:
        assert f'<option value="{command}">' in changelist
        assert f'href="{url(command, crm)}"' in change
        assert client.get(url(command, crm)).status_code == 200  # the confirmation; nothing sent yet
    assert queue_for("env_a").count == 0
