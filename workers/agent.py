"""The worker agent: registers this environment, heartbeats, and runs the commands addressed to it.

Written as small steps (register, ensure_registered, heartbeat_if_due, probe_if_due, process_one, deregister)
that tests call directly; ``run`` loops over them until a signal sets the stop flag, and keeps retrying while
Redis is away. Nothing a job holds may end the loop: a malformed job is dropped, reported and survived.
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
import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result

from exchange import cache, contract, keys, registry, status
from exchange.channel import RESULT_TTL, CommandJob, CommandQueue, queue_for, worker_serializer
from exchange.redis_client import command_redis, supervisor_redis

from . import commands, resource_usage, transfer, upgrade
from .channel import NOT_THE_SUPERVISORS, CommandWorker, sealed_failure
from .models import HostedState

log = logging.getLogger("appsup.worker")

# Longest a stop request waits while the agent is idle, and the granularity of backoff sleeps.
POLL_SECONDS = 1.0
# Back from an outage within a second of Redis: retries are never further apart than this.
MIN_BACKOFF = 0.25
MAX_BACKOFF = 1.0
# The web process is probed this often at most (and at least every heartbeat interval), each probe bounded.
PROBE_PERIOD = 5.0
PROBE_TIMEOUT = 2.0
FAILING_PROBE_PERIOD = 1.0
# A web that has not answered yet since the agent started (both start together in a deployment) is "not answering
# yet", not degraded, for this long: a deploy is not an incident, and alerts must not say it is.
STARTUP_GRACE = 30.0
# A refusal shown in the registration is for people; a malformed job must not grow it without bound.
REFUSAL_MAX = 300
# Ids at the head of the queue with no job behind them (junk pushed by someone who can write to Redis) are dropped at
# most this many a loop turn, read this many a round trip: whatever was pushed, a turn stays short.
JUNK_PER_TURN = 1000
JUNK_CHUNK = 100
# Redis connection trouble: the retry path, never a poison job.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class NoJobBehind(Exception):
    """A queued id with no job behind it."""


class DequeuedJob(CommandJob):
    """CommandJob, as the agent takes it off its queue: RQ passes over an id with no job behind it without a word,
    and goes on to the next within the same dequeue, however many there are; here it ends the dequeue, so that
    the agent drops such ids a bounded number a turn (Agent.drop_junk) and says so."""

    @classmethod
    def fetch(cls, id, connection=None, serializer=None):
        try:
            return super().fetch(id, connection=connection, serializer=serializer)
        except NoSuchJobError:
            raise NoJobBehind(id) from None


def probe_web(base_url, timeout=PROBE_TIMEOUT):
    """Whether the web process at BASE_URL answers /healthz: ``(True, "")`` or ``(False, why)``."""
    url = base_url.rstrip("/") + "/healthz"
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        return False, f"the web process at {base_url} does not answer /healthz within {timeout:.0f} s"
    except requests.ConnectionError as exc:
        return False, f"the web process at {base_url} does not answer /healthz: {_reason(exc)}"
    except requests.RequestException as exc:
        return False, f"the web process at {base_url} does not answer /healthz: {exc}"
    if response.status_code != 200:
        return False, f"the web process at {base_url} answers /healthz with HTTP {response.status_code}"
    web_usage = resource_usage.of_health(response)
    return (True, "") if web_usage is None else (True, "", web_usage)


def _reason(exc):
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else text


class Agent:
    def __init__(self, name, url, proxy_url, interval, clock=time.time, sleep=time.sleep, death_penalty_class=None,
                 probe=None, probe_period=None, startup_grace=STARTUP_GRACE):
        """PROBE: () -> (web_ok, problem), called every PROBE_PERIOD seconds (probe_web bound to the web's URL);
        None leaves web_ok unknown, for agents with no web of their own to watch (tests, a bare agent)."""
        self.name = name
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.probe = probe
        self.probe_period = probe_period or min(interval, PROBE_PERIOD)
        self.last_probe = None
        self.startup_grace = startup_grace
        self.started_at = clock()
        self.web_answered = False
        self.web_usage = None
        # The registration is changed by the loop, the heartbeat thread and the prober; announced as one snapshot.
        self._lock = threading.RLock()
        self.registration = {
            "name": name,
            "url": url,
            "proxy_url": proxy_url or url,
            "version": upgrade.code_version(),  # changes with the hosted code (workers.upgrade)
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        try:
            # Offered for trust on first use (environments.enrollment), where the operator turned it on.
            self.registration["public_key"] = keys.public_text(keys.signing_key(name)[1])
        except ImproperlyConfigured:
            pass  # no key here: nothing this agent writes verifies, and the supervisor says so
        self.registered = False
        self.written = None  # the sealed registration this agent last wrote
        self.last_heartbeat = None
        self.junk_dropped = 0  # queued ids with no job behind them, dropped since this agent started
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
            generation_of=self.generation_of,
            on_refusal=self.record_refusal,
        )
        if self.death_penalty_class is not None:  # job timeouts use SIGALRM by default, which needs the main thread
            worker.death_penalty_class = self.death_penalty_class
        return worker

    # -- steps -------------------------------------------------------------------------------------------

    def announce(self):
        """Write the registration with a fresh heartbeat. Returns False when Redis had lost it (a restart without
        persistence, FLUSHALL): then whatever else this agent published is gone too."""
        r = supervisor_redis()
        with self._lock:
            pipe = r.pipeline(transaction=True)
            pipe.hexists(contract.ENVIRONMENTS_KEY, self.name)
            stamped = self.clock()
            written = registry.announce(pipe, dict(self.registration), now=stamped)
            resource_usage.report(pipe, self.name, self.web_usage, now=stamped)
            existed = pipe.execute()[0]
            self.written = written
            # As of its stamp, not of its landing: one held up by a hung Redis lands old, so the next is due at once.
            self.last_heartbeat = stamped
        if not existed and self.registered:
            log.warning("environment %s: Redis lost this environment's registration; registering again", self.name)
            self.registered = False  # the loop registers again, which publishes the states again
        return bool(existed)

    def register(self):
        self.announce()
        if not self.registered:
            log.info("environment %s registered (%s)", self.name, self.registration["url"])
        self.registered = True
        self.fail_interrupted_jobs()
        self.reconcile()
        self.republish()
        upgrade.report_all(self.name, [held.app for held in self._held_states()])

    def ensure_registered(self):
        """Register unless registered and Redis still holds the registration this agent last wrote: one HGET per
        loop turn notices within a second a Redis that lost its data, and any other value written there (an old
        signed registration copied back, pointing at an old address), which a heartbeat overwrites at once.
        Returns True when it (re)registered."""
        if self.registered:
            held = supervisor_redis().hget(contract.ENVIRONMENTS_KEY, self.name)
            if held is not None:
                with self._lock:
                    if held != self.written:
                        log.warning("environment %s: the registration in Redis is not the one this agent wrote "
                                    "(an old one copied back?); writing its own again", self.name)
                        self.announce()
                return False
            log.warning("environment %s: Redis lost this environment's registration; registering again", self.name)
            self.registered = False
        self.register()
        return True

    def heartbeat_if_due(self):
        with self._lock:  # the loop and the heartbeat thread: one heartbeat when due, not two
            if self.last_heartbeat is None or self.clock() - self.last_heartbeat >= self.interval:
                self.announce()
                if self.clock() - self.last_heartbeat >= self.interval:  # held up by a hung Redis: it landed old
                    self.announce()
                return True
        return False

    def probe_if_due(self):
        """Probe the web process when due; on a change of web_ok, heartbeat at once. Returns True if it probed."""
        # A web that does not answer (starting, say) is probed every second, so that it is online soon after it is.
        period = min(FAILING_PROBE_PERIOD, self.probe_period) if self.registration.get("web_ok") is not True \
            else self.probe_period
        if self.probe is None or (self.last_probe is not None and self.clock() - self.last_probe < period):
            return False
        self.last_probe = self.clock()
        try:
            web_ok, problem, *measured = self.probe()  # and the web's usage, when it told (exchange.usage)
            self.web_usage = measured[0] if measured and web_ok else None
        except Exception as exc:  # a probe's own bug must not pass for a healthy web, nor end the agent
            log.exception("environment %s: the web probe failed", self.name)
            web_ok, problem = False, f"the web probe failed: {type(exc).__name__}: {exc}"
        web_ok = bool(web_ok)
        self.web_answered = self.web_answered or web_ok
        if not web_ok and not self.web_answered and self.clock() - self.started_at < self.startup_grace:
            web_ok, problem = None, f"not answering yet (starting): {problem}"  # unknown: see STARTUP_GRACE
        with self._lock:
            changed = "web_ok" not in self.registration or self.registration["web_ok"] != web_ok
            self.registration["web_ok"] = web_ok
            self.registration["problem"] = problem or ""
        if changed:
            if web_ok:
                log.info("environment %s: the web process answers", self.name)
            elif web_ok is None:
                log.info("environment %s: the web process is %s", self.name, problem)
            else:
                log.warning("environment %s: %s", self.name, problem)
            if self.registered:
                self.announce()
        return True

    def record_refusal(self, job_id, reason):
        """Show the last refused command in the registration, at once, so operators see it; one not signed by the
        supervisor is counted (contract.REFUSED_KEY, in /metrics)."""
        if reason.startswith(NOT_THE_SUPERVISORS):
            with contextlib.suppress(redis.RedisError):
                supervisor_redis().hincrby(contract.REFUSED_KEY, contract.REFUSED_COMMAND, 1)
        message = f"job {job_id}: {reason}"
        if len(message) > REFUSAL_MAX:
            message = message[: REFUSAL_MAX - 1] + "…"
        with self._lock:
            self.registration["refusal"] = message
            self.registration["refusal_at"] = self.clock()
        self.announce()

    def process_one(self, timeout=POLL_SECONDS):
        """Run the next command, waiting up to TIMEOUT seconds for one. Returns True if one was taken.

        A job that RQ cannot even read (a bad id, a malformed hash) or that fails outside the command itself is
        dropped and reported, never retried: one bad job must not stop this environment's commands. Ids with no
        job behind them are dropped first, a bounded number a turn (drop_junk).
        """
        if self.drop_junk():
            return True
        try:
            job, queue = CommandQueue.dequeue_any(
                [self.queue], max(1, int(timeout)), connection=self.queue.connection, serializer=worker_serializer(self.name),
                job_class=DequeuedJob,
            )
        except DequeueTimeout:
            return False
        except REDIS_DOWN:
            raise
        except Exception as exc:  # rq attaches the id of the job it could not fetch
            job_id = getattr(exc, "job_id", None)
            if job_id is None:
                raise
            if isinstance(exc, NoJobBehind):
                self.drop_junk(taken=job_id)
            else:
                self.drop_poison(job_id, exc)
            return True
        close_old_connections()
        try:
            with self._heartbeating():
                self.worker.execute_job(job, queue)
        except REDIS_DOWN:
            raise
        except Exception as exc:
            self.drop_poison(job.id, exc)
        finally:
            # A refused job never reaches RQ's own bookkeeping that takes it off the intermediate list.
            self.queue.connection.lrem(self.queue.intermediate_queue_key, 0, job.id)
            close_old_connections()
        return True

    def drop_junk(self, taken=None):
        """Drop the ids at the head of this environment's queue that have no job behind them, at most JUNK_PER_TURN,
        and show them as one refused command. TAKEN: such an id the dequeue took already (it is on the intermediate
        list). Returns how many it dropped.

        RQ skips such ids silently, one round trip or two each, all within one dequeue: 10,000 of them pushed onto
        the queue would keep the loop from its next turn (and a real command queued behind them waiting) for as
        long as that takes. Only the agent takes from its queue and the supervisor only appends to it, so a head
        found to be junk is still the head when it is trimmed."""
        conn, key = self.queue.connection, self.queue.key
        prefix = CommandJob.redis_job_namespace_prefix.encode()
        if taken is not None:
            conn.lrem(self.queue.intermediate_queue_key, 0, taken)
        junk, head = [], 0
        while len(junk) < JUNK_PER_TURN:
            ids = conn.lrange(key, head, head + JUNK_CHUNK - 1)
            with conn.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(prefix + job_id)
                present = pipe.execute()
            found = next((i for i, exists in enumerate(present) if exists), len(ids))
            junk.extend(ids[:found])
            head += found
            if found < len(ids) or len(ids) < JUNK_CHUNK:
                break
        if head:
            conn.ltrim(key, head, -1)
        if taken is not None:
            junk.insert(0, taken.encode() if isinstance(taken, str) else taken)
        if not junk:
            return 0
        self.junk_dropped += len(junk)
        first = junk[0].decode(errors="replace")
        log.warning("environment %s: %d queued ids with no job behind them dropped (%d since start), first %r",
                    self.name, len(junk), self.junk_dropped, first)
        self.record_refusal(first, f"refused: no job behind this id (malformed, or pushed onto the queue without the "
                                   f"supervisor's key); {len(junk)} such ids dropped at once, {self.junk_dropped} since "
                                   f"the agent started")
        return len(junk)

    def drop_poison(self, job_id, exc):
        """Take a job that cannot be run off every list it is on, answer whoever waits on it, and report it."""
        reason = f"refused: malformed job ({type(exc).__name__}: {exc})"
        log.error("environment %s: job %r dropped, %s", self.name, job_id, reason, exc_info=exc)
        conn = self.queue.connection
        started_key = self.queue.started_job_registry.key
        started = [entry for entry in conn.zrange(started_key, 0, -1)
                   if entry.decode(errors="replace").split(":", 1)[0] == job_id]
        pipe = conn.pipeline(transaction=False)
        pipe.lrem(self.queue.key, 0, job_id)
        pipe.lrem(self.queue.intermediate_queue_key, 0, job_id)
        if started:
            pipe.zrem(started_key, *started)
        pipe.execute()
        try:
            job = CommandJob(id=job_id, connection=conn, serializer=worker_serializer(self.name))
        except ValueError:
            pass  # not even a valid id: nobody can be waiting on it
        else:
            # The supervisor waits on the job's latest result: give it one rather than its whole timeout.
            with conn.pipeline() as pipe:
                pipe.hset(job.key, "status", JobStatus.FAILED.value)
                Result.create_failure(job, RESULT_TTL, sealed_failure(job, f"CommandRefused: {reason}", self.name),
                                      worker_name=self.worker.name, pipeline=pipe)
                pipe.execute()
        self.record_refusal(job_id, reason)

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
        with self._lock:
            registry.withdraw(supervisor_redis(), dict(self.registration), now=self.clock())
        self.registered = False
        log.info("environment %s deregistered", self.name)

    def fail_interrupted_jobs(self):
        """Fail the jobs of this queue that a previous agent process left started (it was killed mid-command):
        the supervisor waiting on one reads the failure now instead of waiting out its timeout.

        One agent runs per environment, so a started job whose worker is not this process was cut off. Returns
        the ids of the jobs it failed."""
        conn = self.queue.connection
        started = StartedJobRegistry(queue=self.queue)
        own = self.worker.name
        failed = []
        for job_id, execution_id in started.get_job_and_execution_ids(cleanup=False):
            try:
                job = CommandJob.fetch(job_id, connection=conn, serializer=worker_serializer(self.name))
            except Exception as exc:  # gone or malformed: nothing left to answer, only the entry to drop
                log.warning("environment %s: started job %r cannot be read (%s); dropped", self.name, job_id, exc)
                conn.zrem(started.key, f"{job_id}:{execution_id}")
                continue
            if job.worker_name == own:
                continue
            message = f"interrupted: the agent of {self.name} stopped while running {_describe(job)}"
            with conn.pipeline() as pipe:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                sealed = sealed_failure(job, message, self.name)
                job.failed_job_registry.add(job, ttl=job.failure_ttl or RESULT_TTL, exc_string=sealed, pipeline=pipe)
                Result.create_failure(job, job.failure_ttl or RESULT_TTL, sealed, worker_name=own, pipeline=pipe)
                pipe.zrem(started.key, f"{job_id}:{execution_id}")
                pipe.execute()
            log.warning("environment %s: job %s %s", self.name, job_id, message)
            kwargs = job.kwargs or {}
            if kwargs.get("command") in (contract.START, contract.RESTART) and isinstance(kwargs.get("app"), str):
                # The dead start's database lock would otherwise keep the next start of that application waiting
                # (and failing) until it expires.
                if commands.release_provision_lock(kwargs["app"], job.id):
                    log.warning("environment %s: released %s's provision lock held by that job", self.name,
                                kwargs["app"])
            failed.append(job_id)
        return failed

    def reconcile(self):
        """A command cut off by a crash leaves a transitional state behind; settle it honestly, in Redis and in
        this worker's own record."""
        r = supervisor_redis()
        transitional = {}
        for app in self._placed_apps(r):
            entry = status.read(r, app, self.name)
            if entry and entry["state"] in (contract.STARTING, contract.STOPPING):
                transitional[app] = entry["state"]
        for held in self._held_states():
            if held.state in (contract.STARTING, contract.STOPPING):
                transitional.setdefault(held.app, held.state)
        for app, state in sorted(transitional.items()):
            if state == contract.STARTING:
                commands._report(app, self.name, contract.ERROR, error="interrupted: the worker stopped during start")
            else:
                commands._report(app, self.name, contract.STOPPED)

    def republish(self):
        """Publish again the states this worker holds where Redis has anything else than what this process wrote
        (lost, or an old signed state copied back), each with its original time: a start is never run again for
        that (no re-migration). What this process wrote is written again byte for byte; a state it did not write
        (held from before it started) gets a new entry. An application the configuration cache, when complete, no
        longer places here was removed while this agent was away: forgotten, not published."""
        r = supervisor_redis()
        held = self._held_states()
        if not held:
            for field in self._own_fields(status.written_fields()):
                status.disown(field)
            return []
        cache_ready = cache.is_ready(r)
        placed = set(self._placed_apps(r)) if cache_ready else set()
        fields = [contract.status_field(h.app, self.name) for h in held]
        present = r.hmget(contract.STATUSES_KEY, fields)
        written = status.written(fields)
        published = []
        for state, field, raw in zip(held, fields, present):
            if cache_ready and state.app not in placed:
                commands.forget(state.app)
                status.disown(field)
                continue
            own = written.get(field)
            if own is not None and raw == own[0]:
                continue
            if own is None and status.adopt(raw, state.app, self.name, (state.state, state.error, state.at)):
                continue  # what this worker holds, written by its previous process: taken as its own
            if own is not None:
                status.put(r, own[1], own[0])
            else:
                status.write(r, state.app, self.name, state.state, error=state.error, traceback=state.traceback,
                             now=state.at)
            published.append(state.app)
        for field in set(self._own_fields(status.written_fields())) - set(fields):
            status.disown(field)  # no longer held here: nothing to keep in Redis
        if published:
            log.info("environment %s: published again the states of %s", self.name, ", ".join(published))
        return published

    def _own_fields(self, fields):
        return [field for field in fields if field.rpartition("/")[2] == self.name]

    def republish_if_changed(self):
        """One HMGET per loop turn: when Redis holds anything else than the states this process last wrote (lost,
        or an old signed one copied back to keep a stopped application online), publish them again at once.
        Returns what it published."""
        written = status.written(self._own_fields(status.written_fields()))
        if not written:
            return []
        fields = sorted(written)
        present = supervisor_redis().hmget(contract.STATUSES_KEY, fields)
        if all(raw == written[field][0] for field, raw in zip(fields, present)):
            return []
        log.warning("environment %s: a state in Redis is not the one this agent wrote; publishing its own again",
                    self.name)
        return self.republish()

    def _held_states(self):
        try:
            return list(HostedState.objects.all())
        except DatabaseError:
            log.exception("environment %s: cannot read the states held in this worker's database", self.name)
            return []

    def is_placed(self, app):
        """Whether the configuration places APP here, or APP is leaving this environment (its remove is still to
        run here: the supervisor's only command for it)."""
        entry = cache.lookup(supervisor_redis(), app) if isinstance(app, str) else None
        return bool(entry) and (self.name in entry.get("environments", [])
                                or self.name in (entry.get(contract.LEAVING) or []) or self.name in _moving(entry))

    def generation_of(self, app):
        """APP's current incarnation, from its configuration as is_placed reads it; None when unknown."""
        entry = cache.lookup(supervisor_redis(), app) if isinstance(app, str) else None
        return (entry or {}).get("generation")

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
        backoff = MIN_BACKOFF
        failures = 0
        swept = transfer.sweep_scratch()
        if swept:
            log.info("environment %s: deleted %d scratch directories of loads cut off before", self.name, swept)
        prober = self._start_prober()
        stop_heartbeats = self._start_heartbeater()
        try:
            while not self.stop_requested:
                try:
                    self.ensure_registered()
                    self.heartbeat_if_due()
                    self.republish_if_changed()
                    ran = self.process_one(timeout=POLL_SECONDS)
                    backoff, failures = MIN_BACKOFF, 0
                    if once and not ran:
                        break
                except REDIS_DOWN as exc:
                    self.registered = False
                    failures += 1
                    if failures & (failures - 1) == 0:  # 1st, 2nd, 4th, 8th… try: the outage is logged, not flooded
                        log.warning(
                            "environment %s: Redis unavailable at %s (%s); retrying every %.0f s (attempt %d)",
                            self.name, redis_location(), exc, MAX_BACKOFF, failures,
                        )
                    self._sleep_unless_stopped(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                except Exception:  # a bug or a surprise from Redis's data: logged, and the agent lives on
                    log.exception("environment %s: unexpected error; carrying on", self.name)
                    close_old_connections()
                    self._sleep_unless_stopped(MAX_BACKOFF)
        finally:
            stop_heartbeats()
            if prober is not None:
                prober.set()
            try:
                self.deregister()
            except REDIS_DOWN as exc:
                log.warning(
                    "environment %s: could not deregister, Redis unavailable at %s (%s)", self.name, redis_location(), exc
                )

    def _start_heartbeater(self):
        """Heartbeat from a thread of its own once registered: whatever holds up a loop turn (a slow Redis, a queue
        full of junk), the environment stays online. Registering, and registering again after a Redis loss, stay
        the loop's (announce notices a lost registration and has the loop register again)."""
        done = threading.Event()

        def loop():
            while not done.wait(POLL_SECONDS) and not self.stop_requested:
                if not self.registered:
                    continue
                try:
                    self.heartbeat_if_due()
                except redis.RedisError as exc:  # the loop's own retry path deals with Redis, and logs it
                    log.debug("environment %s: heartbeat failed (%s)", self.name, exc)
                except Exception:
                    log.exception("environment %s: heartbeat loop", self.name)

        thread = threading.Thread(target=loop, name=f"heartbeater-{self.name}", daemon=True)
        thread.start()

        def stop():  # before deregistering: a heartbeat after it would bring the registration back online
            done.set()
            thread.join()

        return stop

    def _start_prober(self):
        """Probe the web in a thread of its own: a slow answer (up to PROBE_TIMEOUT) never delays a command."""
        if self.probe is None:
            return None
        done = threading.Event()

        def loop():
            while not done.is_set() and not self.stop_requested:
                try:
                    self.probe_if_due()
                except redis.RedisError as exc:  # the loop's own retry path deals with Redis
                    log.debug("environment %s: could not announce the probe's result (%s)", self.name, exc)
                except Exception:
                    log.exception("environment %s: web probe loop", self.name)
                done.wait(0.2)

        threading.Thread(target=loop, name=f"probe-{self.name}", daemon=True).start()
        return done

    def _sleep_unless_stopped(self, seconds):
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            self.sleep(min(0.2, end - time.monotonic()))


def _describe(job):
    """'start crm' for a command job, whatever can be read otherwise."""
    try:
        kwargs = job.kwargs or {}
        return f"{kwargs.get('command', 'a command')} {kwargs.get('app', '')}".strip()
    except Exception:  # the job's data may not deserialize
        return f"job {job.id}"


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


def _moving(entry):
    """The environments a move of the application (its cache entry's ``moving``: {from, to}) concerns: the
    destination takes its load and start before the application is placed there, the source its dump and remove."""
    moving = entry.get("moving")
    return [moving.get("from"), moving.get("to")] if isinstance(moving, dict) else []
