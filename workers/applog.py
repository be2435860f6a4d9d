"""The hosted requests of this worker web process, recorded per application (exchange.applog; docs/architecture.md,
"Hosted applications").

The hosting middleware notes each request of an application this environment knows (method, path, status,
duration; the traceback when a view raised, caught from Django's ``got_request_exception``) into a buffer in
memory: no Redis on the request path. A thread of its own writes what gathered, every FLUSH_EVERY seconds, in one
pipeline (signed entries pushed and trimmed, counters incremented). The buffer is bounded (PENDING_LIMIT): while
Redis does not answer, the oldest requests are dropped and counted, never the requests themselves slowed or
failed. A single instance (no Redis) records nothing.
"""

import logging
import sys
import threading
import time
import traceback

import redis
from django.conf import settings
from django.core.signals import got_request_exception

from exchange import applog, contract
from exchange.redis_client import supervisor_redis

log = logging.getLogger("appsup.worker")

FLUSH_EVERY = 0.5
PENDING_LIMIT = 10_000


class Recorder:
    def __init__(self, write=None, background=True):
        self._write = write  # batch -> None; None: exchange.applog.write to the supervisor's Redis
        self.background = background  # False: only flush() writes (tests call it)
        self._lock = threading.Lock()
        self._pending = []
        self.dropped = 0
        self._thread = None

    def note(self, app, method, path, status, seconds, error=None):
        """Keep one request of APP for the next flush; ERROR: (type, message, traceback) or None."""
        item = (app, method, path, status, seconds, time.time(), error)
        with self._lock:
            if len(self._pending) >= PENDING_LIMIT:
                del self._pending[0]
                self.dropped += 1
            self._pending.append(item)
            if self._thread is None and self.background:
                self._thread = threading.Thread(target=self._run, name="applog", daemon=True)
                self._thread.start()

    def take(self):
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def flush(self):
        """Write what gathered (signed and bounded here, off the request path); the count written."""
        pending = self.take()
        if not pending:
            return 0
        environment = settings.ENVIRONMENT_NAME
        batch = {}
        for app, method, path, status, seconds, at, error in pending:
            record = applog.entry(method, path, status, seconds, environment, at, error and error[:2])
            log_value, error_value = applog.sealed_entries(record, error[2] if error else None)
            batch.setdefault(app, []).append((log_value, error_value, applog.counter_fields(record, bool(error))))
        try:
            (self._write or self._to_redis)(batch)
        except redis.RedisError as exc:
            # Written nowhere: requests are not held back for their log, which is the lesser loss.
            self.dropped += len(pending)
            log.warning("cannot write %d requests' logs to Redis: %s", len(pending), exc)
        return len(pending)

    @staticmethod
    def _to_redis(batch):
        failed = applog.write(supervisor_redis(), batch)
        if failed:
            log.warning("Redis refused %d writes of the applications' request logs: %s", len(failed), failed[0])

    def _run(self):
        while True:
            time.sleep(FLUSH_EVERY)
            try:
                self.flush()
            except Exception:  # the recorder must outlive any one batch
                log.exception("writing the applications' request logs failed")


recorder = Recorder()


def enabled():
    return settings.APP_MODE == "worker"


def _caught(sender, request=None, **kwargs):
    """Django's handler for an exception a view raised: kept on the request for its log line."""
    if request is not None and getattr(request, "hosted_app", None) is not None:
        kind, value, tb = sys.exc_info()
        if kind is not None:
            text = "".join(traceback.format_exception(kind, value, tb))
            # Bounded while it waits in the buffer too (a deep recursion's traceback runs to megabytes); the end,
            # where the exception is, is what is kept.
            request.hosted_error = (kind.__name__, str(value)[:applog.MESSAGE_CHARS],
                                    text[-contract.ERROR_ENTRY_BYTES:])


got_request_exception.connect(_caught, dispatch_uid="workers.applog")
