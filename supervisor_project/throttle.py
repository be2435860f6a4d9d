"""The supervisor's admin login, throttled with django-axes (docs/architecture.md, "Admin login throttle").

Failures are counted per username and client address together (``AXES_LOCKOUT_PARAMETERS``): after
``AXES_FAILURE_LIMIT`` (5) of them that pair is refused (429) for ``AXES_COOLOFF_TIME`` (15 minutes), whatever the
password, so
guessing one operator's password from one place stops, while another operator, or the same one elsewhere, still
logs in. A success resets the count; ``manage.py axes_reset`` lifts every lockout.

Only the supervisor's own logins count: a hosted application's admin (on a worker, or inside a single instance)
is the application's business, and its users are not the supervisor's.
"""

from axes.backends import AxesStandaloneBackend

from workers.routing import current_database


def hosted_request():
    """Whether the request being served is a hosted application's (workers.hosting routes its models)."""
    return current_database.get() is not None


def not_the_supervisors_login(request, credentials):
    """AXES_WHITELIST_CALLABLE: a hosted application's failed logins are not counted."""
    return hosted_request()


def client_ip(request):
    """AXES_CLIENT_IP_CALLABLE: the peer's address, never a header a client could choose (X-Forwarded-For would
    let a guesser name a new address on every try). Behind a reverse proxy every client shares its address, and
    lockouts become per username."""
    return request.META.get("REMOTE_ADDR")


class SupervisorLoginThrottle(AxesStandaloneBackend):
    """django-axes's backend, stepping aside for hosted applications' logins and for calls without a request
    (authenticate(username=..., password=...) from code), which axes would refuse with an error."""

    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None or hosted_request():
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
