"""A single instance's ASGI application: everything, /apps/<name>/ included, goes to Django, where
workers.hosting serves the hosted applications in this process (workers.serving); there is no access proxy.

The admin's live updates (/ws/events/) carry the events a supervisor's controller and workers publish on Redis; a
single instance has neither, so the socket says so (the page reads "not live" with why) instead of failing.
"""

import json
import threading

from live import consumers as live_consumers
from workers import serving

from . import resume

NOT_LIVE = ("Live updates need a supervisor with Redis; a single instance has none. Reload the page to see changes.")
# What live/static/live/live.js takes for "not let in": it tries again much later, not at once.
REFUSED_CLOSE = 4403


async def _not_live(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "refused", "error": NOT_LIVE})})
    await send({"type": "websocket.close", "code": REFUSED_CLOSE})


def build(django_application):
    """The single instance's ASGI application; starts, in the background, the applications that should run."""
    hosted = serving.build(django_application)
    # In a thread, so that the web server serves at once; an application still starting answers 503 "starting" meanwhile.
    threading.Thread(target=resume.resume, name="appsup-single-resume", daemon=True).start()

    async def application(scope, receive, send):
        if scope["type"] == "websocket" and scope["path"] == live_consumers.PATH:
            return await _not_live(scope, receive, send)
        return await hosted(scope, receive, send)

    application.django_application = django_application
    return application
