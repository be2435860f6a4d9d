"""The events socket, /ws/events/ (live.consumers, live.access, live.stream): through the supervisor's real ASGI
application with channels' WebsocketCommunicator, against the real test Redis (events published with a plain
client, as workers and the controller publish them) and a private redis-server killed and restarted."""

import json
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.asgi import get_asgi_application
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api.auth import WRONG_TOKEN
from exchange import contract, events, redis_client, status
from live import stream
from live.access import EVENT_PERMISSIONS
from proxy.asgi import build

from .conftest import free_port
from .factories import register_environment
from .processes import RedisServer

# Real commits: the consumer reads the database through channels' database_sync_to_async, which closes a connection
# it finds inside a transaction, as a test's own would be.
pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "socket-test-token-0123456789abcd"
PATH = "/ws/events/"
WAIT = 2  # seconds: "within a second", with room for a loaded machine


@pytest.fixture(autouse=True)
def _token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def application():
    return build(get_asgi_application())


def bearer(token=TOKEN):
    return [(b"authorization", f"Bearer {token}".encode())]


async def opened(application, headers, path=PATH):
    """A connected communicator, once it is told the stream is live (the hub has subscribed to Redis)."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from(timeout=WAIT)
    assert first["type"] == stream.STREAM and first["status"] == stream.LIVE, first
    assert abs(first["now"] - time.time()) < 5
    return communicator


async def refused(application, headers):
    """(close code, the message naming the problem) of a connection the socket refuses."""
    communicator = WebsocketCommunicator(application, PATH, headers=headers)
    connected, _ = await communicator.connect()
    assert connected  # accepted only to say why it is closed: a server answers a refused handshake with a bare 403
    message = await communicator.receive_json_from(timeout=WAIT)
    closed = await communicator.receive_output(timeout=WAIT)
    assert message["type"] == "refused" and closed["type"] == "websocket.close"
    await communicator.disconnect()
    return closed["code"], message["error"]


async def next_of(communicator, kind, timeout=WAIT):
    """The next message of type KIND. Others are skipped: pub/sub channels span a Redis server's databases, so a
    test run sharing the server with another (REDIS_URL) sees that one's events too, verified against its own."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] == kind:
            return message


async def placements_within(communicator, seconds):
    """The placement messages received in the next SECONDS."""
    found = []
    while not await communicator.receive_nothing(timeout=seconds):
        message = await communicator.receive_json_from()
        if message["type"] == "placement":
            found.append(message)
    return found


async def publish(*args, **kwargs):
    await sync_to_async(events.publish)(redis_client.supervisor_redis(), *args, **kwargs)


async def report(app, environment, state, error=""):
    """What a worker does on a transition: the signed status entry, and its event."""
    return await sync_to_async(status.write)(redis_client.supervisor_redis(), app, environment, state, error=error)


def placement_event(entry):
    return {"type": "placement", "app": entry["app"], "environment": entry["environment"], "state": entry["state"],
            "error": entry["error"] or None,
            "at": stream.iso_from_unix(entry["at"])}


# -- who may connect ------------------------------------------------------------------------------------------


def test_the_api_token_receives_a_placement_event_published_on_redis(application):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        entry = await report("crm", "env_a", contract.STOPPED)
        received = await next_of(communicator, "placement")
        await communicator.disconnect()
        return entry, received

    entry, received = scenario()
    assert received == placement_event(entry)


def test_no_credentials_are_refused_with_4401_naming_the_token_and_the_session(application):
    code, message = async_to_sync(refused)(application, [])
    assert code == 4401
    assert "Authorization: Bearer <SUPERVISOR_API_TOKEN>" in message and "staff" in message


def test_a_wrong_token_is_refused_with_4401(application):
    code, message = async_to_sync(refused)(application, bearer("not-the-token"))
    assert (code, message) == (4401, WRONG_TOKEN)


def test_a_token_is_refused_when_none_is_configured(application, settings):
    settings.SUPERVISOR_API_TOKEN = ""
    code, message = async_to_sync(refused)(application, bearer(""))
    assert code == 4401 and "use 'Authorization: Bearer <token>'" in message
    code, message = async_to_sync(refused)(application, bearer("anything"))
    assert code == 4401 and "SUPERVISOR_API_TOKEN is not set" in message


def session_headers(client, username, staff=True, origin="http://testserver", permissions=EVENT_PERMISSIONS):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password="pw-123456789", is_staff=staff)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"cookie", cookie), (b"host", b"testserver")]
    if origin:
        headers.append((b"origin", origin.encode()))
    return headers


