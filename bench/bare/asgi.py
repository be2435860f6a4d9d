"""The bare project served the way supervisor_project.asgi serves every role (Django's WSGI handler on a pool of
threads under uvicorn), and, as ``django_asgi``, through Django's own ASGI handler."""

import os

from django.core.asgi import get_asgi_application

from supervisor_project.config import DEFAULT_WEB_THREADS
from supervisor_project.threadpool import DjangoOnThreads

from .wsgi import application as wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.bare.settings")
application = DjangoOnThreads(wsgi_application, threads=DEFAULT_WEB_THREADS)
django_asgi = get_asgi_application()
