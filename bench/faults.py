"""``bin/drill`` (``python -m bench.faults``): fault and attack drills against a cluster started the documented way.

A Redis server of the drill's own (no persistence, so a restart loses everything), ``bin/cluster`` pointed at it with
``APP_SUPERVISOR_REDIS_URL`` (the supervisor, its controller ``runsupervisor``, env_a and env_b), then each fault of
docs/architecture.md's "Convergence" and each attack of docs/security.md, "Threat model", done as an operator or an attacker
would: kill and restart processes, FLUSHALL, plant entries with a plain Redis client. Every figure is measured and
written as a markdown table to docs/faults.md (``--output``), with the machine it ran on. It takes about three minutes
and exits 1 when a drill misses its target or could not be run.

The test suite checks the same behaviour, one fault per test; this drill runs them in a row on one cluster and says
how long each took to converge, which is what an operator wants to know.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis as redis_lib
import requests

from exchange import events, signing
from exchange.contract import APPS_KEY, CACHE_READY_KEY, ENVIRONMENTS_KEY, STATUSES_KEY, queue_name
from supervisor_project.web import web_args

from .bounds import BoundsDrills
from .cluster import ROOT, Cluster, RedisServer, free_port
from .load import under_fault
from .memory import rss_mb

PASSWORD = "correct-horse-battery-staple"


def wait(predicate, timeout, what, step=0.1):
    """Seconds until PREDICATE holds; raise after TIMEOUT."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if predicate():
                return time.monotonic() - began
        except (requests.RequestException, redis_lib.RedisError):
            pass
        time.sleep(step)
    raise RuntimeError(f"{what}: not within {timeout} s")