def test_a_staff_session_from_the_supervisors_own_page_is_accepted(application, client):
    register_environment("env_a")
    headers = session_headers(client, "operator")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, headers)
        entry = await report("crm", "env_a", contract.RUNNING)
        received = await next_of(communicator, "placement")
        await communicator.disconnect()
        return entry, received

    entry, received = scenario()
    assert received == placement_event(entry)


def test_a_session_from_another_sites_page_is_refused_with_4403(application, client):
    code, message = async_to_sync(refused)(application, session_headers(client, "operator", origin="https://evil.test"))
    assert code == 4403 and "not from https://evil.test" in message


def test_a_session_without_an_origin_is_refused_with_4403(application, client):
    code, message = async_to_sync(refused)(application, session_headers(client, "operator", origin=None))
    assert code == 4403 and "names no Origin" in message


def test_a_trusted_origin_is_accepted(application, client, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://admin.example.com"]
    headers = session_headers(client, "operator", origin="https://admin.example.com")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, headers)
        await communicator.disconnect()

    scenario()


def test_a_session_of_a_user_who_is_not_staff_is_refused_with_4403(application, client):
    code, message = async_to_sync(refused)(application, session_headers(client, "visitor", staff=False))
    assert code == 4403 and "not active staff" in message


def test_a_staff_session_without_the_view_permissions_is_refused_with_4403_naming_the_missing_one(application,
                                                                                                 client):
    headers = session_headers(client, "intern", permissions=["apps.view_application"])
    code, message = async_to_sync(refused)(application, headers)
    assert code == 4403 and "environments.view_environment" in message and "intern" in message


def test_a_per_user_token_opens_the_socket_with_its_users_permissions_only(application):
    from apitokens.models import ApiToken

    from .factories import staff_user

    def token_of(user):
        api_token = ApiToken(user=user, name="socket")
        token = api_token.issue()
        api_token.save()
        return token

    half = token_of(staff_user("half", "apps.view_application"))
    code, message = async_to_sync(refused)(application, bearer(half))
    assert code == 4403 and "environments.view_environment" in message
    both = token_of(staff_user("both", *EVENT_PERMISSIONS))

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer(both))  # no Origin asked of a token
        await communicator.disconnect()

    scenario()


def test_a_wrong_token_is_refused_even_alongside_a_staff_session(application, client):
    headers = session_headers(client, "operator") + bearer("not-the-token")
    code, _ = async_to_sync(refused)(application, headers)
    assert code == 4401


def test_other_websocket_paths_outside_apps_are_still_refused(application):
    @async_to_sync
    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/other/", headers=bearer())
        connected, _ = await communicator.connect()
        return connected

    assert scenario() is False


def test_a_worker_serves_no_events_socket():
    from workers.serving import build as build_worker

    @async_to_sync
    async def scenario():
        communicator = WebsocketCommunicator(build_worker(get_asgi_application()), PATH, headers=bearer())
        connected, _ = await communicator.connect()
        return connected

    assert scenario() is False


# -- what is forwarded ----------------------------------------------------------------------------------------


def test_forged_and_malformed_events_are_dropped(application, r):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        # Published by whoever can write to Redis, with no signed status behind it, or not an event at all.
        for raw in (
            b"not json", b"[1, 2]", json.dumps({"type": "nonsense"}),
            json.dumps({"type": "placement", "app": "crm", "environment": "env_a", "state": "running"}),
            json.dumps({"type": "placement", "app": "../etc", "environment": "env_a", "state": "running"}),
            json.dumps({"type": "placement", "app": "crm\n", "environment": "env_a", "state": "running"}),
            json.dumps({"type": "placement", "app": ["crm"], "environment": "env_a"}),
            json.dumps({"type": "environment", "name": "env_nowhere", "status": "online"}),
            json.dumps({"type": "environment", "name": {"x": 1}}),
            json.dumps({"type": "app", "name": "<script>"}),
        ):
            await sync_to_async(r.publish)(contract.EVENTS_CHANNEL, raw)
        # A status entry planted without the shared secret, announced as a worker would.
        forged = json.dumps({"app": "erp", "environment": "env_a", "state": "running", "error": "", "traceback": "",
                             "at": time.time()})
        await sync_to_async(r.hset)(contract.STATUSES_KEY, contract.status_field("erp", "env_a"), forged)
        await publish(events.PLACEMENT, app="erp", environment="env_a", state="running")
        # Then a genuine one: the first thing the client receives.
        entry = await report("crm", "env_a", contract.STOPPED)
        received = await next_of(communicator, "placement")
        nothing_more = not await placements_within(communicator, 0.3)
        await communicator.disconnect()
        return entry, received, nothing_more

    entry, received, nothing_more = scenario()
    assert received == placement_event(entry)
    assert nothing_more


