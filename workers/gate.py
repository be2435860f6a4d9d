"""A fair share of a worker web process for each hosted application (APP_APP_CONCURRENCY and its neighbours).

Django runs on a fixed pool of APP_WEB_THREADS threads (supervisor_project.threadpool). Without a limit, one
application with slow pages (a report, an external call) and enough clients holds every thread, and its neighbours'
requests wait behind it or time out: one application takes its environment down. The gate, in front of that pool on
the event loop, lets at most ``limit`` requests of one application (/apps/<name>/…) run at once, APP_APP_CONCURRENCY
or the application's own ``concurrency`` from the supervisor (never more than the threads); a few more wait for a
turn (APP_APP_QUEUE, at most APP_APP_QUEUE_WAIT seconds each); beyond that, that application alone is answered 503
with Retry-After, before its request takes a thread. So the other applications always find free threads.

A request still running after APP_APP_TIMEOUT seconds (or the application's ``request_timeout``; 0: none) is answered 504.
Its thread cannot be stopped, so the request keeps counting as in flight until Django is done with it: the limit
stays honest, and a slow application is held to its share whatever its clients do.

What is not under /apps/ (/healthz, /readyz, static files) and names that the directory knows do not exist are not
limited. The counters (in flight, queued, refused) are this process's, reported at most once a second to Redis
(exchange.load) for the supervisor's /metrics and admin.
"""

import asyncio
import collections
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.http import HttpRequest

from exchange import contract
from exchange import directory as directory_module
from exchange import load as load_report
from exchange.redis_client import supervisor_redis

from .hosting import APP_PATH, Unavailable, unavailable_response

log = logging.getLogger("appsup.worker")

# Seconds a refused client is told to wait: about the time a few requests take to finish.
BUSY_RETRY_AFTER = 2
# How often the counters may be reported to Redis (seconds).
REPORT_EVERY = 1.0


def cached_view(name):
    """``(found, view)`` from this process's directory, without going to Redis (see Directory.cached)."""
    source = directory_module.hosted_source
    cached = getattr(source, "cached", None)  # a single instance's LocalDirectory reads its database: no memory
    return cached(name) if cached is not None else (False, None)


class _Load:
    """One application's share in this process."""

    __slots__ = ("in_flight", "waiters", "refused", "limit")

    def __init__(self, limit):
        self.in_flight = 0
        self.waiters = collections.deque()  # futures: True once given a slot, False when the wait is over
        self.refused = 0
        self.limit = limit

    def idle(self):
        return not (self.in_flight or self.waiters or self.refused)