class Drill(BoundsDrills):
    wait = staticmethod(wait)

    def __init__(self, storage):
        self.storage = storage
        self.redis = RedisServer(free_port(), storage)
        self.cluster = Cluster(storage / "cluster", envs=2, environ={"APP_SUPERVISOR_REDIS_URL": self.redis.url})
        self.rows = []

    # -- set-up ----------------------------------------------------------------------------------------------------

    def start(self):
        (self.storage / "cluster").mkdir()
        self.redis.start()
        self.cluster.start()
        self.r = redis_lib.Redis.from_url(self.redis.url)
        # shop, on env_a, is what users load and what attackers aim at in every drill.
        self.create("shop", ["env_a"])
        assert self.api("POST", "apps/shop/start").status_code == 200

    def stop(self):
        self.cluster.stop()
        self.redis.kill()

    def row(self, what, measured, target, ok):
        self.rows.append((what, measured, target, "pass" if ok else "**FAIL**"))
        print(f"  {what}: {measured} ({'pass' if ok else 'FAIL'})", flush=True)

    def api(self, method, path, **kwargs):
        return self.cluster.api(method, path, **kwargs)

    def app(self, name):
        return self.api("GET", f"apps/{name}/").json()

    def state(self, name, env):
        return self.app(name)["statuses"][env]["state"]

    def environment(self, name):
        listed = self.api("GET", "environments/").json()["environments"]
        return next((e for e in listed if e["name"] == name), None)

    def create(self, name, envs):
        r = self.api(
            "POST",
            "apps/",
            json={
                "name": name,
                "display_name": name,
                "environments": envs,
                "admin_username": "boss",
                "admin_password": PASSWORD,
            },
        )
        assert r.status_code == 201, r.text

    def url(self, name):
        return f"{self.cluster.url}/apps/{name}/admin/login/"

    def process(self, role):
        return json.loads((self.cluster.storage / "cluster.json").read_text())["processes"][role]

    def restart_dead(self):
        os.kill(self.cluster.state["pid"], signal.SIGUSR1)

    # -- issue: convergence ----------------------------------------------------------------------------------------

    def redis_loss(self):
        url = self.url("shop")
        wait(lambda: requests.get(url, timeout=5).status_code == 200, 30, "shop served")
        started_at = self.app("shop")["statuses"]["env_a"]["at"]
        time.sleep(1.5)

        def flush():
            self.r.flushall()
            return self.watch_rebuild(self.r)

        def loss_row(what, fault):
            seen = under_fault(url, fault)
            back = seen.fault
            self.row(
                what,
                f"{len(seen.failures)} of {seen.requests} requests failed; cache whole again {back['cache']:.1f} s "
                f"after, registrations and states {back['states']:.1f} s",
                "0 failed",
                not seen.failures,
            )

        def restart():
            self.redis.kill()
            time.sleep(1.0)
            self.redis.start()
            self.r = redis_lib.Redis.from_url(self.redis.url)
            return self.watch_rebuild(self.r)

        loss_row("FLUSHALL under load (4 clients through the supervisor)", flush)
        loss_row("Redis SIGKILLed, started again empty 1 s later (the times from the restart), under load", restart)
        at = self.app("shop")["statuses"]["env_a"]["at"]
        self.row(
            "shop after both losses",
            f"{self.state('shop', 'env_a')}, since {at} (started {started_at}: not started again)",
            "running, not started again",
            at == started_at,
        )

    def watch_rebuild(self, r):
        """Times from now until the cache is whole and env_a's registration and shop's state are back, measured in
        a thread while the load goes on; the returned dict is filled in as they come."""
        began, back = time.monotonic(), {"cache": float("nan"), "states": float("nan")}

        def watch():
            wait(lambda: r.exists(CACHE_READY_KEY) and r.hexists(APPS_KEY, "shop"), 30, "cache rebuilt", step=0.02)
            back["cache"] = time.monotonic() - began
            wait(
                lambda: r.hexists(ENVIRONMENTS_KEY, "env_a") and r.hexists(STATUSES_KEY, "shop/env_a"),
                30,
                "registration and state published again",
                step=0.02,
            )
            back["states"] = time.monotonic() - began

        threading.Thread(target=watch, daemon=True).start()
        return back

    def redis_hung(self):
        url, admin, pid = self.url("shop"), self.admin(), self.redis.proc.pid
        seen = {}

        def timed(call):
            began = time.monotonic()
            answer = call()
            return answer, time.monotonic() - began

        def hang():
            os.kill(pid, signal.SIGSTOP)
            hung = time.monotonic()
            try:
                seen["api"] = timed(lambda: self.api("GET", "apps/", timeout=30))
                seen["admin"] = timed(lambda: admin.get(f"{self.cluster.url}/admin/apps/application/", timeout=30))
                seen["command"] = timed(lambda: self.api("POST", "apps/shop/restart", timeout=30))
                time.sleep(max(0.0, 7.0 - (time.monotonic() - hung)))
                seen["later"] = self.api("GET", "apps/", timeout=30)  # the controller has met the hung Redis
                time.sleep(max(0.0, 8.0 - (time.monotonic() - hung)))
            finally:
                os.kill(pid, signal.SIGCONT)
            resumed = time.time()
            watcher = threading.Thread(target=watch_resume, args=(resumed,), daemon=True)
            watcher.start()
            return watcher

        def watch_resume(resumed):
            """Seconds from Redis's resumption until env_a's agent heartbeat again and the API showed it, polled
            while the load goes on."""

            def heartbeat():
                raw = self.r.hget(ENVIRONMENTS_KEY, "env_a")
                return raw is not None and json.loads(signing.body_of(raw))["heartbeat_at"] > resumed

            def mirrored():
                shown = self.environment("env_a")["last_heartbeat_at"]
                return shown is not None and datetime.fromisoformat(shown).timestamp() > resumed

            wait(heartbeat, 30, "env_a's heartbeat after Redis resumed", step=0.05)
            seen["agent"] = time.time() - resumed
            wait(mirrored, 30, "the controller's mirror after Redis resumed", step=0.05)
            seen["mirror"] = time.time() - resumed

        load = under_fault(url, hang, seconds=10.0)
        total, failed = load.requests, load.failures
        load.fault.join(60)
        api, api_s = seen["api"]
        page, page_s = seen["admin"]
        command, command_s = seen["command"]
        later = seen["later"]
        warned = later.headers.get("X-Supervisor-Warning", "none")
        self.row(
            "Redis hung (SIGSTOP) for 8 s, under load",
            f"{len(failed)} of {total} requests failed, the slowest took {load.slowest:.1f} s; "
            f"GET /api/apps/ {api.status_code} in {api_s:.2f} s (7 s in: {later.status_code}, warning "
            f"{warned[:34]!r}…); the Applications admin {page.status_code} in {page_s:.2f} s; a restart "
            f"{command.status_code} in {command_s:.1f} s ({command.json().get('error', '')[:40]}…)",
            "0 failed, the slowest ≤ 0.75 s (half a second of lookups plus its own time); reads at once; commands "
            "name Redis",
            not failed and load.slowest <= 0.75 and api_s < 1 and page_s < 1 and command.status_code == 503
            and "Redis" in warned,
        )

        back, shown = seen.get("agent", float("nan")), seen.get("mirror", float("nan"))
        self.row(
            "the agent and the controller after Redis came back",
            f"env_a heartbeat again {back:.1f} s after Redis resumed; the API showed it {shown:.1f} s after",
            "≤ 1 s each (plus the heartbeat interval, 2 s here)",
            back <= 3 and shown <= 3,
        )

    def stop_in_force(self):
        http, url, late = requests.Session(), self.url("shop"), []
        for _ in range(5):
            assert self.api("POST", "apps/shop/stop").status_code == 200
            late.append(http.get(url, timeout=10).status_code != 503)
            assert self.api("POST", "apps/shop/start").status_code == 200
            late.append(http.get(url, timeout=10).status_code != 200)
        self.row(
            "stop then start, 5 times: the very next request",
            f"{sum(late)} of {len(late)} answered the old state",
            "0",
            not any(late),
        )

    def malformed_job(self):
        agent = self.process("env_a.agent")
        self.r.rpush(f"rq:queue:{queue_name('env_a')}", "bad.id", "../../x", "\xff")
        self.r.rpush(f"rq:queue:{queue_name('env_a')}", "forged")
        self.r.hset("rq:job:forged", mapping={"created_at": "soon", "timeout": "x", "status": "??", "data": b"\x00"})
        time.sleep(1.5)
        alive = os.path.exists(f"/proc/{agent}")
        took = time.perf_counter()
        ok = self.api("POST", "apps/shop/restart").status_code == 200
        took = time.perf_counter() - took
        shown = (self.environment("env_a") or {}).get("status")
        self.row(
            "malformed job ids and a corrupt job hash pushed to env_a's queue",
            f"agent {'alive' if alive else 'DEAD'}"
            f", a restart there then answered {'200' if ok else 'an error'} in {took:.1f} s; env_a {shown}",
            "agent runs",
            alive and ok,
        )

    def offline_start(self):
        self.create("crm", ["env_a", "env_b"])
        os.kill(self.process("env_b.agent"), signal.SIGTERM)  # it deregisters: offline at once
        wait(lambda: self.environment("env_b")["status"] == "offline", 30, "env_b offline")
        answer = self.api("POST", "apps/crm/start")
        self.row(
            "start of crm with env_b offline",
            f"{answer.status_code}: {answer.json().get('message', '')[:90]}; desired {self.app('crm')['desired_state']}",
            "202 naming env_b, intent kept",
            answer.status_code == 202 and answer.json().get("environment") == "env_b"
            and self.app("crm")["desired_state"] == "running",
        )
        self.restart_dead()
        back = wait(lambda: self.environment("env_b")["status"] == "online", 60, "env_b back")
        began = time.monotonic()
        wait(lambda: self.state("crm", "env_b") == "running", 60, "crm running on env_b")
        self.row(
            "crm runs on env_b after env_b's return",
            f"{time.monotonic() - began:.1f} s after it showed online (agent back {back:.1f} s after SIGUSR1)",
            "≤ 30 s",
            time.monotonic() - began <= 30,
        )

    def agent_killed_mid_start(self):
        self.create("hr", ["env_a"])
        self.create("ops", ["env_a"])
        answer = {}
        caller = threading.Thread(target=lambda: answer.update(r=self.api("POST", "apps/hr/start")))
        caller.start()
        wait(lambda: self.r.exists("appsup:lock:provision:hr"), 30, "hr's start under way", step=0.02)
        os.kill(self.process("env_a.agent"), signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(1.0)
        self.restart_dead()
        caller.join(120)
        reply = answer["r"]
        wait(lambda: self.api("POST", "apps/ops/start").status_code == 200, 60, "another command on env_a", step=0.5)
        other = time.monotonic() - killed
        wait(lambda: self.state("hr", "env_a") == "running", 90, "hr's interrupted start completed", step=0.5)
        done = time.monotonic() - killed
        self.row(
            "env_a's agent SIGKILLed mid-start of hr, started again 1 s later",
            f"caller got {reply.status_code} ({reply.json().get('error', '')[:60]}); another app's start there "
            f"succeeded {other:.1f} s after the kill; hr running {done:.1f} s after",
            "another command ≤ 5 s (the dead start's lock released at once), hr ≤ 15 s",
            other <= 5 and done <= 15,
        )

    def supervisor_killed_mid_start(self):
        from rq import Queue

        self.create("erp", ["env_a", "env_b"])
        # env_b's agent is killed first, so env_b's start waits in its queue (env_b still online) while a second
        # supervisor web, with the cluster's database and Redis, runs the sequential start; it is killed there.
        os.kill(self.process("env_b.agent"), signal.SIGKILL)
        port, env = free_port(), self.cluster.django_environ()
        env["SUPERVISOR_API_TOKEN"] = self.cluster.token
        second = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *web_args(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait(
                lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
                60,
                "a second supervisor web",
            )
            threading.Thread(
                target=quietly(
                    lambda: requests.post(
                        f"http://127.0.0.1:{port}/api/apps/erp/start?timeout=4",
                        timeout=120,
                        headers={"Authorization": f"Bearer {self.cluster.token}"},
                    )
                ),
                daemon=True,
            ).start()
            wait(
                lambda: Queue(queue_name("env_b"), connection=self.r).count > 0, 60, "env_b's start enqueued", step=0.02
            )
            on_a = self.state("erp", "env_a")
            second.kill()
            killed = time.monotonic()
        finally:
            second.kill()
            second.wait()
        time.sleep(4.5)  # past what the dead caller waited for: its queued job must not run now
        self.restart_dead()
        wait(lambda: self.state("erp", "env_b") == "running", 90, "erp running on env_b", step=0.2)
        took = time.monotonic() - killed
        self.row(
            "a supervisor web SIGKILLed between env_a and env_b of erp's start (env_b's agent away, back 4.5 s later)",
            f"env_a {on_a} at the kill; erp running on both {took:.1f} s after",
            "≤ 60 s",
            took <= 60,
        )

    def worker_web_killed(self):
        os.kill(self.process("env_b.web"), signal.SIGKILL)
        killed = time.monotonic()
        wait(lambda: self.environment("env_b")["status"] == "degraded", 60, "env_b degraded")
        took = time.monotonic() - killed
        problem = self.environment("env_b")["problem"]
        self.restart_dead()
        wait(lambda: self.environment("env_b")["status"] == "online", 60, "env_b online again")
        self.row(
            "env_b's worker web SIGKILLed",
            f"degraded after {took:.1f} s ({problem})",
            "within the heartbeat timeout (24 s here)",
            took <= 24,
        )

    # -- issue: trust ----------------------------------------------------------------------------------------------

    def forged_commands(self):
        from rq import Queue
        from rq.job import Job

        listener = self._listener()
        salt, iterations = "drill", 1000
        digest = base64.b64encode(hashlib.pbkdf2_hmac("sha256", b"mallory-pass", salt.encode(), iterations)).decode()
        now, job_id = time.time(), "start-shop-env_a-forged"
        job = Job.create(
            "workers.commands.execute",
            connection=self.r,
            id=job_id,
            kwargs={
                "command": "start",
                "app": "shop",
                "environment": "env_a",
                "job_id": job_id,
                "issued_at": now,
                "expires_at": now + 60,
                "payload": {
                    "admin_username": "mallory",
                    "admin_password_hash": f"pbkdf2_sha256${iterations}${salt}${digest}",
                },
            },
        )
        job.save()
        hook = f"http://127.0.0.1:{listener.server_address[1]}/hook"
        self.r.hset(
            job.key,
            mapping={
                "success_callback_name": "os.abort",
                "failure_callback_name": "os.abort",
                "stopped_callback_name": "os.abort",
                "webhooks": json.dumps([hook]),
            },
        )
        Queue(queue_name("env_a"), connection=self.r).push_job_id(job.id)
        agent = self.process("env_a.agent")
        time.sleep(2.0)
        alive = os.path.exists(f"/proc/{agent}")
        login = requests.Session()
        login.get(self.url("shop"), timeout=10)
        answer = login.post(
            self.url("shop"),
            timeout=10,
            allow_redirects=False,
            headers={"Referer": self.url("shop")},
            data={
                "username": "mallory",
                "password": "mallory-pass",
                "csrfmiddlewaretoken": next((c.value for c in login.cookies if "csrf" in c.name), ""),
            },
        )
        listener.shutdown()
        env_a = self.admin().get(f"{self.cluster.url}/admin/environments/environment/?q=env_a", timeout=10)
        pk = re.search(r"/admin/environments/environment/(\d+)/change/", env_a.text).group(1)
        page = self.admin().get(f"{self.cluster.url}/admin/environments/environment/{pk}/change/", timeout=10).text
        shown = job_id in page
        self.row(
            "a forged start (payload: superuser mallory), callbacks os.abort, a webhook; no secret",
            f"login as mallory answered {answer.status_code} (a 302 would be a session); webhook requests: "
            f"{len(listener.hits)}; agent {'alive' if alive else 'DEAD'}; the refusal "
            f"{'shown' if shown else 'NOT shown'} on env_a's admin page",
            "no user, nothing called or sent",
            answer.status_code == 200 and not listener.hits and alive and shown,
        )

    def admin(self, base=None):
        base = base or self.cluster.url
        session = requests.Session()
        session.get(f"{base}/admin/login/", timeout=10)
        session.post(
            f"{base}/admin/login/",
            timeout=10,
            data={
                "username": "admin",
                "password": self.cluster.password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/admin/"},
        )
        return session

    def _listener(self):
        hits = []

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        server.hits = hits
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def forged_registry(self):
        listener = self._listener()
        evil = f"http://127.0.0.1:{listener.server_address[1]}"
        forged = json.dumps(
            {"url": evil, "proxy_url": evil, "version": "1.0.0", "host": "x", "pid": 1, "heartbeat_at": time.time()}
        )
        self.r.hset(ENVIRONMENTS_KEY, mapping={"evil": forged, "env_a": forged})  # a new one, and a real one rewritten
        statuses = [requests.get(self.url("shop"), timeout=10).status_code for _ in range(10)]
        choose = requests.get(f"{self.cluster.url}/apps/shop/admin/login/?_env=evil", timeout=10).status_code
        time.sleep(2.5)  # the controller mirrors what it read
        evil_env = self.environment("evil")
        self.r.hset(ENVIRONMENTS_KEY, "garbled", json.dumps({"heartbeat_at": "soon", "pid": "abc"}))
        self.r.hset(ENVIRONMENTS_KEY, "bytes", b"\xff\x00{")
        time.sleep(2.5)
        pages = {
            path: requests.get(
                f"{self.cluster.url}{path}", timeout=10, headers={"Authorization": f"Bearer {self.cluster.token}"}
            ).status_code
            for path in ("/api/environments/", "/api/apps/")
        }
        admin = self.admin()
        for path in ("/admin/environments/environment/", "/admin/apps/application/"):
            pages[path] = admin.get(f"{self.cluster.url}{path}", timeout=10).status_code
        self.row(
            "env_a's registration rewritten to the attacker's URL, 10 requests to shop",
            f"{len(listener.hits)} reached the attacker; answers {sorted(set(statuses))}",
            "0 diverted",
            not listener.hits,
        )
        self.row(
            "a forged environment 'evil' registered",
            ("no environment row; " if evil_env is None else f"status {evil_env['status']} ({evil_env['problem']}); ")
            + f"?_env=evil answered {choose}",
            "no row, not chosen",
            evil_env is None and choose != 200,
        )
        self.row(
            "malformed registry entries ('heartbeat_at': 'soon', 'pid': 'abc', raw bytes)",
            ", ".join(f"{p} {s}" for p, s in pages.items()),
            "all 200",
            set(pages.values()) == {200},
        )
        listener.shutdown()
        for name in ("evil", "garbled", "bytes"):
            self.r.hdel(ENVIRONMENTS_KEY, name)
        wait(lambda: self.environment("env_a")["status"] == "online", 30, "env_a's own registration back")

    def upload(self):
        pid = self.process("supervisor")
        requests.post(self.url("shop"), data=b"warm-up", timeout=30)  # the first POST loads what later ones use
        before = rss_mb(pid)

        def body():
            chunk = b"x" * (1 << 20)
            for _ in range(100):
                yield chunk

        peak, stop = [before], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        answer = requests.post(self.url("shop"), data=body(), timeout=120)
        stop.set()
        sampler.join()
        grew = peak[0] - before
        # shop refuses the POST (no CSRF token, 403): the answer proves nothing about streaming; the supervisor's
        # memory while 100 MB pass through it is what is measured.
        self.row(
            "a 100 MB upload through the supervisor's proxy (the supervisor's memory; shop refuses the POST: no CSRF "
            "token)",
            f"answered {answer.status_code}; supervisor RSS {before:.0f} MB, peak {peak[0]:.0f} MB (+{grew:.0f} MB)",
            "the supervisor grows < 40 MB",
            grew < 40,
        )

    def api_input(self):
        headers = {"Authorization": f"Bearer {self.cluster.token}"}
        url = f"{self.cluster.url}/api/apps/"
        nested = "[" * 10000 + "]" * 10000
        answers = [
            (
                "3 MB body",
                requests.post(
                    url,
                    data=b"{" + b" " * (3 << 20) + b"}",
                    timeout=30,
                    headers={**headers, "Content-Type": "application/json"},
                ),
                413,
            ),
            (
                "nested JSON",
                requests.post(url, data=nested, timeout=30, headers={**headers, "Content-Type": "application/json"}),
                400,
            ),
            (
                "display_name: 5",
                requests.post(
                    url,
                    json={
                        "name": "typed",
                        "display_name": 5,
                        "environments": ["env_a"],
                        "admin_username": "boss",
                        "admin_password": PASSWORD,
                    },
                    timeout=30,
                    headers=headers,
                ),
                400,
            ),
            (
                "text/plain",
                requests.post(url, data="{}", timeout=30, headers={**headers, "Content-Type": "text/plain"}),
                415,
            ),
        ]
        said = lambda a: str(a.json().get("error") or a.json().get("errors"))[:70]  # noqa: E731
        got = [(what, a.status_code, said(a)) for what, a, _ in answers]
        self.row(
            "API: 3 MB body, nested JSON, a wrongly typed field, text/plain",
            "; ".join(f"{w} → {s} ({e})" for w, s, e in got),
            "413, 400, 400, 415",
            [s for _, s, _ in got] == [want for _, _, want in answers],
        )

    def no_secret(self):
        env = self.cluster.django_environ()
        env.pop("APP_SUPERVISOR_KEY")
        done = subprocess.run(
            [sys.executable, "-m", "uvicorn", *web_args(free_port())],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        said = (done.stderr.strip().splitlines() or [""])[-1]
        self.row(
            "a supervisor web without APP_SUPERVISOR_KEY",
            f"exit {done.returncode}: {said[:110]}",
            "refuses, naming it",
            done.returncode != 0 and "APP_SUPERVISOR_KEY" in said,
        )

    # -- with env_b's key material only (docs/security.md, "Threat model") ------------------------------------------

    def refused_counts(self):
        """{kind: count} of appsup_refused_signatures."""
        text = requests.get(f"{self.cluster.url}/metrics", timeout=30,
                            headers={"Authorization": f"Bearer {self.cluster.token}"}).text
        counts = {kind: float(n) for kind, n in re.findall(r'^appsup_refused_signatures_total\{kind="(\w+)"\} (\S+)',
                                                           text, re.M)}
        return counts

    def env_b_serializer(self, signer="env_b"):
        key = self.cluster.private_key("env_b")

        class EnvB:
            @staticmethod
            def dumps(obj):
                return signing.dumps(obj, signer=signer, key=key)

            @staticmethod
            def loads(data):
                return json.loads(signing.body_of(data))

        return EnvB

    def env_b_command(self):
        from rq.job import Job

        before = self.refused_counts().get("command", 0)
        now, job_id = time.time(), "start-shop-env_a-by-env_b"
        job = Job.create("workers.commands.execute", connection=self.r, id=job_id, serializer=self.env_b_serializer(),
                         kwargs={"command": "start", "app": "shop", "environment": "env_a", "job_id": job_id,
                                 "issued_at": now, "expires_at": now + 60, "generation": None,
                                 "payload": {"admin_username": "mallory", "admin_password_hash": "x"}})
        job.save()
        self.r.rpush(f"rq:queue:{queue_name('env_a')}", job_id)
        took = self.wait(lambda: self.r.hget(job.key, "status") == b"failed", 30, "the command refused")
        counted = self.wait(lambda: self.refused_counts().get("command", 0) > before, 10, "the refusal counted")
        self.row("with env_b's key only: a start for env_a (superuser mallory) signed by env_b",
                 f"refused in {took:.1f} s, counted in /metrics (appsup_refused_signatures{{kind=\"command\"}}) "
                 f"{counted:.1f} s later", "refused, counted", True)

    def env_b_registration_and_status(self):
        listener = self._listener()
        evil = f"http://127.0.0.1:{listener.server_address[1]}"
        key = self.cluster.private_key("env_b")
        before = self.refused_counts()
        registration = {"name": "env_a", "url": evil, "proxy_url": evil, "version": "1.0.0", "host": "x", "pid": 1,
                        "heartbeat_at": time.time(), "seq": 2**62, "stopped_at": None}
        status = {"app": "shop", "environment": "env_a", "state": "error", "error": "phish: log in at evil.test",
                  "traceback": "", "at": time.time(), "seq": 2**62}
        self.r.hset(ENVIRONMENTS_KEY, "env_a", signing.dumps(registration, signer="env_b", key=key))
        self.r.hset(STATUSES_KEY, "shop/env_a", signing.dumps(status, signer="env_b", key=key))
        # Anyone may announce a change (events are hints): the controller reads the status at once.
        events.publish(self.r, events.PLACEMENT, app="shop", environment="env_a", state="error", error="phish",
                       at=time.time())
        codes = [requests.get(self.url("shop"), timeout=10).status_code for _ in range(10)]
        counted = self.wait(lambda: all(self.refused_counts().get(kind, 0) > before.get(kind, 0)
                                        for kind in ("registration", "status")), 15, "the refusals counted")
        app = requests.get(f"{self.cluster.url}/api/apps/shop/", timeout=10,
                           headers={"Authorization": f"Bearer {self.cluster.token}"}).json()
        shown = app["statuses"]["env_a"]["state"]
        listener.shutdown()
        self.row("with env_b's key only: env_a's registration (diverted to a listener) and shop's status on env_a "
                 "(error, a phishing text) signed by env_b",
                 f"requests to the listener: {len(listener.hits)} of {len(codes)}; shop on env_a shown {shown}; "
                 f"both counted in /metrics within {counted:.1f} s",
                 "nothing diverted, no error shown, counted",
                 not listener.hits and shown != "error")

    def env_b_configuration(self):
        key = self.cluster.private_key("env_b")
        before = self.refused_counts().get("config", 0)
        original = self.r.hget(APPS_KEY, "shop")
        entry = dict(json.loads(signing.body_of(original)), environments=["env_b"])
        self.r.hset(APPS_KEY, "shop", signing.dumps(entry, signer="supervisor", key=key))
        took = self.wait(lambda: json.loads(signing.body_of(self.r.hget(APPS_KEY, "shop")))["environments"]
                         != ["env_b"], 15, "the configuration entry repaired")
        counted = self.wait(lambda: self.refused_counts().get("config", 0) > before, 10, "the repair counted")
        self.row("with env_b's key only: shop's configuration entry moved to env_b, signed as 'supervisor' with "
                 "env_b's key", f"rewritten from the database by the controller in {took:.1f} s, counted "
                 f"{counted:.1f} s later", "repaired, counted", True)


    # -- issue 19: an origin per application, sign-in from the supervisor -------------------------------------------

    def origins(self):
        """On a cluster of its own, with APP_APPS_DOMAIN and APP_SUPERVISOR_HOSTS (bench.origins)."""
        from . import origins

        origins.drill(self.storage / "origins", self.row)
    def permissions(self):
        """issue 19: a token with the view permission only lists applications but starts none; a staff user with no
        permission is refused every API write; a bootstrap token shorter than 32 characters stops start-up."""
        env = self.cluster.django_environ()
        made = subprocess.run([sys.executable, "manage.py", "shell", "-c", """
from django.contrib.auth.models import Permission, User
from apitokens.models import ApiToken
viewer = User.objects.create_user("drill_viewer", is_staff=True)
viewer.user_permissions.add(Permission.objects.get(codename="view_application"))
api_token = ApiToken(user=viewer, name="drill-dashboard")
print(api_token.issue())
api_token.save()
"""], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
        viewer = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        listed = requests.get(f"{self.cluster.url}/api/apps/", headers=viewer, timeout=30)
        started = requests.post(f"{self.cluster.url}/api/apps/shop/start", headers=viewer, timeout=30)
        writes = {
            "create": ("POST", "apps/", {"name": "drillperm", "environments": ["env_a"], "admin_username": "a",
                                         "admin_password": PASSWORD}),
            "change": ("PATCH", "apps/shop/", {"display_name": "x"}),
            "stop": ("POST", "apps/shop/stop", None),
            "delete": ("DELETE", "apps/shop/?drop_database=true", None),
            "drain": ("POST", "environments/env_b/drain", None),
            "backup": ("POST", "apps/shop/backups", None),
        }
        refused = {what: requests.request(method, f"{self.cluster.url}/api/{path}", headers=viewer, json=body,
                                          timeout=30).status_code
                   for what, (method, path, body) in writes.items()}
        short = dict(env, SUPERVISOR_API_TOKEN="a")
        done = subprocess.run([sys.executable, "-m", "uvicorn", *web_args(free_port())], cwd=ROOT, env=short,
                              capture_output=True, text=True, timeout=60)
        said = (done.stderr.strip().splitlines() or [""])[-1]
        self.row(
            "a per-user token with the view permission only: list, start, then every kind of write; "
            "SUPERVISOR_API_TOKEN=a",
            f"list {listed.status_code} ({len(listed.json().get('apps', [])) if listed.ok else 0} apps), start "
            f"{started.status_code}; " + ", ".join(f"{what} {status}" for what, status in refused.items())
            + f"; start-up exit {done.returncode}: {said[:80]}",
            "list 200, start 403, every write 403; start-up refused naming it",
            listed.status_code == 200 and started.status_code == 403 and set(refused.values()) == {403}
            and done.returncode != 0 and "SUPERVISOR_API_TOKEN" in said,
        )

    def audit_trail(self):
        """issue 19: a refused staff user, a per-user token's restart, the command line and the controller each
        appear in /api/audit/ with their actor."""
        env = self.cluster.django_environ()
        made = subprocess.run([sys.executable, "manage.py", "shell", "-c", f"""
from django.contrib.auth.models import Permission, User
from apitokens.models import ApiToken
User.objects.create_user("drill_intern", password="{PASSWORD}", is_staff=True)
deployer = User.objects.create_user("drill_deployer", password="{PASSWORD}", is_staff=True)
deployer.user_permissions.add(Permission.objects.get(codename="operate_application"))
api_token = ApiToken(user=deployer, name="drill-pipeline")
print(api_token.issue())
api_token.save()
"""], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
        token = made.stdout.strip().splitlines()[-1]
        since = datetime.now().astimezone().isoformat()
        intern = requests.Session()
        intern.get(f"{self.cluster.url}/admin/login/", timeout=10)
        intern.post(f"{self.cluster.url}/admin/login/", timeout=10, headers={"Referer": f"{self.cluster.url}/admin/"},
                    data={"username": "drill_intern", "password": PASSWORD,
                          "csrfmiddlewaretoken": intern.cookies["csrftoken"]})
        refused = intern.post(f"{self.cluster.url}/api/apps/shop/stop", timeout=30, headers={
            "X-CSRFToken": intern.cookies.get("csrftoken", ""), "Referer": f"{self.cluster.url}/admin/"})
        restarted = requests.post(f"{self.cluster.url}/api/apps/shop/restart", timeout=120,
                                  headers={"Authorization": f"Bearer {token}"})
        command = subprocess.run([sys.executable, "manage.py", "startapp_sequential", "shop"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        self.r.flushall()

        def entries(**query):
            return self.api("GET", "audit/", params={"since": since, **query}).json()["entries"]

        rebuilt = wait(lambda: entries(actor_kind="controller", action="cache.rebuild"), 20, "the controller's entry")
        found = {
            "refused stop": entries(actor="drill_intern", action="application.stop", outcome="refused"),
            "token restart": entries(actor_kind="token", actor="drill_deployer", action="application.restart"),
            "startapp_sequential": entries(actor_kind="command line", action="application.start"),
            "controller rebuild": entries(actor_kind="controller", action="cache.rebuild"),
        }
        actors = {what: (found[what][0]["actor_kind"] + ": " + found[what][0]["actor"])[:60] if found[what] else "none"
                  for what in found}
        leaked = token in json.dumps(self.api("GET", "audit/", params={"since": since}).json())
        self.row(
            "a refused staff user, a per-user token's restart, startapp_sequential, the controller after FLUSHALL: "
            "each in /api/audit/ with its actor",
            f"answers {refused.status_code}, {restarted.status_code}, exit {command.returncode}; "
            + "; ".join(f"{what} → {actor}" for what, actor in actors.items())
            + f"; the controller's within {rebuilt:.1f} s; token in the log: {'yes' if leaked else 'no'}",
            "403, 200, exit 0; every one found with its actor; the token never",
            (refused.status_code, restarted.status_code, command.returncode) == (403, 200, 0)
            and all(found.values()) and not leaked,
        )


def quietly(call):
    def run():
        try:
            call()
        except requests.RequestException:  # the process answering it is killed under the call
            pass

    return run


STEPS = (
    "redis_loss",
    "redis_hung",
    "stop_in_force",
    "malformed_job",
    "offline_start",
    "agent_killed_mid_start",
    "supervisor_killed_mid_start",
    "worker_web_killed",
    "forged_commands",
    "forged_registry",
    "upload",
    "api_input",
    "no_secret",
    "env_b_command",
    "env_b_registration_and_status",
    "env_b_configuration",
    "replayed_status",
    "replayed_registration",
    "foreign_result",
    "replayed_remove",
    "offline_past_timeout",
    "huge_headers",
    "unsigned_registrations",
    "event_flood",
    "sqlite_url_writes",
    "junk_queue",
    "forged_locks",
    "origins",
    "permissions",
    "audit_trail",
)


OUTPUT = ROOT / "docs" / "faults.md"


def report(rows, ran_on):
    return (
        "# Fault and attack drills\n\n"
        "Written by `bin/drill` (`bench/faults.py`): a Redis of its own, `bin/cluster` pointed at it (the supervisor, "
        "`runsupervisor`, env_a and env_b, SQLite, heartbeat every 2 s), then each fault and attack in a row. "
        f"Ran on {ran_on['date']}: {ran_on['cpu']}, {ran_on['cores']} cores, Python {ran_on['python']}.\n\n"
        "| drill | measured | target | |\n|---|---|---|---|\n"
        + "".join(f"| {what} | {measured} | {target} | {verdict} |\n" for what, measured, target, verdict in rows)
    )


def main(argv=None):
    from .__main__ import machine

    parser = argparse.ArgumentParser(prog="bin/drill", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        help=f"where to write the table (default: {OUTPUT.relative_to(ROOT)}, unless --only is given)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=STEPS,
        metavar="DRILL",
        help="run only these drills (of: " + ", ".join(STEPS) + "; always in that order)",
    )
    args = parser.parse_args(argv)
    output = args.output or (None if args.only else OUTPUT)
    with tempfile.TemporaryDirectory(prefix="appsup-faults-") as tmp:
        drill = Drill(Path(tmp))
        drill.start()
        try:
            for step in STEPS:
                if args.only and step not in args.only:
                    continue
                print(f"{step} …", flush=True)
                try:
                    getattr(drill, step)()
                except Exception as exc:  # one broken drill is a failed row, the rest still run
                    drill.row(step, f"could not be run: {type(exc).__name__}: {exc}", "–", False)
        finally:
            drill.stop()
    text = report(drill.rows, machine())
    print(text)
    if output:
        output.write_text(text)
        print(f"written to {output}")
    return 0 if all(row[3] == "pass" for row in drill.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
