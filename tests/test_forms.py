"""The application create form (admin add page and POST /api/apps/): what the hosted application's Django
would refuse is refused here, before any worker tries it."""

import pytest

from apps.forms import ApplicationCreateForm

from .factories import PASSWORD, register_environment

pytestmark = pytest.mark.django_db


def form_with(**change):
    register_environment("env_a")
    data = {"name": "crm", "display_name": "CRM", "environments": ["env_a"], "admin_username": "admin",
            "admin_password": PASSWORD}
    return ApplicationCreateForm(dict(data, **change))


@pytest.mark.parametrize("username", ["admin", "ops.admin+crm@example.com", "zoë-ops_1", "a" * 150])
def test_admin_usernames_django_accepts_are_accepted(username):
    form = form_with(admin_username=username)
    assert form.is_valid(), form.errors


@pytest.mark.parametrize(
    "username, message",
    [
        ("bad user!", "Enter a valid username"),
        ("boss/../root", "Enter a valid username"),
        ("a" * 151, "at most 150 characters"),
        ("", "required"),
    ],
)
def test_admin_usernames_django_would_refuse_are_refused(username, message):
    form = form_with(admin_username=username)
    assert not form.is_valid()
    assert list(form.errors) == ["admin_username"]
    assert any(message in m for m in form.errors["admin_username"]), form.errors
