"""The web process's ASGI application, for every role, served by uvicorn (docs/deployment.md, "The web server").

HTTP that Django answers (the admin, the API, hosted applications) goes to Django's WSGI handler on a pool of
APP_WEB_THREADS threads (supervisor_project.threadpool); the event loop keeps what must be asynchronous: the access proxy, WebSockets and
lifespan. Django's own ASGI handler runs the same synchronous views at half the rate (measured with the bench's
"servers" figure: a bare project's login page under uvicorn at about half of gunicorn with 8 threads, and on a par
with it through this thread pool), because it hops threads and event loops several times per request.
"""

import atexit
import json
import os
import signal
import sys
import threading

from django.core.wsgi import get_wsgi_application

from supervisor_project.config import exit_on_config_error
from supervisor_project.threadpool import DjangoOnThreads

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_project.settings")


def _exit_normally(signum, frame):
    # Not SystemExit: raised in whatever code the signal interrupts, it can be caught there (uvicorn's websocket
    # protocol catches BaseException from the application and logs it), and the process then never exits.
    atexit._run_exitfuncs()  # the embedded Redis stopped, the logs flushed
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# uvicorn imports this module inside its own signal capture, so this handler replaces uvicorn's in every web process:
# SIGTERM/SIGINT end it at once with status 0 and its atexit clean-up run, instead of a death by signal.
if threading.current_thread() is threading.main_thread():
    for _signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_signal, _exit_normally)

# uvicorn imports this module at start, so this is where its process first reads the configuration.
with exit_on_config_error():
    wsgi_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

django_application = DjangoOnThreads(wsgi_application, threads=settings.APP_WEB_THREADS)

if settings.APP_MODE == "worker":
    from workers.serving import build
elif settings.APP_MODE == "supervisor":
    from proxy.asgi import build
else:  # a single instance hosts its applications itself (single/)
    from single.serving import build



def answering_liveness(inner):
    """INNER, with GET and HEAD /healthz answered on the event loop, never by Django's threads: when hosted views
    hold every thread (a slow report, an external call), the process still answers that it is alive, so its agent
    does not call the environment degraded and the proxy does not refuse every application there. "Degraded"
    keeps meaning that the web process does not answer at all."""
    from supervisor_project.views import liveness

    fixed = json.dumps(liveness()).encode() if settings.APP_MODE != "worker" else None  # a worker's has its usage

    async def application(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == LIVENESS_PATH and scope["method"] in ("GET", "HEAD"):
            body = fixed if fixed is not None else json.dumps(liveness()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return None
        return await inner(scope, receive, send)

    return application


LIVENESS_PATH = "/healthz"

application = answering_liveness(build(django_application))
