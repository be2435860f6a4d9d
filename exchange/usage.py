"""CPU and memory of each environment's agent and web process (docs/architecture.md, "Liveness"), as the agent
reports them with its heartbeats: the agent measures itself, and its web process answers /healthz with its own
(``measure``), which the agent's probe reads. Stored apart from the registration (contract.USAGE_KEY), signed,
read by the supervisor's Environments page; a value that does not verify, is malformed or is older than STALE
seconds is shown as unknown.

USAGE = ``{"cpu": percent of one core since the process's previous measure (0 at its first), "rss": bytes}``,
measured with psutil.
"""

import math
import threading
import time

import psutil

from . import signing
from .contract import USAGE_KEY

_process = None
_lock = threading.Lock()


def measure():
    """This process's USAGE."""
    global _process
    with _lock:
        if _process is None:
            _process = psutil.Process()
            _process.cpu_percent(None)  # the first call only starts the clock
        return {"cpu": round(_process.cpu_percent(None), 1), "rss": _process.memory_info().rss}


def valid(value):
    """VALUE when it is a USAGE, else None."""
    if not isinstance(value, dict):
        return None
    cpu, rss = value.get("cpu"), value.get("rss")
    if not isinstance(cpu, (int, float)) or isinstance(cpu, bool) or not math.isfinite(cpu) or not 0 <= cpu < 1e5:
        return None
    if not isinstance(rss, int) or isinstance(rss, bool) or not 0 <= rss < 2**50:
        return None
    return {"cpu": cpu, "rss": rss}


def write(redis, environment, agent, web, now=None):
    redis.hset(USAGE_KEY, environment, signing.dumps(
        {"at": time.time() if now is None else now, "agent": agent, "web": web}, signer=environment))


def forget(redis, names):
    if names:
        redis.hdel(USAGE_KEY, *names)


def read(redis, environments, stale, now=None):
    """{environment: {"agent": USAGE or None, "web": USAGE or None, "at"}} of ENVIRONMENTS whose report verifies and
    is younger than STALE seconds, in one round trip."""
    environments = list(environments)
    if not environments:
        return {}
    now = time.time() if now is None else now
    found = {}
    for name, raw in zip(environments, redis.hmget(USAGE_KEY, environments)):
        entry = signing.loads_or_none(raw, name)  # an environment's figures, signed by that environment only
        if not isinstance(entry, dict):
            continue
        at = entry.get("at")
        if not isinstance(at, (int, float)) or isinstance(at, bool) or now - at > stale:
            continue
        found[name] = {"agent": valid(entry.get("agent")), "web": valid(entry.get("web")), "at": at}
    return found


def text(value):
    """USAGE for people: "3.2 % CPU · 85 MB", or "unknown"."""
    if value is None:
        return "unknown"
    return f"{value['cpu']:.1f} % CPU · {value['rss'] / 1e6:.0f} MB"
