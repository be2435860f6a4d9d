"""Every request of the supervisor gets an id: the client's ``X-Request-ID`` when it is a well-formed id, else a
new one. It is answered in the ``X-Request-ID`` header and stored on the audit entries the request records, so a
client's logs, the supervisor's and the audit log can be joined."""

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed

from .log import REQUEST_ID_HEADER, request_id_of


class RequestIdMiddleware:
    def __init__(self, get_response):
        if settings.APP_MODE == "worker":
            # A worker's pages are hosted applications': their requests are theirs, and recorded nowhere here.
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request):
        rid = request_id_of(request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response
