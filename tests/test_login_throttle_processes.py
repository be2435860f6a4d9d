"""The admin login of a real supervisor web process (uvicorn, the documented command) locks out a guesser."""

import re

import pytest
import requests

from .conftest import free_port
from .factories import PASSWORD
from .processes import base_env, http_ready, manage, wait_for, web_process

pytestmark = pytest.mark.slow


def attempt(base, password):
    """One login as a browser makes it: the page (for its CSRF token), then the form."""
    session = requests.Session()
    page = session.get(f"{base}/admin/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return session.post(f"{base}/admin/login/?next=/admin/",
                        data={"csrfmiddlewaretoken": token, "username": "admin", "password": password},
                        headers={"Referer": f"{base}/admin/login/"}, allow_redirects=False, timeout=10)


def test_a_real_supervisor_locks_the_admin_login_after_five_wrong_passwords(tmp_path):
    env = base_env(tmp_path / "single", "", APP_MODE="")
    for name in ("APP_SUPERVISOR_REDIS_URL", "APP_COMMAND_REDIS_URL", "APP_SHARED_SECRET"):
        env.pop(name)
    manage(["migrate", "--verbosity", "0"], env)
    manage(["ensureadmin", "--password", PASSWORD], env)
    port = free_port()
    web = web_process(env, port, tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(http_ready(f"{base}/healthz"), timeout=30, what="the web process")
        assert attempt(base, PASSWORD).status_code == 302  # the password works, and a success resets the count
        answers = [attempt(base, f"guess-{n}").status_code for n in range(5)]
        assert answers == [200, 200, 200, 200, 429]
        assert attempt(base, PASSWORD).status_code == 429  # locked out: the right password too
        manage(["axes_reset"], env)
        assert attempt(base, PASSWORD).status_code == 302
    finally:
        web.stop()
