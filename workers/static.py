"""Static file URLs below the request's mount point.

Django adds the script prefix to a relative STATIC_URL only once per process (``LazySettings`` caches the prefixed
value at its first access) and the staticfiles storage keeps its base URL, so a relative STATIC_URL alone would
give every hosted application the URLs of whichever request came first. This storage keeps the base URL relative
and adds the script prefix of the current request on every ``url()`` call: ``/apps/crm/static/…`` in a hosted
application, ``/static/…`` elsewhere.
"""

from urllib.parse import urlsplit

from django.contrib.staticfiles.storage import StaticFilesStorage
from django.urls import get_script_prefix


class ScriptPrefixedStaticFilesStorage(StaticFilesStorage):
    def url(self, name):
        url = super().url(name)
        if url.startswith("/") or urlsplit(url).scheme:
            return url
        return get_script_prefix() + url
