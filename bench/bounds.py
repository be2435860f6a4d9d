"""The drills of bin/drill (bench.faults) for what an attacker can do with old signed values, a TCP connection, or
Redis without the secret: replays, stale addresses, huge or slow request heads, floods, junk, forged locks; and the
stalls an operator meets (a SQLite DATABASE_URL beside restarts).

A mixin of ``bench.faults.Drill``: it uses the drill's cluster, Redis client, ``row``, ``api`` and helpers.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import requests

from exchange import signing
from exchange.contract import (
    CONTROLLER_LEASE_KEY,
    ENVIRONMENTS_KEY,
    HEARTBEATS_CHANNEL,
    STATUSES_KEY,
    lock_key,
    queue_name,
)
from supervisor_project.web import web_args

from .cluster import ROOT, free_port, wait_answering
from .memory import rss_mb

MIB = 1 << 20


class ConnectionCounter:
    """A TCP listener that counts the connections made to it and answers each with 200: where a diverted request
    would land."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.hits = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            try:
                conn.settimeout(1)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:
                pass
            conn.close()

    def close(self):
        self._stop.set()
        self.sock.close()


def cpu_seconds(pid):
    """User and system CPU seconds PID has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BoundsDrills:
    # -- old signed values ------------------------------------------------------------------------------------------

    def sealed(self, entry):
        """ENTRY signed as the environment it is about wrote it once (a value an attacker saved, then replays)."""
        signer = entry.get("environment") or entry.get("name")
        return signing.seal(json.dumps(entry, separators=(",", ":")).encode(), signer=signer,
                            key=self.cluster.private_key(signer))

    def replayed_status(self):
        url = self.url("shop")
        direct = f"{self.cluster.env_url('env_a')}/apps/shop/admin/login/"
        wait_for_200 = lambda: requests.get(url, timeout=5).status_code == 200  # noqa: E731
        self.wait(wait_for_200, 30, "shop served")
        saved = self.r.hget(STATUSES_KEY, "shop/env_a")
        assert self.api("POST", "apps/shop/stop").status_code == 200
        self.r.hset(STATUSES_KEY, "shop/env_a", saved)
        through, straight, end = [], [], time.monotonic() + 10
        while time.monotonic() < end:
            through.append(requests.get(url, timeout=10).status_code)
            straight.append(requests.get(direct, timeout=10).status_code)
            time.sleep(0.1)
        shown = self.state("shop", "env_a")
        rewritten = self.r.hget(STATUSES_KEY, "shop/env_a") != saved
        assert self.api("POST", "apps/shop/start").status_code == 200
        self.row(
            "shop's saved `running` status written back after a stop; requests during 10 s",
            f"{through.count(200)} of {len(through)} through the supervisor and {straight.count(200)} of "
            f"{len(straight)} straight to env_a answered 200; the API says {shown}; the entry "
            f"{'written again by env_a' if rewritten else 'still the replayed one'}",
            "0 answered 200",
            through.count(200) == 0 and straight.count(200) == 0,
        )

    def replayed_registration(self):
        url = self.url("shop")
        self.wait(lambda: requests.get(url, timeout=5).status_code == 200, 30, "shop served")
        listener = ConnectionCounter()
        entry = json.loads(signing.body_of(self.r.hget(ENVIRONMENTS_KEY, "env_a")))
        # What env_a wrote some heartbeats ago, from the address it had then: an older sequence and heartbeat.
        older = dict(entry, url=listener.url, proxy_url=listener.url, heartbeat_at=entry["heartbeat_at"] - 6)
        if isinstance(entry.get("seq"), int):
            older["seq"] = entry["seq"] - 3
        replayed, answers = self.sealed(older), []
        http = requests.Session()
        http.cookies.set("sessionid_shop", "a-session-of-shop's-user")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            self.r.hset(ENVIRONMENTS_KEY, "env_a", replayed)  # after every heartbeat, and more often
            answers.append(http.get(url, timeout=10).status_code)
            time.sleep(0.05)
        # The same from long ago: older than the heartbeat timeout.
        ancient = dict(older, heartbeat_at=time.time() - 600)
        if isinstance(entry.get("seq"), int):
            ancient["seq"] = 1
        self.r.hset(ENVIRONMENTS_KEY, "env_a", self.sealed(ancient))
        answers.append(http.get(url, timeout=10).status_code)
        listener.close()
        self.wait(lambda: self.environment("env_a")["status"] == "online", 30, "env_a's own registration back")
        self.row(
            "env_a's registration from an earlier address replayed after every heartbeat for 10 s (with shop's "
            "session cookie), then one older than the heartbeat timeout",
            f"{listener.hits} of {len(answers)} requests reached the old address; answers {sorted(set(answers))}",
            "0 diverted",
            listener.hits == 0,
        )

    def offline_past_timeout(self):
        url = self.url("shop")
        self.wait(lambda: requests.get(url, timeout=5).status_code == 200, 30, "shop served")
        agent = self.process("env_a.agent")
        os.kill(agent, signal.SIGSTOP)  # no more heartbeats; env_a's web still answers
        try:
            self.wait(lambda: self.environment("env_a")["status"] == "offline", 60, "env_a offline", step=0.5)
            answer = requests.get(url, timeout=10, headers={"Accept": "application/json"})
        finally:
            os.kill(agent, signal.SIGCONT)
        kind = answer.headers.get("content-type", "")
        said = answer.json().get("error", "") if kind.startswith("application/json") else f"a page, {kind}"
        self.wait(lambda: self.environment("env_a")["status"] == "online", 60, "env_a back")
        self.row(
            "env_a's agent stopped (SIGSTOP) past the heartbeat timeout, its web still answering",
            f"shop answered {answer.status_code} ({said})",
            "503, not forwarded",
            answer.status_code == 503,
        )

    # -- answers and commands bound ---------------------------------------------------------------------------------

    def foreign_result(self):
        """Another application's signed `stopped` answer copied in as the answer to a new stop of shop, while
        env_a's agent is paused (so only the copy can answer)."""
        self.create("other", ["env_a"])
        assert self.api("POST", "apps/other/start").status_code == 200
        assert self.api("POST", "apps/other/stop").status_code == 200
        [old] = [k for k in self.r.scan_iter("rq:results:stop-other-env_a-*")]
        copied = [fields for _, fields in self.r.xrange(old)]
        earlier = set(self.r.scan_iter("rq:job:stop-shop-env_a-*"))
        agent = self.process("env_a.agent")
        os.kill(agent, signal.SIGSTOP)
        answer = {}
        caller = threading.Thread(target=lambda: answer.update(r=self.api("POST", "apps/shop/stop?timeout=6")))
        try:
            caller.start()
            new = lambda: set(self.r.scan_iter("rq:job:stop-shop-env_a-*")) - earlier  # noqa: E731
            self.wait(new, 10, "shop's stop queued")
            [job] = [k.decode().split(":", 2)[2] for k in new()]
            for fields in copied:
                self.r.xadd(f"rq:results:{job}", fields)
            caller.join(30)
        finally:
            os.kill(agent, signal.SIGCONT)
        reply = answer["r"]
        served = requests.get(self.url("shop"), timeout=10).status_code
        self.wait(lambda: self.state("shop", "env_a") == "stopped", 60, "the controller stops shop itself")
        assert self.api("POST", "apps/shop/start").status_code == 200
        self.row(
            "another application's signed `stopped` answer written as the answer to shop's stop (env_a paused)",
            f"the API answered {reply.status_code} ({reply.json().get('error', '')[:70]}…); shop then answered "
            f"{served} until the controller stopped it",
            "not 200",
            reply.status_code != 200,
        )

    def replayed_remove(self):
        """The signed remove (dropping the database) of an application, pushed again once it was created anew and
        env_a's record of the commands it ran is empty (a new pod with new storage)."""
        import sqlite3

        self.create("temp", ["env_a"])
        assert self.api("POST", "apps/temp/start").status_code == 200
        assert self.api("DELETE", "apps/temp/?drop_database=true").status_code == 204
        [job] = [k.decode().split(":", 2)[2] for k in self.r.scan_iter("rq:job:remove-temp-env_a-*")]
        saved = self.r.hgetall(f"rq:job:{job}")
        self.create("temp", ["env_a"])
        assert self.api("POST", "apps/temp/start").status_code == 200
        database = self.cluster.storage / "workers" / "apps" / "temp.sqlite3"
        with sqlite3.connect(self.cluster.storage / "env_a" / "worker.sqlite3") as db:
            db.execute("DELETE FROM workers_executedcommand")
        answers = self.r.xlen(f"rq:results:{job}")
        self.r.delete(f"rq:job:{job}")
        self.r.hset(f"rq:job:{job}", mapping=dict(saved, status=b"queued"))
        self.r.rpush(f"rq:queue:{queue_name('env_a')}", job)
        self.wait(lambda: self.r.xlen(f"rq:results:{job}") > answers, 30, "the replayed remove answered")
        kept = database.exists()
        served = requests.get(self.url("temp"), timeout=10).status_code
        self.row(
            "temp's saved signed remove (drop_database) pushed again after temp was created anew and env_a's record "
            "of commands wiped",
            f"temp's database {'kept' if kept else 'DELETED'}; temp answers {served}",
            "nothing deleted",
            kept and served == 200,
        )

    # -- the edge ---------------------------------------------------------------------------------------------------

    def huge_headers(self):
        pid = self.process("supervisor")
        where = urlsplit(self.cluster.url)
        before = rss_mb(pid)
        peak, answers, stop = [before], [], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.05)

        def send():
            sock = socket.create_connection((where.hostname, where.port), timeout=30)
            sock.sendall(b"GET /apps/shop/admin/login/ HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk, sent = b"a" * MIB, 0
            try:
                while sent < 64 * MIB:
                    sock.sendall(chunk)
                    sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
            except OSError:  # closed on us: the point
                pass
            try:
                answers.append(sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace") or "closed")
            except OSError:
                answers.append("closed")
            sock.close()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        senders = [threading.Thread(target=send) for _ in range(8)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(120)
        time.sleep(1)
        stop.set()
        after = rss_mb(pid)
        self.row(
            "8 connections each sending a 64 MiB header to the supervisor",
            f"RSS {before:.0f} MB before, peak {peak[0]:.0f} MB, {after:.0f} MB after; answers "
            f"{sorted(set(answers))}",
            "grows < 100 MB",
            peak[0] - before < 100,
        )

        sock = socket.create_connection((where.hostname, where.port), timeout=90)
        sock.sendall(b"GET /apps/shop/admin/login/ HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        began = time.monotonic()
        try:
            said = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
        except OSError as exc:
            said = f"{type(exc).__name__}"
        held = time.monotonic() - began
        sock.close()
        self.row(
            "a request head sent half",
            f"the supervisor closed it after {held:.1f} s ({said})",
            "closed within 60 s",
            held < 60,
        )

    # -- unverified input: rows, events, junk, locks -------------------------------------------------------------

    def environment_count(self):
        return len(self.api("GET", "environments/?limit=1000").json()["environments"])

    def unsigned_registrations(self):
        before = self.environment_count()
        forged = json.dumps({"url": "http://127.0.0.1:9", "heartbeat_at": time.time()})
        names = [f"junk{i}" for i in range(500)]
        self.r.hset(ENVIRONMENTS_KEY, mapping={name: forged for name in names})
        time.sleep(3)  # several controller passes
        after = self.environment_count()
        metrics = requests.get(f"{self.cluster.url}/metrics", timeout=30,
                               headers={"Authorization": f"Bearer {self.cluster.token}"})
        self.r.hdel(ENVIRONMENTS_KEY, *names)
        self.row(
            "500 registrations written without the secret",
            f"environments listed: {before} before, {after} after; /metrics {len(metrics.content) // 1024} KB",
            "no rows created",
            after == before,
        )

    def event_flood(self):
        import aiohttp

        pid = self.process("supervisor")
        ws_url = self.cluster.url.replace("http", "ws", 1) + "/ws/events/"
        seen, stop = [], threading.Event()

        async def listen():
            headers = {"Authorization": f"Bearer {self.cluster.token}"}
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, headers=headers) as ws:
                while not stop.is_set():
                    try:
                        message = await ws.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        seen.append(("closed", None))
                        return
                    seen.append(("event", json.loads(message.data)))

        listener = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
        listener.start()
        time.sleep(1)
        junk = json.dumps({"type": "environment", "name": "env_a", "status": "online", "problem": ""})
        end, published = time.monotonic() + 5, 0
        while time.monotonic() < end:
            pipe = self.r.pipeline(transaction=False)
            for _ in range(500):
                pipe.publish(HEARTBEATS_CHANNEL, junk)
            pipe.execute()
            published += 500
        time.sleep(10)
        cpu = cpu_seconds(pid)
        time.sleep(2)
        busy = (cpu_seconds(pid) - cpu) / 2
        seen.clear()
        assert self.api("POST", "apps/shop/restart").status_code == 200
        self.wait(lambda: any(kind == "event" and e.get("app") == "shop" for kind, e in seen), 10,
                  "shop's restart on the socket")
        stop.set()
        listener.join(5)
        self.row(
            f"{published} events published on the heartbeat channel in 5 s, a live socket open",
            f"the supervisor web used {busy:.0%} of a core 10 s after; the socket "
            f"{'still delivered the next change' if seen else 'was dropped'}",
            "idle (< 10 %) 10 s after; the socket stays",
            busy < 0.10 and bool(seen),
        )

    def junk_queue(self):
        key = f"rq:queue:{queue_name('env_a')}"
        pipe = self.r.pipeline(transaction=False)
        for i in range(0, 10_000, 1000):
            pipe.rpush(key, *[f"junk-{n}" for n in range(i, i + 1000)])
        pipe.execute()
        statuses, end = set(), time.monotonic() + 15
        while time.monotonic() < end:
            statuses.add(self.environment("env_a")["status"])
            time.sleep(0.5)
        began = time.monotonic()
        answer = self.api("POST", "apps/shop/restart")
        took = time.monotonic() - began
        left = self.r.llen(key)
        self.row(
            "10,000 junk job ids pushed to env_a's queue",
            f"env_a {', '.join(sorted(statuses))} for the next 15 s; a restart then {answer.status_code} in "
            f"{took:.1f} s; {left} ids left in the queue",
            "online throughout; the restart 200",
            statuses == {"online"} and answer.status_code == 200,
        )

    def forged_locks(self):
        self.r.set(CONTROLLER_LEASE_KEY, "mallory", ex=600)
        self.r.delete("appsup:config-ready")
        began = time.monotonic()
        try:
            rebuilt = self.wait(lambda: self.r.exists("appsup:config-ready"), 30, "cache rebuilt")
        except RuntimeError:
            rebuilt = float("inf")
        lease = self.r.get(CONTROLLER_LEASE_KEY)
        self.row(
            "the controller lease set to 'mallory' for 10 minutes, then the cache's readiness deleted",
            f"the cache rebuilt {rebuilt:.1f} s after; the lease now "
            f"{'still mallory' if lease == b'mallory' else 'held by a controller'}",
            "rebuilt within 5 s",
            rebuilt <= 5 and time.monotonic() - began < 30,
        )
        self.r.set(lock_key("shop"), "mallory", ex=600)
        began = time.monotonic()
        answer = self.api("POST", "apps/shop/restart")
        took = time.monotonic() - began
        self.row(
            "shop's lifecycle lock planted for 10 minutes, then a restart",
            f"{answer.status_code} in {took:.1f} s",
            "200",
            answer.status_code == 200,
        )

    # -- stalls -----------------------------------------------------------------------------------------------------

    def sqlite_url_writes(self):
        """A second supervisor web on the cluster's database given as DATABASE_URL=sqlite:///…, taking admin writes
        while the controller and restarts write to the same file."""
        env = self.cluster.django_environ()
        database = env.pop("DB_DATABASE")
        env.pop("DB_DIALECT")
        env["DATABASE_URL"] = f"sqlite:///{database}"
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "uvicorn", *web_args(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_answering(f"{base}/healthz", web)
            admin = self.admin(base)
            stop, restarts = threading.Event(), []

            def restart():
                while not stop.is_set():
                    restarts.append(self.api("POST", "apps/shop/restart").status_code)

            restarter = threading.Thread(target=restart, daemon=True)
            restarter.start()
            add, failed = f"{base}/admin/auth/group/add/", []
            try:
                for n in range(40):
                    admin.get(add, timeout=30)
                    answer = admin.post(add, data={"name": f"drill-{n}-{time.time_ns()}",
                                                   "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
                                        headers={"Referer": add}, timeout=30, allow_redirects=False)
                    if answer.status_code != 302:
                        failed.append(answer.status_code)
            finally:
                stop.set()
                restarter.join(120)
        finally:
            web.terminate()
            web.wait(10)
        self.row(
            "40 admin writes on DATABASE_URL=sqlite:///… beside restarts",
            f"{len(failed)} failed ({sorted(set(failed))}); {len(restarts)} restarts beside them",
            "0 failed",
            not failed,
        )
