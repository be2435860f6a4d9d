"""`manage.py runworker` as a real process: configuration errors, graceful stop, and riding out a Redis outage."""

import signal
import time

import pytest
import redis

from exchange import registry

from .conftest import free_port
from .processes import RedisServer, base_env, manage, runworker, runworker_without_web_probe, wait_for, worker_env

pytestmark = pytest.mark.slow


def test_missing_environment_name_is_a_clear_error_and_nonzero_exit(tmp_path, redis_url):
    env = base_env(tmp_path, redis_url, APP_MODE="worker", ENVIRONMENT_URL="http://127.0.0.1:15000")
    done = manage(["runworker"], env, check=False)
    assert done.returncode != 0
    assert "ENVIRONMENT_NAME is required" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_environment_url_is_a_clear_error(tmp_path, redis_url):
    env = base_env(tmp_path, redis_url, APP_MODE="worker", ENVIRONMENT_NAME="env_a")
    done = manage(["runworker"], env, check=False)
    assert done.returncode != 0 and "ENVIRONMENT_URL is required" in done.stderr


def test_sigterm_deregisters_and_exits_zero(tmp_path, redis_url, r):
    env = worker_env("env_a", 15999, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0, agent.output()
        assert registry.read(r)["env_a"]["stopped_at"] is not None
    finally:
        agent.stop()


def test_an_agent_started_while_redis_is_down_retries_until_stopped_and_exits_zero(tmp_path):
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = worker_env("env_a", 15999, tmp_path, url)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        shown = url.replace("s3cret", "***")
        wait_for(lambda: agent.output().count(f"Redis unavailable at {shown}") >= 2, what="the agent to retry")
        assert agent.proc.poll() is None
        agent.signal(signal.SIGTERM)
        started = time.monotonic()
        assert agent.wait(15) == 0, agent.output()
        assert time.monotonic() - started < 5
        assert "Traceback" not in agent.output()
        assert "s3cret" not in agent.output()
    finally:
        agent.stop()


def test_an_agent_started_while_redis_is_down_registers_once_redis_comes_up(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = worker_env("env_a", 15999, tmp_path, url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    server = None
    try:
        wait_for(lambda: f"Redis unavailable at {url}" in agent.output(), what="the agent to notice Redis is down")
        server = RedisServer(port, tmp_path)
        server.start()
        client = redis.Redis.from_url(url)
        registration = wait_for(lambda: registry.read(client).get("env_a"), timeout=40,
                                what="registration")
        assert registration["stopped_at"] is None
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0, agent.output()
        assert registry.read(client)["env_a"]["stopped_at"] is not None
    finally:
        agent.stop()
        if server:
            server.stop()


def test_an_agent_is_registered_again_within_a_second_or_so_of_redis_coming_back_empty(tmp_path):
    server = RedisServer(free_port(), tmp_path)
    server.start()
    client = redis.Redis.from_url(server.url)
    env = worker_env("env_a", 15999, tmp_path, server.url, APP_HEARTBEAT_INTERVAL=60)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(client), what="registration")
        server.kill()
        wait_for(lambda: "Redis unavailable" in agent.output(), what="the agent to notice the outage")
        time.sleep(8)  # long enough for a doubling backoff to have grown well past a second
        server.start()  # comes back empty: nothing persisted
        back_at = time.monotonic()
        registration = wait_for(lambda: registry.read(client).get("env_a"), timeout=10, interval=0.02,
                                what="re-registration")
        assert time.monotonic() - back_at < 1.5
        assert registration["stopped_at"] is None
        assert agent.proc.poll() is None  # never restarted
    finally:
        agent.stop()
        server.stop()


def test_no_web_probe_leaves_the_web_unknown(tmp_path, redis_url, r):
    env = worker_env("env_a", free_port(), tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    agent = runworker_without_web_probe(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        time.sleep(1.5)
        assert "web_ok" not in registry.read(r)["env_a"]
        assert registry.status_of(registry.read(r)["env_a"]) == "online"
    finally:
        agent.stop()
