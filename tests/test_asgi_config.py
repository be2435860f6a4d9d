"""The documented web start line, `daphne … supervisor_project.asgi:application`, refuses a bad configuration as
manage.py does: the message naming the variable, exit status 2, no traceback."""

import subprocess
import sys

from .processes import ROOT, base_env


def test_daphne_reports_a_bad_configuration_without_a_traceback(tmp_path):
    env = base_env(tmp_path, "", APP_MODE="bogus")
    done = subprocess.run(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", "supervisor_project.asgi:application"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done
    assert "APP_MODE='bogus' is not a role" in done.stderr
    assert "App Supervisor cannot start" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
