"""The supervisor's ASGI application: the access proxy under /apps/, Django for everything else.

The proxy works at the ASGI level, on the event loop, never through Django's (synchronous) view stack: a request
under /apps/<name>/ costs a lookup in the per-process directory (exchange.directory: refreshed from Redis at most once a
second, at once when an event says the application changed, and answering its last known view while Redis is lost
or unreachable) and the forwarding itself, on one pooled connection to the worker.
"""

import asyncio
import logging
from urllib.parse import quote

import redis
from django.conf import settings

from exchange import directory as directory_module
from monitoring import metrics

from . import forward as http_forward
from . import headers as h
from . import hosts, networks, pages, targets, upstream
from . import websocket as ws_forward

logger = logging.getLogger("appsup.proxy")

async def lookup(name):
    """The application's view, as exchange.directory.directory.lookup gives it, without blocking the event loop:
    from memory inline when fresh, otherwise read from Redis in a thread."""
    directory = directory_module.directory
    found, view = directory.cached(name)
    if found:
        return view
    return await asyncio.to_thread(directory.lookup, name)


def reset():
    """Forget cached views (tests change Redis between requests)."""
    directory_module.directory.clear()


def _redirect_to_slash(scope, incoming):
    location = incoming.raw_path + b"/"
    if incoming.query:
        location += b"?" + incoming.query
    status = 301 if scope["method"] in ("GET", "HEAD") else 308
    return status, [(b"location", location), (b"content-length", b"0"), (b"cache-control", b"no-store")]


async def handle_http(scope, receive, send, own_host=None):
    request_headers = scope.get("headers") or ()
    accept = (h.get(request_headers, b"accept") or b"").decode("latin-1")
    head = scope["method"] == "HEAD"

    async def refuse(refusal, incoming=None):
        metrics.count_proxy_request(known, refusal.status)
        await pages.respond(send, refusal, incoming, accept, head=head)

    known = metrics.NO_APP  # the application's name once it is known to exist: unknown names are not labels

    try:
        incoming = targets.parse_own_host(scope, own_host) if own_host else targets.parse(scope)
    except targets.BadRequest as exc:
        return await refuse(targets.Refusal(400, "bad-request", "Bad request", f"This request is not forwarded: {exc}."))
    if not targets.valid_name(incoming.name):
        return await refuse(targets.decide(None, incoming), incoming)
    try:
        view = await lookup(incoming.name)
    except redis.RedisError as exc:  # only when this process has never read the application
        logger.error("proxy: cannot read application %s from Redis: %s", incoming.name, exc)
        return await refuse(targets.Refusal(
            503, "unavailable", "Supervisor unavailable",
            "The supervisor cannot read its configuration store (Redis) right now; try again shortly.",
            app=incoming.name, headers=((b"retry-after", b"5"),)), incoming)
    if view is not None:
        known = incoming.name
    if view is not None and incoming.rest == "":
        status, headers = _redirect_to_slash(scope, incoming)
        metrics.count_proxy_request(known, status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    decision = targets.decide(view, incoming)
    if isinstance(decision, targets.Refusal):
        return await refuse(decision, incoming)
    try:
        answered = await http_forward.forward(scope, receive, send, incoming, decision)
        if answered is not None:
            metrics.count_proxy_request(known, answered)
    except http_forward.UpstreamFailed as failure:
        await refuse(targets.unreachable(decision, view, failure.detail, status=failure.status), incoming)
    except networks.RefusedTarget as refused:
        logger.warning("proxy: %s on %s not forwarded to %s: %s", scope["path"], decision.environment,
                       decision.base_url, refused)
        await refuse(targets.refused_target(decision, view, refused.reason), incoming)
    except http_forward.BodyTooLarge as too_large:
        await refuse(targets.too_large(decision, view, too_large.limit), incoming)


async def handle_websocket(scope, receive, send, own_host=None):
    try:
        incoming = targets.parse_own_host(scope, own_host) if own_host else targets.parse(scope)
    except targets.BadRequest as exc:
        return await ws_forward.refuse(scope, receive, send, str(exc))
    if not targets.valid_name(incoming.name):
        return await ws_forward.refuse(scope, receive, send, "no such application")
    try:
        view = await lookup(incoming.name)
    except redis.RedisError as exc:
        return await ws_forward.refuse(scope, receive, send, f"Redis unavailable: {exc}")
    decision = targets.decide(view, incoming)
    if isinstance(decision, targets.Refusal):
        return await ws_forward.refuse(scope, receive, send, decision.message)
    await ws_forward.forward(scope, receive, send, incoming, decision)


async def _refuse_websocket(scope, receive, send):
    """Django serves no WebSockets: refuse those outside /apps/ (HTTP 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1000})


async def _lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await upstream.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _not_here(scope, receive, send):
    """A host that is neither the supervisor's nor an application's: nothing answers there."""
    if scope["type"] == "websocket":
        return await _refuse_websocket(scope, receive, send)
    body = b"Not Found: this host is neither the supervisor's (APP_SUPERVISOR_HOSTS) nor an application's.\n"
    await send({"type": "http.response.start", "status": 404, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _to_own_origin(scope, send):
    """/apps/<name>/… on the supervisor's host, with an origin per application: the same path at the application's
    own origin (the supervisor's origin serves no application's pages, which could read it)."""
    name, _, rest = scope["path"][len(targets.PREFIX) + 1:].partition("/")
    if not targets.valid_name(name):
        return await _not_here(scope, None, send)
    port = (h.client_host(scope) or b"").decode("latin-1").rpartition("]")[2].rpartition(":")[2]
    location = hosts.app_origin(name, h.public_scheme(scope), port if port.isdigit() else None) + "/" + rest
    if scope.get("query_string"):
        location += "?" + scope["query_string"].decode("latin-1")
    await send({"type": "http.response.start", "status": 302, "headers": [
        (b"location", quote(location, safe=":/?&=%#+,;@~").encode("latin-1")), (b"content-length", b"0"),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})


def build(django_application):
    """The supervisor's ASGI application: the access proxy under /apps/, Django for the rest."""
    # The admin's live updates and automation's event stream (live.consumers); imported once Django is set up.
    from live import consumers as live_consumers

    events_socket = live_consumers.events_socket()

    async def application(scope, receive, send):
        kind = scope["type"]
        if kind in ("http", "websocket"):
            where, name = hosts.addressed(scope)
            if where == hosts.ELSEWHERE:  # a custom domain (apps.models.Domain), or nothing
                name = await hosts.custom_domains.application(name)
                where = hosts.ELSEWHERE if name is None else hosts.APPLICATION
            if where == hosts.APPLICATION:
                handle = handle_http if kind == "http" else handle_websocket
                return await handle(scope, receive, send, own_host=name)
            if where == hosts.ELSEWHERE and not (kind == "http" and scope["path"] in hosts.ANY_HOST_PATHS):
                return await _not_here(scope, receive, send)
            if settings.APP_APPS_DOMAIN and kind == "http" and targets.is_proxied(scope["path"]):
                return await _to_own_origin(scope, send)
        if kind == "http":
            if targets.is_proxied(scope["path"]):
                return await handle_http(scope, receive, send)
            return await django_application(scope, receive, send)
        if kind == "websocket":
            if targets.is_proxied(scope["path"]):
                return await handle_websocket(scope, receive, send)
            if scope["path"] == live_consumers.PATH:
                return await events_socket(scope, receive, send)
            return await _refuse_websocket(scope, receive, send)
        if kind == "lifespan":
            return await _lifespan(scope, receive, send)
        return await django_application(scope, receive, send)

    application.django_application = django_application
    return application
