"""The Applications admin's Move action (apps.move_admin): a confirmation page asking from and to, then the move."""

import pytest
from django.urls import reverse

from apps import lifecycle
from apps.models import Application, Move

from .factories import ThreadAgent, create_application, register_environment
from .pages import messages_of

CHANGELIST = reverse("admin:apps_application_changelist")


def select(*names, **extra):
    return {"action": "move", "_selected_action": [Application.objects.get(name=n).pk for n in names], **extra}


@pytest.fixture(autouse=True)
def _controller(controller_running):
    pass


@pytest.mark.django_db
def test_the_move_action_asks_from_where_and_to_where_first(admin_client):
    register_environment("env_a")
    register_environment("env_b")
    register_environment("env_c", heartbeat_at=0)  # offline: offered, with the reason it cannot take it
    create_application("crm", ["env_a"])

    page = admin_client.post(CHANGELIST, select("crm"))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Move crm?" in html
    assert '<option value="env_a">env_a</option>' in html
    assert '<option value="env_b">env_b</option>' in html
    assert "env_c (environment env_c is offline" in html
    assert not Move.objects.exists()


@pytest.mark.django_db
def test_the_move_action_takes_one_application_at_a_time(admin_client):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    response = admin_client.post(CHANGELIST, select("crm", "erp"), follow=True)
    assert [level for level, _ in messages_of(response)] == ["warning"]


@pytest.mark.django_db(transaction=True)
def test_confirming_the_move_runs_it_and_says_so(admin_client):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        response = admin_client.post(CHANGELIST, select("crm", post="yes", source="env_a", destination="env_b"),
                                     follow=True)

    [(level, text)] = messages_of(response)
    assert level == "success", text
    assert text.startswith("crm moved from env_a to env_b with its data")
    assert Application.objects.get(name="crm").environment_names() == ["env_b"]
    assert Move.objects.get().state == Move.DONE