class _Reply:
    """The inner application's ``send``, noting whether the answer started, and dropping everything once the
    gate has answered the client itself (a timeout)."""

    def __init__(self, send):
        self._send = send
        self.started = False
        self.cut = False

    async def send(self, message):
        if self.cut:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class Gate:
    """INNER (Django on its threads) behind a per-application limit (see the module docstring)."""

    def __init__(self, inner, concurrency, queue, wait, timeout, threads, views=cached_view, report=None):
        self.inner = inner
        self.concurrency = concurrency
        self.queue = queue
        self.wait = wait
        self.timeout = timeout
        self.threads = threads
        self.views = views  # name -> (found, view)
        self.report = report  # {app: {counter: n}} -> None, called in a thread of its own; None: no reports
        self.loads = {}
        self._reporter = None

    # -- the limits ------------------------------------------------------------------------------------------

    def limits(self, config):
        """(concurrency, timeout) for an application configured with CONFIG: its own when set, else the process's."""
        concurrency, timeout = config.get("concurrency"), config.get("request_timeout")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            concurrency = self.concurrency
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            timeout = self.timeout
        return min(concurrency, self.threads), timeout

    @staticmethod
    def app_of(scope):
        match = APP_PATH.match(scope["path"])
        if match is None or match["rest"] is None or not contract.NAME_RE.match(match["name"]):
            return None
        return match["name"]

    # -- ASGI ------------------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        name = self.app_of(scope) if scope["type"] == "http" else None
        if name is None:
            return await self.inner(scope, receive, send)
        found, view = self.views(name)
        if found and view is None:  # no such application: the hosting answers 404 at once
            return await self.inner(scope, receive, send)
        config = view.config if view is not None else {}
        limit, timeout = self.limits(config)
        load = self.loads.get(name)
        if load is None:
            load = self.loads[name] = _Load(limit)
        load.limit = limit
        self._start_reporting()
        if not await self._acquire(load):
            load.refused += 1
            return await self._answer(scope, send, name, self.busy(name, config, limit))
        reply = _Reply(send)
        task = asyncio.get_running_loop().create_task(self.inner(scope, receive, reply.send))
        task.add_done_callback(lambda done: self._finished(name, load, done))
        if not timeout:
            return await task
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            if reply.started:  # too late for another status: the answer is on its way, let it finish
                return await task
        reply.cut = True
        return await self._answer(scope, send, name, self.too_slow(name, config, timeout))

    async def _acquire(self, load):
        """Whether the request got a slot: at once, or after waiting its turn (at most self.wait seconds)."""
        if load.in_flight < load.limit and not load.waiters:
            load.in_flight += 1
            return True
        if len(load.waiters) >= self.queue:
            return False
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        load.waiters.append(turn)
        timer = loop.call_later(self.wait, lambda: turn.done() or turn.set_result(False))
        try:
            return await turn
        except BaseException:  # the server cancelled the request: a slot given meanwhile goes to the next one
            if turn.done() and not turn.cancelled() and turn.result():
                self._release(load)
            raise
        finally:
            timer.cancel()
            if turn in load.waiters:
                load.waiters.remove(turn)

    def _release(self, load):
        load.in_flight -= 1
        while load.waiters and load.in_flight < load.limit:
            turn = load.waiters.popleft()
            if not turn.done():
                load.in_flight += 1
                turn.set_result(True)

    def _finished(self, name, load, task):
        self._release(load)
        if load.idle() and self.loads.get(name) is load:
            del self.loads[name]

    # -- answers ---------------------------------------------------------------------------------------------

    @staticmethod
    def busy(name, config, limit):
        title = config.get("display_name") or name
        return Unavailable(
            503, "busy", f"{title} is busy",
            f"This application is answering as many requests as it may at once on environment "
            f"{settings.ENVIRONMENT_NAME} ({limit}), and others are already waiting for their turn.",
            retry_after=BUSY_RETRY_AFTER,
            advice="Try again in a few seconds: this page can simply be reloaded. The other applications of this "
            f"environment are not affected. If it lasts, an operator can look at its slow pages, or raise its "
            f"concurrency in the supervisor's admin (Applications → {name}).",
        )

    @staticmethod
    def too_slow(name, config, timeout):
        title = config.get("display_name") or name
        return Unavailable(
            504, "timeout", f"{title} took too long",
            f"This application did not answer within {timeout} seconds on environment {settings.ENVIRONMENT_NAME}.",
            advice="Try again later. If it lasts, an operator can look at its slow pages, or raise its timeout in "
            f"the supervisor's admin (Applications → {name}).",
        )

    @staticmethod
    async def _answer(scope, send, name, problem):
        request = HttpRequest()
        for header, value in scope.get("headers", ()):
            if header == b"accept":
                request.META["HTTP_ACCEPT"] = value.decode("latin-1")
        response = unavailable_response(request, name, problem)
        body = response.content
        headers = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in response.items()]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    # -- reports ---------------------------------------------------------------------------------------------

    def counters(self):
        """{app: {in_flight, queued, refused}} of the applications with anything to say."""
        return {name: {"in_flight": load.in_flight, "queued": len(load.waiters), "refused": load.refused}
                for name, load in list(self.loads.items()) if not load.idle()}

    def _start_reporting(self):
        if self.report is not None and (self._reporter is None or self._reporter.done()):
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self):
        """Every REPORT_EVERY seconds, the counters when they changed (or to keep them fresh), in a thread of its
        own: Redis is never waited for on the event loop, nor by Django's threads."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-report")
        last, written_at = None, 0.0
        while True:
            await asyncio.sleep(REPORT_EVERY)
            counters = self.counters()
            if counters == last and time.monotonic() - written_at < load_report.REFRESH:
                continue
            if not counters and not last and written_at:
                continue  # idle, and said so already
            try:
                await loop.run_in_executor(executor, self.report, counters)
            except redis.RedisError as exc:
                log.warning("cannot report the applications' load to Redis: %s", exc)
                continue
            except Exception:  # a report must never stop the gate's reports for good
                log.exception("reporting the applications' load failed")
                continue
            last, written_at = counters, time.monotonic()


def report_to_redis(counters):
    load_report.write(supervisor_redis(), settings.ENVIRONMENT_NAME, f"{socket.gethostname()}:{os.getpid()}",
                      counters)


def from_settings(inner):
    """The gate as this web process is configured: a worker's reports its load to Redis; a single instance's (which
    hosts its applications with the worker's serving, and has no Redis) keeps it to itself."""
    return Gate(inner, concurrency=settings.APP_APP_CONCURRENCY, queue=settings.APP_APP_QUEUE,
                wait=settings.APP_APP_QUEUE_WAIT, timeout=settings.APP_APP_TIMEOUT,
                threads=settings.APP_WEB_THREADS, report=report_to_redis if settings.APP_MODE == "worker" else None)
