"""Each hosted application's own secret key.

A worker serves several applications in one process, and Django reads ``settings.SECRET_KEY`` whenever it signs (the
session's data and its auth hash, password reset tokens, signed cookies, ``django.core.signing``). A worker's
SECRET_KEY is therefore this object: while a request of an application is served (workers.hosting sets
``current_application``) it reads as that application's key, derived with HKDF-SHA256 from the worker's
secret and the application's name; otherwise as the worker's secret itself. So no application can forge another's
sessions or tokens, nor the supervisor's, with what it signs with or can read from its settings.

Django turns a key into bytes with ``force_bytes``, i.e. ``str(key)``, which is where the choice is made.
"""

from contextvars import ContextVar
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The name of the application whose request this thread (or task) is serving, or None.
current_application = ContextVar("appsup_current_application", default=None)

INFO = b"appsup hosted application key: "


@lru_cache(maxsize=1024)
def derive(secret, name):
    """NAME's key (64 hex characters) from the worker's SECRET."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO + name.encode()).derive(
        secret.encode()).hex()


class PerApplicationKey:
    def __init__(self, secret):
        self._secret = str(secret)

    def __str__(self):
        name = current_application.get()
        return self._secret if name is None else derive(self._secret, name)

    def __len__(self):
        return len(str(self))

    def __eq__(self, other):
        return str(self) == other

    __hash__ = None

    def __repr__(self):
        return "<PerApplicationKey>"  # never the secret in a traceback or a debug page