def test_what_is_forwarded_comes_from_the_signed_entry_not_the_event(application, r):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        entry = await report("crm", "env_a", contract.STOPPED)
        first = await next_of(communicator, "placement")
        # A forged "running" for the same placement: the entry still says stopped, and that was sent already.
        await publish(events.PLACEMENT, app="crm", environment="env_a", state="running", error=None, at=time.time())
        repeat = not await placements_within(communicator, 0.3)
        await communicator.disconnect()
        return entry, first, repeat

    entry, first, repeat = scenario()
    assert first == placement_event(entry) and first["state"] == contract.STOPPED
    assert repeat


def test_an_environment_event_carries_the_status_the_database_holds(application):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        # As the controller announces a flip; a forged status for env_a says "offline", the database online.
        await publish(events.ENVIRONMENT, name="env_b", status="offline", problem="x")
        env_b = await next_of(communicator, "environment")
        await publish(events.ENVIRONMENT, name="env_a", status="offline", problem="forged")
        env_a = await next_of(communicator, "environment")
        await communicator.disconnect()
        return env_a, env_b

    env_a, env_b = scenario()
    assert env_b["type"] == "environment" and env_b["name"] == "env_b" and env_b["status"] == contract.OFFLINE
    assert env_b["problem"].startswith("environment env_b is offline: last heartbeat")
    assert env_b["last_heartbeat_at"].startswith("1970-01-01T00:00:00")
    assert (env_a["name"], env_a["status"], env_a["problem"]) == ("env_a", contract.ONLINE, None)


def test_a_heartbeat_announced_on_its_own_channel_reaches_the_page(application):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        await publish(events.ENVIRONMENT, channel=contract.HEARTBEATS_CHANNEL, name="env_a", status="online",
                      problem=None)
        env_a = await next_of(communicator, "environment")
        await communicator.disconnect()
        return env_a

    env_a = scenario()
    assert (env_a["name"], env_a["status"]) == ("env_a", contract.ONLINE) and env_a["last_heartbeat_at"]


def test_a_placement_on_an_offline_environment_is_forwarded_as_unknown(application):
    register_environment("env_b", heartbeat_at=0)

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        await report("crm", "env_b", contract.RUNNING)
        received = await next_of(communicator, "placement")
        await communicator.disconnect()
        return received

    assert scenario()["state"] == contract.UNKNOWN


def test_an_application_change_is_forwarded_by_name(application):
    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        await publish(events.APP, name="crm")
        received = await next_of(communicator, "app")
        await communicator.disconnect()
        return received

    assert scenario() == {"type": "app", "name": "crm"}


def flood(r, count):
    """COUNT events published at once, as anyone who can write to Redis could: junk, environments and placements
    with names nothing has (a database read each, if each were read), and the real env_a's heartbeat, over and
    over."""
    with r.pipeline(transaction=False) as pipe:
        for i in range(count):
            kind = i % 5
            if kind == 0:
                pipe.publish(contract.HEARTBEATS_CHANNEL, b"junk %d" % i)
            elif kind == 1:
                pipe.publish(contract.HEARTBEATS_CHANNEL, events.encode({"type": "environment", "name": f"ghost_{i}"}))
            elif kind == 2:
                pipe.publish(contract.EVENTS_CHANNEL, events.encode(
                    {"type": "placement", "app": f"app_{i}", "environment": "env_a", "state": "running"}))
            else:
                pipe.publish(contract.HEARTBEATS_CHANNEL, events.encode({"type": "environment", "name": "env_a"}))
        pipe.execute()


