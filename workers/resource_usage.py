"""What the agent reports of CPU and memory with each heartbeat (exchange.usage): its own, measured then, and its
web process's, as the web last answered the agent's /healthz probe (one of its processes, when it has several)."""

import logging

from exchange import usage

log = logging.getLogger("appsup.worker")


def of_health(response):
    """The web's USAGE from its /healthz RESPONSE, or None (an older web, or not JSON)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return usage.valid(body.get("usage")) if isinstance(body, dict) else None


def report(pipe, environment, web, now=None):
    """Queue this environment's usage on PIPE, beside its heartbeat; a failure to measure never stops a heartbeat."""
    try:
        agent = usage.measure()
    except Exception:  # psutil cannot read this process (a locked-down container): unknown, not an outage
        log.warning("cannot measure the agent's CPU and memory", exc_info=True)
        agent = None
    usage.write(pipe, environment, agent, web, now=now)
