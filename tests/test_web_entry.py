"""``python -m supervisor_project.web`` and APP_WEB_PROCESSES: the documented web command runs uvicorn with
supervisor_project.web.web_args and that many processes, and refuses what several processes would break, before any starts."""

import subprocess

import pytest

from supervisor_project import web
from supervisor_project.config import ConfigError, load
from supervisor_project.web import web_args, web_command

from .processes import ROOT, SUPERVISOR_KEY, base_env, environment_key, supervisor_public_key

REDIS = "redis://127.0.0.1:6379/0"
WORKER = {"APP_MODE": "worker", "ENVIRONMENT_NAME": "env_a", "ENVIRONMENT_URL": "http://localhost:15000",
          "APP_ENVIRONMENT_KEY": environment_key("env_a"), "APP_SUPERVISOR_PUBLIC_KEYS": supervisor_public_key(),
          "APP_SUPERVISOR_REDIS_URL": REDIS}


def problems_of(environ):
    with pytest.raises(ConfigError) as info:
        load(environ)
    return info.value.problems


def test_one_process_unless_app_web_processes_says_otherwise():
    assert load(WORKER).web_processes == 1
    assert load({**WORKER, "APP_WEB_PROCESSES": "4"}).web_processes == 4
    assert load({**WORKER, "APP_MODE": "supervisor", "ENVIRONMENT_NAME": "", "ENVIRONMENT_URL": "",
                 "APP_ENVIRONMENT_KEY": "", "APP_SUPERVISOR_KEY": SUPERVISOR_KEY,
                 "APP_WEB_PROCESSES": "2"}).web_processes == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "65"])
def test_a_number_of_processes_out_of_range_is_refused_by_name(value):
    assert problems_of({**WORKER, "APP_WEB_PROCESSES": value}) == [
        f"APP_WEB_PROCESSES={value!r} is not a number of processes from 1 to 64; e.g. APP_WEB_PROCESSES=2 on a "
        "machine with two cores"]


def test_several_processes_need_a_redis_server_not_the_embedded_one():
    (problem,) = problems_of({**WORKER, "APP_SUPERVISOR_REDIS_URL": "", "APP_COMMAND_REDIS_URL": REDIS,
                              "APP_WEB_PROCESSES": "2"})
    assert problem.startswith("APP_WEB_PROCESSES=2 needs APP_SUPERVISOR_REDIS_URL")
    assert load({**WORKER, "APP_SUPERVISOR_REDIS_URL": "", "APP_WEB_PROCESSES": "1"}).web_processes == 1


def test_a_single_instance_is_one_process():
    (problem,) = problems_of({"APP_WEB_PROCESSES": "2"})
    assert problem.startswith("APP_WEB_PROCESSES=2: a single instance (APP_MODE unset) runs its applications' "
                              "lifecycle in its one web process")


def test_the_web_command_runs_uvicorn_with_web_args_and_the_configured_processes():
    argv = web.command(["--host", "0.0.0.0", "--port", "80"], {**WORKER, "APP_WEB_PROCESSES": "2"})
    assert argv[1:] == ["-m", "uvicorn", *web_args(80, host="0.0.0.0", processes=2)]
    assert argv[argv.index("--workers") + 1] == "2"


def test_uvicorns_web_concurrency_is_not_what_decides():
    # uvicorn reads WEB_CONCURRENCY when --workers is not given: it always is.
    argv = web.command(["--port", "80"], {**WORKER, "WEB_CONCURRENCY": "8"})
    assert argv[argv.index("--workers") + 1] == "1"


def test_further_arguments_go_to_uvicorn_after_ours_so_that_they_win():
    argv = web.command(["--port", "80", "--proxy-headers", "--forwarded-allow-ips=10.0.0.1"], WORKER)
    assert argv[-3:] == ["--proxy-headers", "--forwarded-allow-ips=10.0.0.1", "supervisor_project.asgi:application"]
    assert argv.index("--no-proxy-headers") < argv.index("--proxy-headers")


@pytest.mark.parametrize("option", [["--workers", "4"], ["--workers=4"], ["--reload"]])
def test_a_process_count_on_the_command_line_is_refused_for_app_web_processes(option, capsys):
    with pytest.raises(SystemExit) as info:
        web.command(["--port", "80", *option], WORKER)
    assert info.value.code == 2
    assert "set APP_WEB_PROCESSES to the number of processes" in capsys.readouterr().err


def test_the_web_process_refuses_several_processes_without_redis_before_starting_any(tmp_path):
    env = base_env(tmp_path, "", APP_WEB_PROCESSES="2")
    done = subprocess.run(web_command(0), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "APP_WEB_PROCESSES=2 needs APP_SUPERVISOR_REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "uvicorn" not in done.stderr  # nothing started
