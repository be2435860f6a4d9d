"""The cookies Django itself sets, by name.

Every role sets them at Path=/ under the same names, so they need care where roles meet: a worker renames those of
each hosted application (``sessionid_crm``, see workers.hosting), and the access proxy does not forward the
supervisor's own to a worker, which would otherwise receive an operator's supervisor session with every request.
"""

from csp.middleware import CSPMiddleware
from django.conf import settings


def framework_cookie_names():
    return {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME, settings.LANGUAGE_COOKIE_NAME, "messages"}


class SupervisorPagesMiddleware(CSPMiddleware):
    """The supervisor's pages get its Content-Security-Policy (settings.CONTENT_SECURITY_POLICY, django-csp) and
    their cookies ``Secure`` when the request came over TLS (request.is_secure(): the server's scheme, or
    X-Forwarded-Proto from a trusted proxy), host-only whatever set them.

    A hosted application's pages (a worker's, or a single instance's: workers.hosting marks the request) are the
    operator's own: they keep their own headers and cookies (workers.hosting scopes those)."""

    def process_request(self, request):
        if getattr(request, "hosted_app", None) is None:
            super().process_request(request)

    def process_response(self, request, response):
        if getattr(request, "hosted_app", None) is not None:
            return response
        for morsel in response.cookies.values():
            morsel["domain"] = ""
            if request.is_secure():
                morsel["secure"] = True
        return super().process_response(request, response)
