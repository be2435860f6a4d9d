"""APP_HOSTED_URLCONF, the operator's URLconf mounted beside the hosted admin (workers/hosted_urls.py): checked at
start, so a wrong value stops the process with a message naming the variable rather than failing requests."""

import pytest

from supervisor_project.config import ConfigError, load
from workers.hosted_urls import operator_patterns

from .conftest import free_port
from .processes import SUPERVISOR_KEY, base_env, manage, web_process, worker_env

SECRET = {"APP_SUPERVISOR_KEY": SUPERVISOR_KEY}


def test_it_is_optional_and_read_without_spaces():
    assert load({}).hosted_urlconf == ""
    assert load({"APP_HOSTED_URLCONF": " samples.notes.urls "}).hosted_urlconf == "samples.notes.urls"


@pytest.mark.parametrize("value", ["no.such.urls", "samples.notes.nourls", "samples/notes/urls.py", ".urls"])
def test_a_module_that_cannot_be_imported_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigError) as refused:
        load({"APP_HOSTED_URLCONF": value})
    assert refused.value.problems == [
        f"APP_HOSTED_URLCONF={value!r} is not an importable module; give the dotted module path of your URLconf, "
        "e.g. samples.notes.urls"
    ]


def test_the_supervisor_checks_it_as_it_checks_app_hosted_apps_and_serves_nothing_with_it():
    # Workers alone serve hosted applications (the supervisor forwards /apps/ to them), but one value shared by every
    # process is allowed, as for APP_HOSTED_APPS, and a wrong one is refused wherever it is set.
    supervisor = dict(SECRET, APP_MODE="supervisor")
    assert load(dict(supervisor, APP_HOSTED_URLCONF="samples.notes.urls")).hosted_urlconf == "samples.notes.urls"
    with pytest.raises(ConfigError):
        load(dict(supervisor, APP_HOSTED_URLCONF="no.such.urls"))


def test_a_module_without_urlpatterns_is_a_configuration_error_naming_the_variable():
    with pytest.raises(ConfigError) as refused:
        operator_patterns("samples.notes")
    assert refused.value.problems == [
        "APP_HOSTED_URLCONF='samples.notes' has no urlpatterns; name a URLconf module, one that defines urlpatterns, "
        "e.g. samples.notes.urls"
    ]


def test_manage_py_refuses_a_missing_module_without_a_traceback(tmp_path, redis_url):
    env = worker_env("env_a", free_port(), tmp_path, redis_url, APP_HOSTED_URLCONF="no.such.urls")
    result = manage(["check"], env, check=False)
    assert result.returncode == 2, result
    assert "APP_HOSTED_URLCONF='no.such.urls' is not an importable module" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_worker_web_whose_urlconf_has_no_urlpatterns_stops_at_start_naming_it(tmp_path, redis_url):
    port = free_port()
    env = worker_env("env_a", port, tmp_path, redis_url, APP_HOSTED_URLCONF="samples.notes",
                     APP_HOSTED_APPS="samples.notes")
    web = web_process(env, port, tmp_path / "web.log")
    try:
        assert web.wait(60) == 2, web.output()
        output = web.output()
    finally:
        web.stop()
    assert "APP_HOSTED_URLCONF='samples.notes' has no urlpatterns" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("mode, installed", [("supervisor", "False"), ("worker", "True")])
def test_the_operators_apps_are_installed_where_applications_are_hosted_only(tmp_path, redis_url, mode, installed):
    # A supervisor only forwards to hosted applications: its admin must not offer the operator's models.
    env = base_env(tmp_path, redis_url, APP_MODE=mode, APP_HOSTED_APPS="samples.notes",
                   ENVIRONMENT_NAME="env_a", ENVIRONMENT_URL="http://127.0.0.1:1")
    done = manage(["shell", "-c", "from django.apps import apps; print(apps.is_installed('samples.notes'))"], env)
    assert done.stdout.strip().splitlines()[-1] == installed  # after the shell's own start-up lines
