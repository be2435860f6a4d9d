"""Each application's request log, error list and request counters in Redis (docs/architecture.md, "Redis"):
written by the worker web processes (workers.applog, in batches), read by the supervisor (its admin, the API,
/metrics).

An entry is ``{method, path, status, ms, environment, at, error}`` (``error``: null, or ``{type, message}``; on the
error list also ``traceback``). Entries are signed (exchange.signing), so whoever can write to Redis without the
secret cannot plant a request or a traceback in an operator's view: what does not verify, or is not an entry, is
skipped and counted, never shown nor a 500. Each entry is cut to its bound before it is signed (LOG_ENTRY_BYTES,
ERROR_ENTRY_BYTES) and the lists are trimmed on every write: an application's logs cost at most
LOG_KEEP × LOG_ENTRY_BYTES + ERRORS_KEEP × ERROR_ENTRY_BYTES bytes of Redis, whatever its traffic.

The counters are unsigned (a count for people, nothing acts on them; like contract.FORGED_LOCKS_KEY): fields
``<environment>|<class>`` (requests by status class, 1xx…5xx), ``<environment>|le|<bucket>`` (requests whose
duration fell in that bucket of DURATION_BUCKETS, not cumulative: the reader adds them up), ``<environment>|sum``
(seconds, a float) and ``<environment>|errors`` (requests that raised). They only grow, whichever process wrote,
so a counter survives a web process's restart as Prometheus expects of a counter.
"""

import json
import math
import time

from django.core.exceptions import ImproperlyConfigured

from . import signing
from .contract import (
    ERROR_ENTRY_BYTES,
    ERRORS_KEEP,
    LOG_ENTRY_BYTES,
    LOG_EVENT,
    LOG_KEEP,
    LOG_TTL,
    LOGS_CHANNEL,
    NAME_RE,
    app_errors_key,
    app_log_key,
    app_requests_key,
)

# Seconds: Prometheus's default buckets; "+Inf" is the last.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PATH_CHARS = 300
MESSAGE_CHARS = 500
METHOD_CHARS = 16


def bucket_label(le):
    return "+Inf" if le == math.inf else repr(le)


def status_class(status):
    return f"{status // 100}xx" if 100 <= status < 600 else "5xx"


def entry(method, path, status, seconds, environment, at=None, error=None):
    """One request as it is stored (bounded); ERROR: None or (type, message, traceback)."""
    found = {
        "method": str(method)[:METHOD_CHARS], "path": str(path)[:PATH_CHARS], "status": int(status),
        "ms": round(seconds * 1000, 1), "environment": environment, "at": time.time() if at is None else at,
        "error": None,
    }
    if error is not None:
        found["error"] = {"type": str(error[0])[:200], "message": str(error[1])[:MESSAGE_CHARS]}
    return found


