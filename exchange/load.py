"""The load of each application on each worker web process, as the processes report it through Redis
(contract.load_key): written by workers.gate, read by the supervisor's /metrics and admin.

One hash per environment, one field per web process ("<host>:<pid>"), so that several web processes of one
environment each report their own and nobody adds counters across processes in Redis. A value is signed
(exchange.signing) by its environment: whoever can write to Redis but has not its key cannot make an application look idle or
overloaded. A process that stopped leaves its field behind until the key expires; readers skip a field older than
STALE seconds.
"""

import time

from . import signing
from .contract import load_key

# The writer refreshes its field at least this often while it runs, and the key lives a little longer.
REFRESH = 10.0
KEY_TTL = 30
STALE = 30.0
COUNTERS = ("in_flight", "queued", "refused")


def write(redis, environment, process, apps, now=None):
    """Report APPS ({name: {in_flight, queued, refused}}) as PROCESS's load on ENVIRONMENT."""
    value = signing.dumps({"at": time.time() if now is None else now, "apps": apps}, signer=environment)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(load_key(environment), process, value)
    pipe.expire(load_key(environment), KEY_TTL)
    pipe.execute()


def decode(raw, now=None, environment=None):
    """The apps of one field: {name: {counter: int}}, or None when it does not verify (as ENVIRONMENT's, given), is
    malformed or is stale."""
    entry = signing.loads_or_none(raw, environment)
    if not isinstance(entry, dict) or not isinstance(entry.get("apps"), dict):
        return None
    at = entry.get("at")
    if not isinstance(at, (int, float)) or (time.time() if now is None else now) - at > STALE:
        return None
    apps = {}
    for name, counters in entry["apps"].items():
        if isinstance(name, str) and isinstance(counters, dict):
            apps[name] = {c: counters[c] if isinstance(counters.get(c), int) and counters[c] >= 0 else 0
                          for c in COUNTERS}
    return apps


def read(redis, environments, now=None):
    """{environment: {app: {counter: sum over its fresh, verified processes}}} for ENVIRONMENTS, in one round trip."""
    environments = list(environments)
    pipe = redis.pipeline(transaction=False)
    for environment in environments:
        pipe.hgetall(load_key(environment))
    found = {}
    for environment, fields in zip(environments, pipe.execute()):
        totals = {}
        for raw in fields.values():
            for name, counters in (decode(raw, now, environment) or {}).items():
                sums = totals.setdefault(name, dict.fromkeys(COUNTERS, 0))
                for c in COUNTERS:
                    sums[c] += counters[c]
        if totals:
            found[environment] = totals
    return found
