"""The worker web's ASGI application.

HTTP goes straight to Django, where workers.hosting.HostedApplicationMiddleware mounts each hosted application at
/apps/<name>/ (database, script prefix, cookie scoping, and the 404/503 pages). That work is done in a middleware,
not here, so that the web server and Django's test client run the very same code.

Before Django, each application's request passes its gate (workers.gate): a fair share of Django's threads per
application, so that one application with slow pages never holds them all.

What Django cannot take is answered here: the hosted site has no WebSocket endpoints, so a WebSocket (the
supervisor's proxy forwards them) is refused with a close before accept, which the server turns into HTTP 403,
instead of Django raising for a scope it does not handle; and a server that speaks the lifespan protocol is
told that start-up and shutdown are done.
"""


def build(django_application):
    """The worker web's ASGI application: hosted applications under /apps/<name>/."""
    from .gate import from_settings

    gated = from_settings(django_application)

    async def application(scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            return await gated(scope, receive, send)
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1000})
            return None
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return None
        raise ValueError(f"the worker web does not handle ASGI {kind!r} connections")

    return application
