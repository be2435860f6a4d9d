"""What every page of the supervisor's own (admin, API) gets on its way out, whatever the role serves it."""

from csp.middleware import CSPMiddleware


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
