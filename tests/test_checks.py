from supervisor_project.checks import secret_key_is_set
from supervisor_project.config import INSECURE_SECRET_KEY


def test_deployed_role_without_secret_key_is_warned(settings):
    settings.APP_MODE = "supervisor"
    settings.SECRET_KEY = INSECURE_SECRET_KEY
    assert [w.id for w in secret_key_is_set(None)] == ["appsup.W001"]


def test_secret_key_set_is_quiet(settings):
    settings.APP_MODE = "worker"
    settings.SECRET_KEY = "x" * 50
    assert secret_key_is_set(None) == []