def _fit(obj, limit, cut):
    """OBJ as JSON bytes of at most LIMIT bytes, CUT (obj, excess) making it shorter when it is not."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    if len(body) > limit:
        obj = cut(obj, len(body) - limit)
        body = json.dumps(obj, separators=(",", ":")).encode()
    return body if len(body) <= limit else json.dumps(_bare(obj), separators=(",", ":")).encode()


def _bare(obj):
    return {key: obj[key] for key in ("method", "status", "ms", "environment", "at")} | {"path": "", "error": None}


def _cut_path(obj, excess):
    return obj | {"path": obj["path"][: max(0, len(obj["path"]) - excess)]}


def _cut_traceback(obj, excess):
    tb = obj["error"]["traceback"]
    # Keep the end of a traceback: the frame that raised and the exception are what a reader needs most.
    return obj | {"error": obj["error"] | {"traceback": "…" + tb[min(len(tb), excess + 3):]}}


def sealed_entries(record, traceback=None):
    """(the log list's value, the error list's value or None) for RECORD (``entry``), signed."""
    signer = record["environment"]  # the environment that served it: the only one whose word it is
    log_value = signing.seal(_fit(record, LOG_ENTRY_BYTES, _cut_path), signer=signer)
    if traceback is None or record["error"] is None:
        return log_value, None
    full = record | {"error": record["error"] | {"traceback": str(traceback)}}
    return log_value, signing.seal(_fit(full, ERROR_ENTRY_BYTES, _cut_traceback), signer=signer)


def counter_fields(record, errored):
    """{field: increment} of the counters for one request RECORD."""
    environment, seconds = record["environment"], record["ms"] / 1000
    le = next(b for b in DURATION_BUCKETS if seconds <= b)
    fields = {f"{environment}|{status_class(record['status'])}": 1, f"{environment}|le|{bucket_label(le)}": 1,
              f"{environment}|sum": seconds}
    if errored:
        fields[f"{environment}|errors"] = 1
    return fields


def write(redis, batch):
    """Write BATCH ({app: [(log value, error value or None, {field: increment}), …]}, oldest first) in one
    pipeline: pushed, trimmed, expiring; counters incremented once per field. Returns the errors of the commands
    Redis refused (the others are done); a lost connection raises."""
    pipe = redis.pipeline(transaction=False)
    for app, items in batch.items():
        logs = [log_value for log_value, _, _ in items]
        errors = [error_value for _, error_value, _ in items if error_value is not None]
        counters, seconds = {}, {}
        for _, _, fields in items:
            for field, n in fields.items():
                if field.endswith("|sum"):
                    seconds[field] = seconds.get(field, 0.0) + n
                else:
                    counters[field] = counters.get(field, 0) + n
        pipe.lpush(app_log_key(app), *logs[-LOG_KEEP:])
        pipe.ltrim(app_log_key(app), 0, LOG_KEEP - 1)
        pipe.expire(app_log_key(app), LOG_TTL)
        if errors:
            pipe.lpush(app_errors_key(app), *errors[-ERRORS_KEEP:])
            pipe.ltrim(app_errors_key(app), 0, ERRORS_KEEP - 1)
            pipe.expire(app_errors_key(app), LOG_TTL)
        key = app_requests_key(app)
        for field, n in counters.items():
            pipe.hincrby(key, field, n)
        for field, n in seconds.items():
            pipe.hincrbyfloat(key, field, n)
        pipe.publish(LOGS_CHANNEL, json.dumps({"type": LOG_EVENT, "app": app}))
    # One command refused (a counter field someone overwrote with text: HINCRBY fails on it) must not undo the rest.
    failed = [result for result in pipe.execute(raise_on_error=False) if isinstance(result, Exception)]
    return failed


def log_event_app(raw):
    """The application a message of LOGS_CHANNEL names, or None (anyone who can write to Redis can publish)."""
    try:
        event = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(event, dict) or event.get("type") != LOG_EVENT:
        return None
    app = event.get("app")
    return app if isinstance(app, str) and NAME_RE.fullmatch(app) else None


# -- reading ------------------------------------------------------------------------------------------------------

_FIELDS = {"method": str, "path": str, "status": int, "ms": (int, float), "environment": str, "at": (int, float)}


def decode(raw, with_traceback=False):
    """The entry RAW carries, or None when it does not verify or is not an entry."""
    try:
        signer, body = signing.open_sealed(raw)
        found = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError, ImproperlyConfigured):
        return None
    if not isinstance(found, dict) or found.get("environment") != signer:
        return None  # an entry is only as true as the environment it names: signed by another, it is forged
    for field, kind in _FIELDS.items():
        value = found.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return None
    if not NAME_RE.fullmatch(found["environment"]):
        return None
    error = found.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("type"), str)
                                  and isinstance(error.get("message"), str)):
        return None
    if with_traceback and (error is None or not isinstance(error.get("traceback"), str)):
        return None
    clean = {field: found[field] for field in _FIELDS}
    clean["error"] = None if error is None else {
        "type": error["type"], "message": error["message"],
        **({"traceback": error["traceback"]} if with_traceback else {})}
    return clean


class Filters:
    """What a reader asks for: a status class ("2xx"…"5xx"), errors only, a path fragment, an environment."""

    def __init__(self, status=None, errors=False, path=None, environment=None):
        # An empty path keeps everything; an empty status or environment is a filter that cannot be (problems).
        self.status, self.errors, self.path, self.environment = status, errors, path or None, environment

    def problems(self):
        """{parameter: message} of the filters that cannot be."""
        found = {}
        if self.status is not None and self.status not in STATUS_CLASSES:
            found["status"] = f"give one of {', '.join(STATUS_CLASSES)}"
        if self.environment is not None and not NAME_RE.fullmatch(self.environment):
            found["environment"] = "give an environment's name"
        if self.path is not None and len(self.path) > PATH_CHARS:
            found["path"] = f"give at most {PATH_CHARS} characters"
        return found

    def keep(self, record):
        return ((self.status is None or status_class(record["status"]) == self.status)
                and (self.path is None or self.path in record["path"])
                and (self.environment is None or record["environment"] == self.environment))


def read(redis, app, filters=None, limit=100):
    """(entries, skipped): APP's newest entries first, at most LIMIT of those FILTERS keep, and how many stored
    values did not verify or were malformed. Errors only: from the error list, with their tracebacks."""
    filters = filters or Filters()
    key, keep = (app_errors_key(app), ERRORS_KEEP) if filters.errors else (app_log_key(app), LOG_KEEP)
    found, skipped = [], 0
    for raw in redis.lrange(key, 0, keep - 1):
        record = decode(raw, with_traceback=filters.errors)
        if record is None:
            skipped += 1
            continue
        if filters.keep(record) and len(found) < limit:
            found.append(record)
    return found, skipped


def latest_errors(redis, app, limit=5):
    """APP's newest errors with their tracebacks (skipping what does not verify)."""
    return read(redis, app, Filters(errors=True), limit)[0]


