"""The supervisor's admin login locks a username out, from one address, after repeated wrong passwords."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from workers import provisioning
from workers.routing import using

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture(autouse=True)
def operator():
    return get_user_model().objects.create_superuser("operator", password=PASSWORD)


def log_in(client, password, username="operator"):
    return client.post(LOGIN, {"username": username, "password": password})


def logged_in(response):
    return response.status_code == 302 and response.url == "/admin/"


def test_the_admin_login_locks_out_after_repeated_failures(settings):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        response = log_in(client, f"guess-{attempt}")
        assert response.status_code == 200 and "Please enter the correct username" in response.content.decode()
    locked = log_in(client, "one-guess-too-many")
    assert locked.status_code == 429
    assert "locked" in locked.content.decode().lower()
    # Locked out means the right password no longer works either, until the cool-off ends.
    assert log_in(client, PASSWORD).status_code == 429


def test_a_lockout_is_for_that_username_from_that_address_only(settings):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        log_in(attacker, f"guess-{attempt}")
    assert log_in(attacker, PASSWORD).status_code == 429
    assert logged_in(log_in(Client(REMOTE_ADDR="198.51.100.2"), PASSWORD))  # the operator, elsewhere
    get_user_model().objects.create_superuser("colleague", password=PASSWORD)
    assert logged_in(log_in(attacker, PASSWORD, username="colleague"))


def test_a_forwarded_for_header_does_not_dodge_the_lockout(settings):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": "operator", "password": f"guess-{attempt}"},
                    HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}")
    assert client.post(LOGIN, {"username": "operator", "password": PASSWORD},
                       HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


def test_a_success_before_the_limit_starts_the_count_again(settings):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(2):
        for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
            log_in(client, f"typo-{attempt}")
        assert logged_in(log_in(client, PASSWORD))
        client.logout()


def test_code_that_authenticates_without_a_request_is_not_refused():
    from django.contrib.auth import authenticate

    assert authenticate(username="operator", password=PASSWORD) is not None


def test_a_hosted_applications_logins_are_not_throttled_by_the_supervisor(settings):
    from supervisor_project import throttle

    with using(provisioning.alias("crm")):
        assert throttle.hosted_request()
        assert throttle.not_the_supervisors_login(None, {}) is True
    assert not throttle.hosted_request()
