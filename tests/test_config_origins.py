"""APP_APPS_DOMAIN, APP_SUPERVISOR_HOSTS and APP_SIGNIN_MAX_AGE (supervisor_project.config): an origin per
application needs the supervisor's own hosts, outside the applications' domain; bad values stop start-up naming the
variable."""

import pytest

from supervisor_project.config import load

from .test_config import SUPERVISOR, WORKER, problems_of

ORIGINS = {"APP_APPS_DOMAIN": "Apps.Example.com.", "APP_SUPERVISOR_HOSTS": "admin.example.com, 10.0.0.5"}


def test_an_origin_per_application_is_configured_with_the_supervisors_own_hosts():
    config = load({**SUPERVISOR, **ORIGINS})
    assert config.apps_domain == "apps.example.com"
    assert config.supervisor_hosts == ("admin.example.com", "10.0.0.5")
    # The hosts Django accepts follow, unless ALLOWED_HOSTS says otherwise.
    assert {"admin.example.com", ".apps.example.com"} <= set(config.allowed_hosts)
    assert load({**SUPERVISOR, **ORIGINS, "ALLOWED_HOSTS": "admin.example.com"}).allowed_hosts == ["admin.example.com"]
    worker = load({**WORKER, "APP_APPS_DOMAIN": "apps.example.com"})
    assert worker.apps_domain == "apps.example.com" and ".apps.example.com" in worker.allowed_hosts
    assert load(SUPERVISOR).apps_domain == "" and load(SUPERVISOR).signin_max_age == 60


@pytest.mark.parametrize("environ, message", [
    ({**SUPERVISOR, "APP_APPS_DOMAIN": "apps.example.com"}, "APP_SUPERVISOR_HOSTS is required"),
    ({**SUPERVISOR, "APP_SUPERVISOR_HOSTS": "admin.example.com"}, "without APP_APPS_DOMAIN"),
    ({**SUPERVISOR, "APP_APPS_DOMAIN": "not a domain", "APP_SUPERVISOR_HOSTS": "a.example.com"}, "APP_APPS_DOMAIN="),
    ({**SUPERVISOR, **ORIGINS, "APP_SUPERVISOR_HOSTS": "admin.apps.example.com"}, "inside APP_APPS_DOMAIN"),
    ({**SUPERVISOR, **ORIGINS, "APP_SUPERVISOR_HOSTS": "http://admin.example.com"}, "not a host name"),
    ({"APP_APPS_DOMAIN": "apps.example.com"}, "single instance"),
    ({**SUPERVISOR, "APP_SIGNIN_MAX_AGE": "61"}, "APP_SIGNIN_MAX_AGE='61'"),
    ({**SUPERVISOR, "APP_SIGNIN_MAX_AGE": "0"}, "APP_SIGNIN_MAX_AGE='0'"),
])
def test_a_bad_or_contradictory_value_is_refused_naming_the_variable(environ, message):
    _, text = problems_of(environ)
    assert message in text
