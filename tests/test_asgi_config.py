"""The documented web start line (uvicorn … supervisor_project.asgi:application) refuses a bad configuration as
manage.py does: the message naming the variable, exit status 2, no traceback."""

import subprocess

from supervisor_project.web import web_command

from .processes import ROOT, base_env


def run_web(env):
    return subprocess.run(web_command(0), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_web_process_reports_a_bad_configuration_without_a_traceback(tmp_path):
    done = run_web(base_env(tmp_path, "", APP_MODE="bogus"))
    assert done.returncode == 2, done
    assert "APP_MODE='bogus' is not a role" in done.stderr
    assert "App Supervisor cannot start" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_web_process_refuses_a_thread_count_that_is_not_one(tmp_path):
    done = run_web(base_env(tmp_path, "", APP_WEB_THREADS="many"))
    assert done.returncode == 2, done
    assert "APP_WEB_THREADS='many' is not a number of threads from 1 to 256" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
