"""The admin's index is an overview (monitoring.overview): applications by state, environments by status, what
needs attention, errors, recent state changes and alerts, each a live fragment; a user sees only the parts they
may view, and the number of queries does not grow with the rows."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.models import Alert
from apps.models import Placement
from exchange import contract

from .factories import create_application, register_environment, staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=time.time() - 3600)  # offline
    create_application("crm", ["env_a"])
    create_application("wiki", ["env_a", "env_b"])
    Placement.objects.filter(application__name="crm").update(state=contract.ERROR, error="migration <b>failed</b>",
                                                             state_at=timezone.now())
    Alert.objects.create(event="environment.offline", environment="env_b", message="env_b is offline")


def test_the_index_shows_the_fleet_at_a_glance(admin_client, fleet):
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-live-fragment="overview:applications"' in text
    assert "2 desired stopped" in text
    assert '<span class="appsup-badge appsup-badge-error">error</span> 1' in text
    assert '<span class="appsup-badge appsup-badge-unknown">unknown</span> 1' in text  # wiki on offline env_b
    assert '<span class="appsup-badge appsup-badge-online">online</span> 1' in text
    assert '<span class="appsup-badge appsup-badge-offline">offline</span> 1' in text
    assert "?attention=yes\">2 applications</a>" in text
    assert "migration &lt;b&gt;failed&lt;/b&gt;" in text  # escaped
    assert "env_b is offline" in text
    assert "/admin/apps/application/" in text  # Django's list of models is still there


def test_a_user_sees_only_what_they_may_view(client, fleet):
    client.force_login(staff_user("envs", "environments.view_environment"))
    text = client.get("/admin/").content.decode()
    assert 'data-live-fragment="overview:environments"' in text
    assert "overview:applications" not in text and "Recent alerts" not in text and "crm" not in text


def test_its_queries_do_not_grow_with_the_fleet(admin_client, fleet):
    with CaptureQueriesContext(connection) as few:
        admin_client.get("/admin/")
    for i in range(10):
        create_application(f"app{i}", ["env_a", "env_b"])
    with CaptureQueriesContext(connection) as many:
        admin_client.get("/admin/")
    assert len(many) == len(few)


def test_a_long_display_name_is_cut_in_the_applications_list_and_whole_in_its_title(admin_client):
    register_environment("env_a")
    long_name = ("A very long display name " * 8).strip()
    create_application("crm", ["env_a"], display_name=long_name)
    text = admin_client.get("/admin/apps/application/").content.decode()
    assert f'<span class="appsup-display-name" title="{long_name}">{long_name}</span>' in text
    css = open("apps/static/apps/admin.css").read()
    rule = css[css.index(".appsup-display-name {"):]
    assert "text-overflow: ellipsis" in rule[:rule.index("}")] and "max-width" in rule[:rule.index("}")]
