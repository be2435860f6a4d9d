"""Which origin a request of the supervisor's web addresses (proxy.hosts, proxy.asgi): with APP_APPS_DOMAIN, the
supervisor's pages, API and events socket answer only on APP_SUPERVISOR_HOSTS; an application's host goes to the
application; anything else is 404. At the ASGI level, without a server."""

import asyncio

import pytest

from proxy import asgi, hosts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def origins(settings):
    settings.APP_APPS_DOMAIN = "apps.test"
    settings.APP_SUPERVISOR_HOSTS = ("admin.test",)
    asgi.reset()


def scope(kind, host, path):
    return {"type": kind, "path": path, "raw_path": path.encode(), "query_string": b"", "method": "GET",
            "headers": [(b"host", host.encode())], "scheme": "http" if kind == "http" else "ws",
            "client": ("127.0.0.1", 1)}


def test_hosts_are_told_apart():
    assert hosts.addressed(scope("http", "admin.test:14000", "/")) == (hosts.SUPERVISOR, "")
    assert hosts.addressed(scope("http", "crm.apps.test:14000", "/")) == (hosts.APPLICATION, "crm")
    assert hosts.addressed(scope("http", "a.b.apps.test", "/")) == (hosts.ELSEWHERE, "a.b.apps.test")
    assert hosts.addressed(scope("http", "crm.example.com", "/")) == (hosts.ELSEWHERE, "crm.example.com")
    assert hosts.app_origin("crm", "https", "443") == "https://crm.apps.test"
    assert hosts.app_origin("crm", "http", "14000") == "http://crm.apps.test:14000"


def first_message(kind, host, path):
    """The first message the supervisor's ASGI application sends for a request of KIND to HOST and PATH."""
    async def run():
        django_calls = []

        async def django(scope, receive, send):
            django_calls.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})

        application = asgi.build(django)
        sent = asyncio.Queue()
        incoming = asyncio.Queue()
        await incoming.put({"type": "websocket.connect"} if kind == "websocket" else
                           {"type": "http.request", "body": b"", "more_body": False})
        task = asyncio.ensure_future(application(scope(kind, host, path), incoming.get, sent.put))
        try:
            return await asyncio.wait_for(sent.get(), 10), django_calls
        finally:
            task.cancel()
            await incoming.put({"type": "websocket.disconnect", "code": 1000})

    return asyncio.run(run())


def test_the_events_socket_and_the_admin_answer_on_the_supervisors_hosts_only():
    message, _ = first_message("websocket", "admin.test", "/ws/events/")
    assert message["type"] == "websocket.accept"  # the events socket (which then asks for credentials)
    message, _ = first_message("websocket", "crm.apps.test", "/ws/events/")
    assert message == {"type": "websocket.close", "code": 1000}  # crm's own path: no such application here
    message, calls = first_message("http", "admin.test", "/admin/")
    assert message["status"] == 200 and calls == ["/admin/"]
    message, calls = first_message("http", "elsewhere.test", "/admin/")
    assert message["status"] == 404 and calls == []
    message, calls = first_message("http", "elsewhere.test", "/readyz")
    assert calls == ["/readyz"]
    message, calls = first_message("http", "crm.apps.test", "/api/apps/")
    assert message["status"] == 404 and calls == []  # crm is not configured: the proxy's own 404, not the API


def test_an_application_under_apps_on_the_supervisors_host_is_sent_to_its_own_origin():
    message, _ = first_message("http", "admin.test:14000", "/apps/crm/admin/")
    assert message["status"] == 302
    assert dict(message["headers"])[b"location"] == b"http://crm.apps.test:14000/admin/"
