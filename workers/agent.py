"""The worker agent: registers this environment, heartbeats, and runs the commands addressed to it.

Written as small steps (register, heartbeat_if_due, process_one, deregister) that tests call directly; ``run``
loops over them until a signal sets the stop flag, and keeps retrying with backoff while Redis is away.
"""

import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import close_old_connections
from rq.exceptions import DequeueTimeout
from rq.queue import Queue
from rq.serializers import JSONSerializer

from exchange import cache, contract, registry, status
from exchange.channel import queue_for
from exchange.redis_client import command_redis, supervisor_redis

from .channel import CommandWorker

log = logging.getLogger("appsup.worker")

# Longest a stop request waits while the agent is idle, and the granularity of backoff sleeps.
POLL_SECONDS = 1.0
MAX_BACKOFF = 30.0


class Agent:
    def __init__(self, name, url, proxy_url, interval, clock=time.time, sleep=time.sleep, death_penalty_class=None):
        self.name = name
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.registration = {
            "name": name,
            "url": url,
            "proxy_url": proxy_url or url,
            "version": contract.VERSION,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self.registered = False
        self.last_heartbeat = None
        self.stop_requested = False
        self.death_penalty_class = death_penalty_class
        self.queue = queue_for(name, command_redis())

    @functools.cached_property
    def worker(self):
        # Made on first use, not in __init__: RQ's worker talks to Redis as it is made, and an agent started while
        # Redis is away must wait for it in run's retry loop, like any later outage.
        worker = CommandWorker(
            [self.queue],
            connection=command_redis(),
            name=f"{self.name}.{socket.gethostname()}.{os.getpid()}",
            environment=self.name,
            is_placed=self.is_placed,
        )
        if self.death_penalty_class is not None:  # job timeouts use SIGALRM by default, which needs the main thread
            worker.death_penalty_class = self.death_penalty_class
        return worker

    # -- steps -------------------------------------------------------------------------------------------

    def register(self):
        registry.announce(supervisor_redis(), self.registration, now=self.clock())
        self.last_heartbeat = self.clock()
        if not self.registered:
            log.info("environment %s registered (%s)", self.name, self.registration["url"])
        self.registered = True
        self.reconcile()

    def heartbeat_if_due(self):
        if self.last_heartbeat is None or self.clock() - self.last_heartbeat >= self.interval:
            registry.announce(supervisor_redis(), self.registration, now=self.clock())
            self.last_heartbeat = self.clock()
            return True
        return False

    def process_one(self, timeout=POLL_SECONDS):
        """Run the next command, waiting up to TIMEOUT seconds for one. Returns True if one ran."""
        try:
            job, queue = Queue.dequeue_any(
                [self.queue], max(1, int(timeout)), connection=self.queue.connection, serializer=JSONSerializer
            )
        except DequeueTimeout:
            return False
        close_old_connections()
        try:
            with self._heartbeating():
                self.worker.execute_job(job, queue)
        finally:
            close_old_connections()
        return True

    @contextlib.contextmanager
    def _heartbeating(self):
        """Keep heartbeating while a long command (a big migration) runs, so the environment stays online."""
        done = threading.Event()

        def beat():
            while not done.wait(POLL_SECONDS):
                try:
                    self.heartbeat_if_due()
                except redis.RedisError as exc:
                    log.warning("environment %s: heartbeat failed (%s)", self.name, exc)

        thread = threading.Thread(target=beat, name=f"heartbeat-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def deregister(self):
        registry.withdraw(supervisor_redis(), self.registration, now=self.clock())
        self.registered = False
        log.info("environment %s deregistered", self.name)

    def reconcile(self):
        """A command cut off by a crash leaves a transitional state behind; settle it honestly."""
        r = supervisor_redis()
        for app in self._placed_apps(r):
            entry = status.read(r, app, self.name)
            if entry and entry["state"] == contract.STARTING:
                status.write(r, app, self.name, contract.ERROR, error="interrupted: the worker stopped during start")
            elif entry and entry["state"] == contract.STOPPING:
                status.write(r, app, self.name, contract.STOPPED)

    def is_placed(self, app):
        entry = cache.lookup(supervisor_redis(), app) if isinstance(app, str) else None
        return bool(entry) and self.name in entry.get("environments", [])

    def _placed_apps(self, r):
        return cache.placed_on(r, self.name)

    # -- loop --------------------------------------------------------------------------------------------

    def request_stop(self, signum=None, frame=None):
        if not self.stop_requested:
            log.info("environment %s: stop requested, finishing the command in hand", self.name)
        self.stop_requested = True

    def install_signal_handlers(self):
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, once=False):
        """Loop until stopped. ONCE: register, run what is queued, deregister."""
        backoff = 1.0
        try:
            while not self.stop_requested:
                try:
                    if not self.registered:
                        self.register()
                    self.heartbeat_if_due()
                    ran = self.process_one(timeout=POLL_SECONDS)
                    backoff = 1.0
                    if once and not ran:
                        break
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self.registered = False
                    log.warning(
                        "environment %s: Redis unavailable at %s (%s); retrying in %.0f s",
                        self.name, redis_location(), exc, backoff,
                    )
                    self._sleep_unless_stopped(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            try:
                self.deregister()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning(
                    "environment %s: could not deregister, Redis unavailable at %s (%s)", self.name, redis_location(), exc
                )

    def _sleep_unless_stopped(self, seconds):
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            self.sleep(min(0.2, end - time.monotonic()))


def redis_location():
    """The Redis URLs the agent uses, fit for a log: passwords hidden."""
    urls = (settings.APP_SUPERVISOR_REDIS_URL, settings.APP_COMMAND_REDIS_URL)
    return " and ".join(dict.fromkeys(without_password(url) if url else "the embedded Redis" for url in urls))


def without_password(url):
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    # redis-py also takes the password as a query parameter.
    query = "&".join(
        "password=***" if item.split("=", 1)[0] == "password" else item for item in parts.query.split("&")
    )
    # Spelt out: urlunsplit would drop the empty host of unix:///path.
    return f"{parts.scheme}://{userinfo}{at}{host}{parts.path}" + (f"?{query}" if query else "")