def counters(redis, apps):
    """{app: {environment: {"codes": {class: n}, "buckets": {le: n, cumulative}, "sum": seconds, "count": n,
    "errors": n}}} of APPS, in one round trip; fields that are not counters are skipped."""
    apps = list(apps)
    pipe = redis.pipeline(transaction=False)
    for app in apps:
        pipe.hgetall(app_requests_key(app))
    found = {}
    for app, fields in zip(apps, pipe.execute()):
        per_environment = {}
        for raw_field, raw_value in fields.items():
            parsed = _counter(raw_field, raw_value)
            if parsed is None:
                continue
            environment, kind, label, value = parsed
            counts = per_environment.setdefault(environment, {
                "codes": {}, "buckets": {}, "sum": 0.0, "errors": 0})
            if kind == "code":
                counts["codes"][label] = value
            elif kind == "le":
                counts["buckets"][label] = value
            elif kind == "sum":
                counts["sum"] = value
            else:
                counts["errors"] = value
        for counts in per_environment.values():
            total, cumulative = 0, {}
            for le in DURATION_BUCKETS:
                total += counts["buckets"].get(bucket_label(le), 0)
                cumulative[bucket_label(le)] = total
            counts["buckets"], counts["count"] = cumulative, total
        if per_environment:
            found[app] = per_environment
    return found


_LABELS = {bucket_label(le) for le in DURATION_BUCKETS}


def _counter(raw_field, raw_value):
    """(environment, kind, label, value) of one counter field, or None."""
    try:
        field, value = raw_field.decode(), raw_value.decode()
    except (AttributeError, UnicodeDecodeError):
        field, value = raw_field, raw_value
    if not isinstance(field, str) or not isinstance(value, str):
        return None
    parts = field.split("|")
    if not NAME_RE.fullmatch(parts[0]):
        return None
    try:
        if len(parts) == 2 and parts[1] in STATUS_CLASSES:
            return parts[0], "code", parts[1], _count(value)
        if len(parts) == 3 and parts[1] == "le" and parts[2] in _LABELS:
            return parts[0], "le", parts[2], _count(value)
        if parts[1:] == ["sum"]:
            seconds = float(value)
            return (parts[0], "sum", None, seconds) if math.isfinite(seconds) and seconds >= 0 else None
        if parts[1:] == ["errors"]:
            return parts[0], "errors", None, _count(value)
    except ValueError:
        return None
    return None


def _count(value):
    n = int(value)
    if n < 0:
        raise ValueError(value)
    return n