def test_a_flood_of_events_costs_a_bounded_number_of_reads_and_real_changes_still_arrive(application, r):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        began = time.monotonic()
        await sync_to_async(flood, thread_sensitive=False)(r, 50_000)
        published = time.monotonic() - began
        # Once the flood is over, pages are told to read everything afresh (what it hid may have changed).
        resync = await next_of(communicator, stream.STREAM, timeout=30)
        drained = time.monotonic() - began
        entry = await report("crm", "env_a", contract.STOPPED)  # a real change, after the flood
        received = await next_of(communicator, "placement")
        await communicator.disconnect()
        return resync, entry, received, published, drained

    with CaptureQueriesContext(connection) as queries:
        resync, entry, received, published, drained = scenario()

    assert resync["status"] == stream.LIVE
    assert received == placement_event(entry)
    # One query a window at most (WINDOW: 0.25 s), however many events: 50,000 would be 50,000 reads otherwise.
    assert 1 <= len(queries) <= drained / stream.WINDOW + 3, (len(queries), drained)
    assert drained < published + 5, (published, drained)


def test_every_socket_receives_each_event_from_one_subscription(application, r):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        first = await opened(application, bearer())
        second = await opened(application, bearer())
        clients = await sync_to_async(r.client_list)()
        subscribed = [c for c in clients if c["name"] == stream.client_name() and c["sub"] != "0"]
        await report("crm", "env_a", contract.STARTING)
        received = [await next_of(c, "placement") for c in (first, second)]
        await first.disconnect()
        await second.disconnect()
        return subscribed, received

    subscribed, received = scenario()
    assert len(subscribed) == 1
    assert received[0] == received[1] and received[0]["state"] == contract.STARTING


def test_a_page_is_told_when_no_controller_keeps_its_state_up_to_date_and_when_one_does_again(application,
                                                                                             monkeypatch):
    from django.utils import timezone

    from controller.models import ControllerState

    monkeypatch.setattr(stream, "SUPERVISOR_CHECK_SECONDS", 0.2)
    ControllerState.objects.create(pk=1, holder="c1", seen_at=timezone.now() - timezone.timedelta(minutes=5))

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        silent = await next_of(communicator, stream.SUPERVISOR)
        await sync_to_async(ControllerState.objects.filter(pk=1).update)(seen_at=timezone.now())
        back = await next_of(communicator, stream.SUPERVISOR)
        await communicator.disconnect()
        return silent, back

    silent, back = scenario()
    assert "No supervisor controller has run for 300 s" in silent["warning"] and "runsupervisor" in silent["warning"]
    assert back == {"type": stream.SUPERVISOR, "warning": None}


def test_the_socket_does_not_accept_messages_and_survives_them(application):
    register_environment("env_a")

    @async_to_sync
    async def scenario():
        communicator = await opened(application, bearer())
        await communicator.send_to(text_data="{not json")
        await communicator.send_to(bytes_data=b"\x00\xff")
        entry = await report("crm", "env_a", contract.STOPPED)
        received = await next_of(communicator, "placement")
        await communicator.disconnect()
        return entry, received

    entry, received = scenario()
    assert received == placement_event(entry)


# -- Redis lost and back ------------------------------------------------------------------------------------------


def test_redis_killed_and_restarted_tells_the_client_and_events_flow_again(application, settings, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(stream, "hub", stream.Hub(retry_first=0.1, retry_cap=0.5))
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        settings.APP_SUPERVISOR_REDIS_URL = server.url
        redis_client.reset()
        register_environment("env_a")

        @async_to_sync
        async def scenario():
            communicator = await opened(application, bearer())
            await sync_to_async(server.kill)()
            lost = await next_of(communicator, stream.STREAM)
            await sync_to_async(server.start)()
            back = await next_of(communicator, stream.STREAM, timeout=5)
            redis_client.reset()  # the test's own client reconnects to the new server
            entry = await report("crm", "env_a", contract.STOPPED)
            received = await next_of(communicator, "placement")
            await communicator.disconnect()
            return lost, back, entry, received

        lost, back, entry, received = scenario()
    finally:
        server.stop()
        redis_client.reset()

    assert lost["type"] == "stream" and lost["status"] == stream.RECONNECTING
    assert lost["problem"].startswith("Redis is unavailable")
    assert back["type"] == "stream" and back["status"] == stream.LIVE
    assert received == placement_event(entry)


def test_a_client_connecting_while_redis_is_down_is_told_so(application, settings, monkeypatch):
    monkeypatch.setattr(stream, "hub", stream.Hub(retry_first=0.1, retry_cap=0.5))
    settings.APP_SUPERVISOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    @async_to_sync
    async def scenario():
        communicator = WebsocketCommunicator(application, PATH, headers=bearer())
        connected, _ = await communicator.connect()
        told = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return connected, told

    connected, told = scenario()
    assert connected
    assert told["type"] == "stream" and told["status"] == stream.RECONNECTING
    assert "Redis is unavailable" in told["problem"]

