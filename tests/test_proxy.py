"""The supervisor's access proxy (/apps/<name>/…), served by a real uvicorn (in a thread of the test process) in front
of real upstream servers registered as environments, with real Redis and real HTTP/WebSocket clients."""

import hashlib
import ipaddress
import json
import os
import socket
import threading
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from apps import cache
from apps.models import Application
from exchange import contract, directory, status
from proxy import asgi as proxy_asgi
from proxy import headers as proxy_headers
from proxy import pages, targets

from .conftest import free_port
from .factories import create_application, register_environment
from .proxy_upstreams import EchoUpstream, WebSocketEcho, header

pytestmark = pytest.mark.django_db


# --- The servers -------------------------------------------------------------------------------------------------


async def _stand_in_django(scope, receive, send):
    """What the router hands everything outside /apps/ to (the real Django site in production)."""
    if scope["type"] != "http":
        raise ValueError("Django only speaks HTTP")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"django:{scope['path']}".encode()})


@pytest.fixture(scope="session")
def proxy_url():
    """uvicorn serving proxy.asgi.build(...) on a free port (in a thread of this process), for the whole run."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(proxy_asgi.build(_stand_in_django), host="127.0.0.1", port=port, log_level="warning",
                            proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start listening"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def upstream_a():
    with EchoUpstream("A") as server:
        yield server


@pytest.fixture(scope="module")
def upstream_b():
    with EchoUpstream("B") as server:
        yield server


@pytest.fixture(scope="module")
def trap():
    """A server no environment points at: nothing a client sends may make the proxy talk to it."""
    with EchoUpstream("trap") as server:
        yield server


@pytest.fixture(scope="module")
def ws_upstream():
    with WebSocketEcho() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream_a, upstream_b, trap):
    directory.directory.clear()
    proxy_asgi.reset()
    for server in (upstream_a, upstream_b, trap):
        server.reset()
    yield
    directory.directory.clear()
    proxy_asgi.reset()


def publish(r, name, environments, states=None):
    app = create_application(name, environments)
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    for env, state in (states or {}).items():
        status.write(r, name, env, state)
    directory.directory.clear()
    proxy_asgi.reset()
    return app


@pytest.fixture
def crm(r, upstream_a):
    """crm on env_a (upstream A), running."""
    register_environment("env_a", url=upstream_a.url)
    publish(r, "crm", ["env_a"], {"env_a": contract.RUNNING})
    return "crm"


@pytest.fixture
def split(r, upstream_a, upstream_b):
    """shop on env_a (A) and env_b (B), both running."""
    register_environment("env_a", url=upstream_a.url)
    register_environment("env_b", url=upstream_b.url)
    publish(r, "shop", ["env_a", "env_b"], {"env_a": contract.RUNNING, "env_b": contract.RUNNING})
    return "shop"


def raw_http(proxy_url, request_bytes):
    """Send bytes as they are (what requests would normalise) and return the raw response head."""
    port = int(proxy_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


# --- Forwarding --------------------------------------------------------------------------------------------------


def test_path_and_query_reach_the_worker_byte_for_byte(proxy_url, crm, upstream_a):
    response = requests.get(f"{proxy_url}/apps/crm/admin/some%20thing/?q=a%2Fb&q=%C3%A9&flag", timeout=10)
    assert response.status_code == 200
    assert response.json()["target"] == "/apps/crm/admin/some%20thing/?q=a%2Fb&q=%C3%A9&flag"
    assert response.json()["server"] == "A"


def test_the_method_and_a_post_body_reach_the_worker(proxy_url, crm, upstream_a):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = requests.request(method, f"{proxy_url}/apps/crm/api/", json={"n": 1}, timeout=10)
        echo = response.json()
        assert (echo["method"], echo["body_start"]) == (method, '{"n": 1}')
        assert header(echo, "Content-Type") == ["application/json"]


def test_a_multipart_upload_arrives_whole(proxy_url, crm, upstream_a):
    data = os.urandom(3 * 1024 * 1024)
    response = requests.post(f"{proxy_url}/apps/crm/upload/", files={"file": ("blob.bin", data)},
                             data={"title": "x"}, timeout=30)
    echo = response.json()
    sent = upstream_a.last()
    assert echo["body_length"] > len(data)
    assert header(echo, "Content-Type")[0].startswith("multipart/form-data; boundary=")
    assert int(header(echo, "Content-Length")[0]) == sent["body_length"]


def test_a_chunked_upload_is_streamed_to_the_worker(proxy_url, crm, upstream_a):
    pieces = [os.urandom(100_000) for _ in range(20)]
    response = requests.post(f"{proxy_url}/apps/crm/upload/", data=iter(pieces), timeout=30)
    echo = response.json()
    assert echo["body_length"] == sum(map(len, pieces))
    assert echo["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_hop_by_hop_headers_are_dropped_both_ways(proxy_url, crm, upstream_a):
    response = requests.get(
        f"{proxy_url}/apps/crm/hop",
        headers={"Connection": "keep-alive, X-Hop-In", "X-Hop-In": "secret", "Keep-Alive": "timeout=99",
                 "Proxy-Authorization": "Basic eA==", "TE": "trailers", "Upgrade": "h2c", "X-Custom": "kept"},
        timeout=10,
    )
    sent = upstream_a.last()
    for name in ("X-Hop-In", "Keep-Alive", "Proxy-Authorization", "TE", "Upgrade", "Transfer-Encoding"):
        assert header(sent, name) == [], name
    assert "X-Hop-In" not in (header(sent, "Connection") or [""])[0]
    assert header(sent, "X-Custom") == ["kept"]
    assert response.headers["X-Kept"] == "yes"
    for name in ("X-Hop-Out", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in response.headers, name


def test_forwarded_headers_are_set_and_the_client_host_is_kept(proxy_url, crm, upstream_a):
    host = proxy_url.removeprefix("http://")
    echo = requests.get(f"{proxy_url}/apps/crm/", headers={"X-Forwarded-For": "203.0.113.9",
                                                           "X-Forwarded-Proto": "ftp"}, timeout=10).json()
    assert header(echo, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header(echo, "X-Forwarded-Proto") == ["http"]
    assert header(echo, "X-Forwarded-Host") == [host]
    assert header(echo, "Host") == [host]


def test_the_worker_gets_no_header_the_client_did_not_send_except_the_forwarded_ones(proxy_url, crm, upstream_a):
    raw_http(proxy_url, b"GET /apps/crm/minimal HTTP/1.1\r\nHost: public.example\r\nX-Mine: 1\r\n"
                        b"Connection: close\r\n\r\n")
    names = sorted(name.lower() for name, _ in upstream_a.last()["headers"])
    assert names == ["host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-mine"]


def test_bodies_and_statuses_come_back_as_the_worker_sent_them(proxy_url, crm):
    import gzip

    response = requests.get(f"{proxy_url}/apps/crm/gzip", stream=True, timeout=10)
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.raw.read(decode_content=False)) == b"compressed " * 100
    teapot = requests.get(f"{proxy_url}/apps/crm/status?code=418", timeout=10)
    assert teapot.status_code == 418 and teapot.json()["server"] == "A"
    missing = requests.get(f"{proxy_url}/apps/crm/status?code=404", timeout=10)
    assert missing.status_code == 404 and missing.json()["server"] == "A"  # the worker's 404, not the proxy's


def test_connections_to_the_worker_are_pooled(proxy_url, crm, upstream_a):
    with requests.Session() as session:
        for _ in range(20):
            assert session.get(f"{proxy_url}/apps/crm/", timeout=10).status_code == 200
    ports = {record["client_port"] for record in upstream_a.requests}
    assert len(ports) <= 2, ports


def test_an_answer_that_breaks_off_reaches_the_client_as_incomplete(proxy_url, crm):
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{proxy_url}/apps/crm/truncated?size=2000000", timeout=10).content


def test_location_headers_pointing_at_the_worker_come_back_pointing_at_the_supervisor(proxy_url, r, upstream_a):
    register_environment("env_a", url="http://worker-a.example:15000", proxy_url=upstream_a.url)
    publish(r, "crm", ["env_a"], {"env_a": contract.RUNNING})
    cases = {
        f"{upstream_a.url}/apps/crm/admin/?next=%2Fx": f"{proxy_url}/apps/crm/admin/?next=%2Fx",
        "http://worker-a.example:15000/apps/crm/admin/login/": f"{proxy_url}/apps/crm/admin/login/",
        "/apps/crm/admin/": "/apps/crm/admin/",
        "https://elsewhere.example/": "https://elsewhere.example/",
    }
    for location, expected in cases.items():
        response = requests.get(f"{proxy_url}/apps/crm/redirect", params={"to": location},
                                allow_redirects=False, timeout=10)
        assert response.status_code == 302
        assert response.headers["Location"] == expected


def test_cookies_pass_both_ways(proxy_url, crm, upstream_a):
    response = requests.get(f"{proxy_url}/apps/crm/cookies",
                            headers={"Cookie": "sessionid_crm=abc; csrftoken_crm=def; theme=dark"}, timeout=10)
    assert header(upstream_a.last(), "Cookie") == ["sessionid_crm=abc; csrftoken_crm=def; theme=dark"]
    set_cookies = response.raw.headers.getlist("Set-Cookie")
    assert set_cookies == ["sessionid_crm=s3cr3t; Path=/apps/crm/; HttpOnly", "theme=dark; Path=/apps/crm/"]


def worker_sets(proxy_url, *cookies, app="crm"):
    response = requests.get(f"{proxy_url}/apps/{app}/cookies", params={"set": cookies}, timeout=10)
    assert response.status_code == 200
    return response.raw.headers.getlist("Set-Cookie")


def test_a_workers_cookie_outside_its_application_is_confined_to_it(proxy_url, crm):
    assert worker_sets(proxy_url, "theme=dark; Path=/", "lang=fr; path=/admin/; Max-Age=60", "v=1",
                       "twice=1; Path=/apps/crm/; Path=/",
                       "other=1; Path=/apps/shop/", "near=1; Path=/apps/crmx/") == [
        "theme=dark; Path=/apps/crm/",
        "lang=fr; Path=/apps/crm/; Max-Age=60",
        "v=1; Path=/apps/crm/",
        "twice=1; Path=/apps/crm/",
        "other=1; Path=/apps/crm/",
        "near=1; Path=/apps/crm/",
    ]
    # Inside the application: as the worker set it.
    assert worker_sets(proxy_url, "cart=7; Path=/apps/crm/shop/; Secure") == ["cart=7; Path=/apps/crm/shop/; Secure"]


def test_a_workers_cookie_loses_its_domain(proxy_url, crm):
    assert worker_sets(proxy_url, "wide=1; Domain=.example.com; Path=/apps/crm/; HttpOnly",
                       "wider=1; DOMAIN=example.com") == ["wide=1; Path=/apps/crm/; HttpOnly", "wider=1; Path=/apps/crm/"]


def test_a_worker_cannot_set_the_supervisors_own_cookies(proxy_url, crm):
    assert worker_sets(proxy_url, "sessionid=forged; Path=/", "csrftoken=forged; Path=/apps/crm/",
                       "messages=x", "django_language=fr", "appsup_env=env_b; Path=/apps/crm/",
                       "sessionid_crm=own; Path=/apps/crm/") == ["sessionid_crm=own; Path=/apps/crm/"]


def test_the_supervisors_own_session_and_csrf_cookies_never_reach_a_worker(proxy_url, crm, upstream_a):
    requests.get(f"{proxy_url}/apps/crm/cookies", timeout=10,
                 headers={"Cookie": "sessionid=supervisor-session; csrftoken=t; sessionid_crm=abc; messages=m"})
    assert header(upstream_a.last(), "Cookie") == ["sessionid_crm=abc"]

    requests.get(f"{proxy_url}/apps/crm/cookies", headers={"Cookie": "sessionid=supervisor-session"}, timeout=10)
    assert header(upstream_a.last(), "Cookie") == []


def test_the_environment_proxy_url_is_used_when_set(proxy_url, r, upstream_a):
    dead = f"http://127.0.0.1:{free_port()}"
    register_environment("env_a", url=dead, proxy_url=upstream_a.url)
    publish(r, "crm", ["env_a"], {"env_a": contract.RUNNING})
    response = requests.get(f"{proxy_url}/apps/crm/", timeout=10)
    assert response.status_code == 200
    assert response.json()["server"] == "A"


def test_a_head_request_gets_the_headers_and_no_body(proxy_url, crm, upstream_a):
    response = requests.head(f"{proxy_url}/apps/crm/page", timeout=10)
    assert response.status_code == 200
    assert upstream_a.last()["method"] == "HEAD"
    assert response.content == b""


def test_without_the_trailing_slash_the_application_root_redirects(proxy_url, crm):
    response = requests.get(f"{proxy_url}/apps/crm?x=1", allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == "/apps/crm/?x=1"


def test_everything_outside_apps_goes_to_django(proxy_url, crm, upstream_a):
    for path in ("/admin/", "/api/apps/", "/appsx/crm/", "/"):
        response = requests.get(f"{proxy_url}{path}", timeout=10)
        assert response.text == f"django:{path}"
    assert upstream_a.last() is None


# --- Several environments ----------------------------------------------------------------------------------------


def test_without_a_choice_a_page_lists_the_environments_with_their_state(proxy_url, split, r):
    status.write(r, "shop", "env_b", contract.STOPPED)
    response = requests.get(f"{proxy_url}/apps/shop/admin/?x=1", timeout=10)
    assert response.status_code == 300
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert "env_a" in page and "env_b" in page and "online" in page and "stopped" in page
    assert 'href="/apps/shop/admin/?x=1&amp;_env=env_a"' in page

    as_json = requests.get(f"{proxy_url}/apps/shop/admin/", headers={"Accept": "application/json"}, timeout=10)
    assert as_json.status_code == 300
    body = as_json.json()
    assert body["error"] == "choose-environment" and body["application"] == "shop"
    assert [(e["name"], e["status"], e["state"]) for e in body["environments"]] == [
        ("env_a", "online", "running"), ("env_b", "online", "stopped")]
    assert body["environments"][0]["link"] == "/apps/shop/admin/?_env=env_a"


def test_env_parameter_picks_the_environment_and_a_cookie_remembers_it(proxy_url, split, upstream_b):
    session = requests.Session()
    response = session.get(f"{proxy_url}/apps/shop/admin/?a=1&_env=env_b&b=2", timeout=10)
    assert response.status_code == 200
    assert response.json()["server"] == "B"
    assert response.json()["target"] == "/apps/shop/admin/?a=1&b=2"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("appsup_env=env_b;") and "Path=/apps/shop/" in cookie and "HttpOnly" in cookie

    again = session.get(f"{proxy_url}/apps/shop/other/", timeout=10)
    assert again.json()["server"] == "B"
    assert "appsup_env" not in " ".join(header(upstream_b.last(), "Cookie"))
    assert "Set-Cookie" not in again.headers

    switched = session.get(f"{proxy_url}/apps/shop/?_env=env_a", timeout=10)
    assert switched.json()["server"] == "A"
    assert session.get(f"{proxy_url}/apps/shop/", timeout=10).json()["server"] == "A"


def test_the_choice_cookie_of_one_application_does_not_choose_for_another(proxy_url, split, r, upstream_a):
    response = requests.get(f"{proxy_url}/apps/shop/", headers={"Cookie": "appsup_env=env_zzz"}, timeout=10)
    assert response.status_code == 300  # a stale or foreign choice is ignored


def test_an_environment_the_application_is_not_on_cannot_be_chosen(proxy_url, split, r):
    register_environment("env_c", url="http://127.0.0.1:9")
    response = requests.get(f"{proxy_url}/apps/shop/?_env=env_c", headers={"Accept": "application/json"},
                            timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown-environment"
    assert "env_c" in response.json()["message"]


# --- Refusals ----------------------------------------------------------------------------------------------------


def test_an_unknown_application_is_a_404_page(proxy_url):
    response = requests.get(f"{proxy_url}/apps/nothere/admin/", timeout=10)
    assert response.status_code == 404
    assert "nothere" in response.text and "No such application" in response.text
    as_json = requests.get(f"{proxy_url}/apps/nothere/", headers={"Accept": "application/json"}, timeout=10)
    assert as_json.json()["error"] == "unknown-application"
    for path in ("/apps/", "/apps", "/apps/Not_A_Slug/", "/apps/admin/"):
        assert requests.get(f"{proxy_url}{path}", timeout=10).status_code == 404, path


def test_a_stopped_application_is_a_503_page(proxy_url, r, upstream_a):
    register_environment("env_a", url=upstream_a.url)
    publish(r, "crm", ["env_a"], {"env_a": contract.STOPPED})
    response = requests.get(f"{proxy_url}/apps/crm/admin/", timeout=10)
    assert response.status_code == 503
    assert "CRM is stopped on environment env_a." in response.text
    assert upstream_a.last() is None


def test_a_starting_application_says_to_retry(proxy_url, r, upstream_a):
    register_environment("env_a", url=upstream_a.url)
    publish(r, "crm", ["env_a"], {"env_a": contract.STARTING})
    response = requests.get(f"{proxy_url}/apps/crm/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["environment"] == "env_a"


def test_stopped_everywhere_or_on_the_chosen_environment_is_a_503(proxy_url, split, r, upstream_a, upstream_b):
    status.write(r, "shop", "env_a", contract.STOPPED)
    status.write(r, "shop", "env_b", contract.ERROR, error="migration failed")
    directory.directory.clear()
    everywhere = requests.get(f"{proxy_url}/apps/shop/", timeout=10)
    assert everywhere.status_code == 503
    assert "not running on any of its environments" in everywhere.text

    chosen = requests.get(f"{proxy_url}/apps/shop/", headers={"Accept": "application/json",
                                                              "Cookie": "appsup_env=env_b"}, timeout=10)
    assert chosen.status_code == 503
    body = chosen.json()
    assert body["environment"] == "env_b" and "migration failed" in body["message"]
    assert {e["name"] for e in body["environments"]} == {"env_a", "env_b"}
    assert upstream_a.last() is None and upstream_b.last() is None


def test_an_unreachable_worker_is_a_502_naming_the_environment(proxy_url, r):
    register_environment("env_dead", url=f"http://127.0.0.1:{free_port()}")
    publish(r, "crm", ["env_dead"], {"env_dead": contract.RUNNING})
    response = requests.get(f"{proxy_url}/apps/crm/admin/", timeout=10)
    assert response.status_code == 502
    assert "env_dead" in response.text and "could not connect" in response.text
    as_json = requests.get(f"{proxy_url}/apps/crm/", headers={"Accept": "application/json"}, timeout=10).json()
    assert (as_json["error"], as_json["environment"]) == ("unreachable", "env_dead")


def test_an_offline_environment_is_no_target_and_said_to_be_offline(proxy_url, r):
    register_environment("env_gone", url=f"http://127.0.0.1:{free_port()}", heartbeat_at=time.time() - 10_000)
    publish(r, "crm", ["env_gone"], {"env_gone": contract.RUNNING})
    response = requests.get(f"{proxy_url}/apps/crm/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 503 and response.json()["error"] == "not-running"
    assert "is offline (no heartbeat from its worker for" in response.json()["message"]
    assert "offline since" in response.json()["message"]


def test_without_redis_the_proxy_says_the_supervisor_is_unavailable(proxy_url, crm, settings):
    from exchange import redis_client

    settings.APP_SUPERVISOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.reset()
    directory.directory.clear()
    proxy_asgi.reset()
    response = requests.get(f"{proxy_url}/apps/crm/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable" and "Redis" in response.json()["message"]


def test_a_worker_slower_than_the_read_timeout_is_a_504(proxy_url, crm, settings):
    settings.APP_PROXY_READ_TIMEOUT = 0.5
    began = time.monotonic()
    response = requests.get(f"{proxy_url}/apps/crm/slow?delay=3", headers={"Accept": "application/json"},
                            timeout=10)
    assert response.status_code == 504
    assert time.monotonic() - began < 2.5
    assert response.json()["environment"] == "env_a"


# --- Only registered addresses -----------------------------------------------------------------------------------


def test_host_and_forwarded_headers_cannot_redirect_the_proxy(proxy_url, crm, upstream_a, trap):
    trap_host = trap.url.removeprefix("http://")
    for headers in ({"Host": trap_host}, {"X-Forwarded-Host": trap_host}, {"Forwarded": f"host={trap_host}"},
                    {"X-Forwarded-Server": trap_host, "X-Original-URL": trap.url}):
        response = requests.get(f"{proxy_url}/apps/crm/", headers=headers, timeout=10)
        assert response.json()["server"] == "A"
    # an absolute URL in the path is a path, forwarded as one
    response = requests.get(f"{proxy_url}/apps/crm/{trap.url}/x", timeout=10)
    assert response.json()["target"] == f"/apps/crm/{trap.url}/x"
    response = requests.get(f"{proxy_url}/apps/crm//{trap_host}/x", timeout=10)
    assert response.json()["server"] == "A"
    # the absolute form of the request line
    head = raw_http(proxy_url, f"GET {trap.url}/apps/crm/ HTTP/1.1\r\nHost: {trap_host}\r\n"
                               "Connection: close\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 ")
    assert trap.last() is None


@pytest.mark.parametrize("path", ["/apps/crm/../admin/", "/apps/crm/%2e%2e/%2e%2e/admin/", "/apps/crm/./x",
                                  "/apps/crm/a/..%2F..%2Fadmin/"])
def test_dot_segments_are_refused_not_resolved(proxy_url, crm, upstream_a, path):
    head = raw_http(proxy_url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 400"), head[:100]
    assert upstream_a.last() is None


# --- Streaming ---------------------------------------------------------------------------------------------------


def test_a_large_download_is_streamed_at_the_pace_of_the_client(proxy_url, crm, upstream_a):
    size = 256 * 1024 * 1024
    with requests.get(f"{proxy_url}/apps/crm/big?size={size}", stream=True, timeout=30) as response:
        assert response.headers["Content-Length"] == str(size)
        first = response.raw.read(1024 * 1024)
        assert len(first) == 1024 * 1024
        time.sleep(1.5)  # a client that stops reading: the proxy must stop pulling from the worker
        in_flight = upstream_a.sent
        assert in_flight < 48 * 1024 * 1024, f"{in_flight} bytes left the worker for 1 MiB the client read"
        received = len(first)
        for chunk in response.iter_content(1024 * 1024):
            received += len(chunk)
    assert received == size
    # The worker (a thread of this process) counts its answer complete just after its last write returns, which
    # may be after the client has read that write.
    deadline = time.monotonic() + 10
    while upstream_a.completed == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_a.completed == 1


def test_a_client_that_goes_away_stops_the_download_from_the_worker(proxy_url, crm, upstream_a):
    size = 512 * 1024 * 1024
    with requests.get(f"{proxy_url}/apps/crm/big?size={size}", stream=True, timeout=30) as response:
        response.raw.read(1024 * 1024)
    deadline = time.monotonic() + 10
    while upstream_a.aborted == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_a.aborted == 1
    assert upstream_a.sent < size


# --- WebSocket ---------------------------------------------------------------------------------------------------


def test_a_websocket_is_proxied_both_ways(proxy_url, r, ws_upstream):
    register_environment("env_ws", url=ws_upstream.url)
    publish(r, "chat", ["env_ws"], {"env_ws": contract.RUNNING})
    url = proxy_url.replace("http://", "ws://") + "/apps/chat/ws/?room=1"
    with ws_connect(url, subprotocols=["chat"], additional_headers={"Cookie": "sessionid=x; sessionid_chat=abc"}) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["path"] == "/apps/chat/ws/?room=1"
        sent_headers = {k.lower(): v for k, v in hello["headers"]}
        assert sent_headers["host"] == proxy_url.removeprefix("http://")
        assert sent_headers["cookie"] == "sessionid_chat=abc"  # the supervisor's own sessionid stays behind
        assert sent_headers["x-forwarded-for"] == "127.0.0.1"
        assert hello["subprotocol"] == "chat" and ws.subprotocol == "chat"
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
        ws.send("close-4001")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4001


def test_a_websocket_to_an_unknown_or_stopped_application_is_refused(proxy_url, r, ws_upstream):
    register_environment("env_ws", url=ws_upstream.url)
    publish(r, "chat", ["env_ws"], {"env_ws": contract.STOPPED})
    base = proxy_url.replace("http://", "ws://")
    for path in ("/apps/nothere/ws/", "/apps/chat/ws/", "/not-apps/ws/"):
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(base + path, open_timeout=10)
        assert refused.value.response.status_code == 403


def test_a_websocket_to_a_dead_worker_is_refused(proxy_url, r):
    register_environment("env_dead", url=f"http://127.0.0.1:{free_port()}")
    publish(r, "chat", ["env_dead"], {"env_dead": contract.RUNNING})
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(proxy_url.replace("http://", "ws://") + "/apps/chat/ws/", open_timeout=10)
    assert refused.value.response.status_code == 403


def test_a_websocket_with_several_environments_follows_the_choice(proxy_url, r, ws_upstream, upstream_a):
    register_environment("env_ws", url=ws_upstream.url)
    register_environment("env_a", url=upstream_a.url)
    publish(r, "chat", ["env_a", "env_ws"], {"env_a": contract.RUNNING, "env_ws": contract.RUNNING})
    base = proxy_url.replace("http://", "ws://")
    with pytest.raises(InvalidStatus):
        ws_connect(base + "/apps/chat/ws/", open_timeout=10)
    with ws_connect(base + "/apps/chat/ws/", additional_headers={"Cookie": "appsup_env=env_ws"}) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert "appsup_env" not in dict((k.lower(), v) for k, v in hello["headers"]).get("cookie", "")


# --- Pieces ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept, expected", [
    ("", False), ("*/*", False), ("text/html,application/xhtml+xml,*/*;q=0.8", False),
    ("application/json", True), ("application/json, text/plain, */*", True),
    ("text/html;q=0.5, application/json", True), ("application/json;q=0.1, text/html", False),
])
def test_json_is_answered_when_the_client_prefers_it(accept, expected):
    assert pages.prefers_json(accept) is expected


def test_location_rewriting_respects_a_path_prefix_in_the_registered_url():
    known = ("http://gateway.internal/env-a",)
    assert proxy_headers.rewrite_location(b"http://gateway.internal/env-a/apps/crm/", known, "https://sup.example") \
        == b"https://sup.example/apps/crm/"
    assert proxy_headers.rewrite_location(b"http://gateway.internal/other/", known, "https://sup.example") \
        == b"http://gateway.internal/other/"
    assert proxy_headers.rewrite_location(b"http://GATEWAY.internal:80/env-a/x", known, "") == b"/x"


def test_only_the_env_parameter_is_taken_out_of_the_query():
    assert targets._query_without_env(b"a=1&_env=env_b&b=%2F&_env=env_c") == (b"a=1&b=%2F", "env_c")
    assert targets._query_without_env(b"x_env=1&%5Fenv=env_a") == (b"x_env=1", "env_a")


# --- Degraded environments -----------------------------------------------------------------------------------------


def _degrade(r, name, url, problem="the agent's probe of http://127.0.0.1:1/healthz timed out"):
    from exchange import registry

    registry.announce(r, {"name": name, "url": url, "proxy_url": "", "version": "1.0.0", "host": "testhost",
                          "pid": 1, "web_ok": False, "problem": problem})
    from environments import mirror

    mirror.sync(r)
    directory.directory.clear()


def test_a_degraded_environment_is_not_routed_to_and_the_page_says_why(proxy_url, crm, r, upstream_a):
    _degrade(r, "env_a", upstream_a.url)
    response = requests.get(f"{proxy_url}/apps/crm/admin/", timeout=10)
    assert response.status_code == 503
    assert "degraded" in response.text and "probe of http://127.0.0.1:1/healthz timed out" in response.text
    as_json = requests.get(f"{proxy_url}/apps/crm/", headers={"Accept": "application/json"}, timeout=10)
    body = as_json.json()
    assert (as_json.status_code, body["error"], body["environment"]) == (503, "degraded", "env_a")
    assert "timed out" in body["message"]
    assert upstream_a.last() is None


def test_the_environment_list_shows_online_degraded_and_offline_with_why(proxy_url, r, upstream_a, upstream_b):
    from exchange import registry

    register_environment("env_a", url=upstream_a.url)
    _degrade(r, "env_b", upstream_b.url, problem="web process refused the connection")
    registry.announce(r, {"name": "env_c", "url": "http://env-c.test:8000", "proxy_url": "", "version": "1.0.0",
                          "host": "testhost", "pid": 1}, now=time.time() - 10_000)
    from environments import mirror

    mirror.sync(r)
    publish(r, "shop", ["env_a", "env_b", "env_c"],
            {"env_a": contract.RUNNING, "env_b": contract.RUNNING, "env_c": contract.RUNNING})

    page = requests.get(f"{proxy_url}/apps/shop/", timeout=10)
    assert page.status_code == 300
    assert "web process refused the connection" in page.text and "no heartbeat from its worker" in page.text
    assert "?_env=env_a" in page.text and "?_env=env_b" not in page.text  # no link to a degraded environment
    body = requests.get(f"{proxy_url}/apps/shop/", headers={"Accept": "application/json"}, timeout=10).json()
    listed = {e["name"]: (e["status"], e["reason"]) for e in body["environments"]}
    assert listed["env_a"] == ("online", None)
    assert listed["env_b"] == ("degraded", "web process refused the connection")
    assert listed["env_c"][0] == "offline" and "no heartbeat" in listed["env_c"][1]

    # A remembered (or requested) degraded environment is refused, listing the others.
    chosen = requests.get(f"{proxy_url}/apps/shop/x", headers={"Accept": "application/json",
                                                              "Cookie": "appsup_env=env_b"}, timeout=10)
    assert chosen.status_code == 503 and chosen.json()["error"] == "degraded"
    assert len(chosen.json()["environments"]) == 3
    assert upstream_b.last() is None


def test_running_only_on_degraded_environments_is_a_503(proxy_url, r, upstream_a, upstream_b):
    _degrade(r, "env_a", upstream_a.url, problem="a")
    _degrade(r, "env_b", upstream_b.url, problem="b")
    publish(r, "shop", ["env_a", "env_b"], {"env_a": contract.RUNNING, "env_b": contract.RUNNING})
    response = requests.get(f"{proxy_url}/apps/shop/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 503 and response.json()["error"] == "degraded"
    assert "env_a: a" in response.json()["message"]


def test_liveness_comes_from_the_registry():
    from exchange.directory import AppView

    now = time.time()
    view = AppView("crm", {"environments": ["a", "b", "c", "d"]},
                   {"a": {"url": "http://a", "heartbeat_at": now},
                    "b": {"url": "http://b", "heartbeat_at": now, "web_ok": False, "problem": "down"},
                    "c": {"url": "http://c", "heartbeat_at": now, "stopped_at": now}},
                   {})
    states = {s.name: (s.status, s.reason) for s in targets.environment_states(view, now=now)}
    assert states == {"a": ("online", ""), "b": ("degraded", "down"), "c": ("offline", "its worker stopped"),
                      "d": ("offline", "its worker has never registered")}


def test_time_redis_could_not_be_read_is_not_counted_against_a_heartbeat(settings):
    import dataclasses

    from exchange.directory import AppView

    settings.APP_HEARTBEAT_TIMEOUT = 4
    now = time.time()
    # Redis hung from now-6 to now-1: env a's last heartbeat landed just before, env b's agent died 10 s before it.
    view = AppView("crm", {"environments": ["a", "b"]},
                   {"a": {"url": "http://a", "heartbeat_at": now - 6.5}, "b": {"url": "http://b", "heartbeat_at": now - 16}},
                   {}, read_at=now, unread=(now - 6, now - 1))
    states = {s.name: s.status for s in targets.environment_states(view, now=now)}
    assert states == {"a": "online", "b": "offline"}
    # Once its agent has had as long as the timeout since Redis answered again, a silent one is offline too.
    later = targets.environment_states(dataclasses.replace(view, read_at=now + 3), now=now + 3)
    assert [s.status for s in later] == ["offline", "offline"]


# --- Redis lost or unreachable -------------------------------------------------------------------------------------


def test_the_proxy_keeps_serving_through_a_flushall(proxy_url, crm, r, upstream_a):
    assert requests.get(f"{proxy_url}/apps/crm/", timeout=10).json()["server"] == "A"
    r.flushall()
    directory.directory.invalidate()
    for _ in range(3):
        response = requests.get(f"{proxy_url}/apps/crm/", timeout=10)
        assert response.status_code == 200 and response.json()["server"] == "A"


def test_the_proxy_keeps_serving_when_redis_becomes_unreachable(proxy_url, crm, settings, upstream_a):
    from exchange import redis_client

    assert requests.get(f"{proxy_url}/apps/crm/", timeout=10).json()["server"] == "A"
    settings.APP_SUPERVISOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.reset()
    directory.directory.invalidate()
    response = requests.get(f"{proxy_url}/apps/crm/", timeout=10)
    assert response.status_code == 200 and response.json()["server"] == "A"
    # Nothing known of an application: the supervisor says it cannot tell.
    assert requests.get(f"{proxy_url}/apps/erp/", timeout=10).status_code == 503


def test_a_stop_is_a_503_on_the_very_next_request(proxy_url, crm, r):
    from exchange import events

    directory.directory.ttl = 60.0
    try:
        assert events.wait_subscribed(directory.directory.listen())
        for _ in range(10):
            # r.ping(): a stop reaches the user through Redis again (the agent's result) in deployment; Redis may
            # answer PUBLISH itself before writing the event to subscribers (see tests/test_directory.py).
            status.write(r, "crm", "env_a", contract.STOPPED)
            r.ping()
            assert requests.get(f"{proxy_url}/apps/crm/", timeout=10).status_code == 503
            status.write(r, "crm", "env_a", contract.RUNNING)
            r.ping()
            assert requests.get(f"{proxy_url}/apps/crm/", timeout=10).status_code == 200
    finally:
        directory.directory.ttl = directory.TTL


# --- Where the proxy may connect (APP_PROXY_ALLOWED_NETWORKS) -----------------------------------------------------


class Listener:
    """A bare TCP listener that counts the connections made to it (an EchoUpstream counts only requests)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]

    def accepted(self):
        count = 0
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1

    def close(self):
        self.socket.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def connections(monkeypatch):
    """The addresses the process connects sockets to while the test runs (the proxy's uvicorn is in this process)."""
    seen = []
    real = socket.socket.connect_ex

    def connect_ex(sock, address):
        seen.append(address[0])
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    real_connect = socket.socket.connect

    def connect(sock, address):
        seen.append(address[0])
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.mark.parametrize("url", ["http://169.254.169.254", "http://169.254.169.254:80/latest/",
                                 "http://[fd00:ec2::254]:8080", "http://[::ffff:169.254.169.254]"])
def test_a_registration_at_a_metadata_address_is_refused_without_connecting(proxy_url, r, connections, url):
    register_environment("env_meta", url=url)
    publish(r, "crm", ["env_meta"], {"env_meta": contract.RUNNING})
    began = time.monotonic()
    response = requests.get(f"{proxy_url}/apps/crm/latest/meta-data/", headers={"Accept": "application/json"},
                            timeout=10)
    assert response.status_code == 502
    body = response.json()
    assert (body["error"], body["environment"]) == ("refused-target", "env_meta")
    assert "is not an allowed proxy target" in body["message"] and "cloud metadata address" in body["message"]
    assert time.monotonic() - began < 2
    assert not [a for a in connections if a.startswith(("169.254.", "fd00:ec2", "::ffff:169"))]
    page = requests.get(f"{proxy_url}/apps/crm/", timeout=10)
    assert page.status_code == 502 and "is not an allowed proxy target" in page.text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["address", "name"])
def test_a_registration_outside_the_allowed_networks_is_refused_without_connecting(proxy_url, r, settings, listener,
                                                                                    host):
    settings.APP_PROXY_ALLOWED_NETWORKS = (ipaddress.ip_network("10.0.0.0/8"),)
    register_environment("env_local", url=f"http://{host}:{listener.port}")
    publish(r, "crm", ["env_local"], {"env_local": contract.RUNNING})
    response = requests.post(f"{proxy_url}/apps/crm/x", data=b"payload", headers={"Accept": "application/json"},
                             timeout=10)
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "refused-target"
    assert "127.0.0.1 is outside APP_PROXY_ALLOWED_NETWORKS (10.0.0.0/8)" in body["message"]
    with pytest.raises(InvalidStatus):
        ws_connect(proxy_url.replace("http://", "ws://") + "/apps/crm/ws/", open_timeout=10)
    time.sleep(0.2)
    assert listener.accepted() == 0


def test_inside_the_allowed_networks_the_proxy_forwards(proxy_url, crm, settings, upstream_a, ws_upstream, r):
    settings.APP_PROXY_ALLOWED_NETWORKS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8"))
    assert requests.get(f"{proxy_url}/apps/crm/", timeout=10).json()["server"] == "A"
    register_environment("env_ws", url=ws_upstream.url.replace("127.0.0.1", "localhost"))
    publish(r, "chat", ["env_ws"], {"env_ws": contract.RUNNING})
    with ws_connect(proxy_url.replace("http://", "ws://") + "/apps/chat/ws/") as ws:
        assert json.loads(ws.recv(timeout=10))["path"] == "/apps/chat/ws/"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "http://", "gopher://127.0.0.1:6379/"])
def test_a_registration_that_is_not_an_http_url_with_a_host_is_never_a_target(proxy_url, r, url):
    register_environment("env_odd", url=url)
    publish(r, "crm", ["env_odd"], {"env_odd": contract.RUNNING})
    response = requests.get(f"{proxy_url}/apps/crm/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 502
    assert "has no registered address to forward to" in response.json()["message"]


# --- Request bodies (APP_PROXY_MAX_BODY) --------------------------------------------------------------------------


def test_a_body_announced_over_app_proxy_max_body_is_a_413_before_anything_is_forwarded(proxy_url, crm, settings,
                                                                                       upstream_a):
    settings.APP_PROXY_MAX_BODY = 1024 * 1024
    response = requests.post(f"{proxy_url}/apps/crm/upload/", data=os.urandom(1024 * 1024 + 1),
                             headers={"Accept": "application/json"}, timeout=30)
    assert response.status_code == 413
    body = response.json()
    assert (body["error"], body["application"], body["environment"]) == ("too-large", "crm", "env_a")
    assert "larger than the 1 MiB (1048576 bytes)" in body["message"] and "APP_PROXY_MAX_BODY" in body["message"]
    assert upstream_a.last() is None
    page = requests.put(f"{proxy_url}/apps/crm/upload/", data=b"x" * 2_000_000, timeout=30)
    assert page.status_code == 413 and "Request body too large" in page.text


def test_a_chunked_body_is_counted_while_it_streams_and_refused_past_the_limit(proxy_url, crm, settings, upstream_a):
    settings.APP_PROXY_MAX_BODY = 100_000
    pieces = [os.urandom(10_000) for _ in range(20)]
    response = requests.post(f"{proxy_url}/apps/crm/upload/", data=iter(pieces),
                             headers={"Accept": "application/json"}, timeout=30)
    assert response.status_code == 413 and response.json()["error"] == "too-large"
    forwarded = upstream_a.last()
    assert forwarded is None or forwarded["body_length"] < 200_000
    # Up to the limit, whole.
    response = requests.post(f"{proxy_url}/apps/crm/upload/", data=iter(pieces[:10]), timeout=30)
    assert response.json()["body_length"] == 100_000


def test_without_app_proxy_max_body_any_body_is_forwarded(proxy_url, crm, settings):
    settings.APP_PROXY_MAX_BODY = None
    data = os.urandom(3 * 1024 * 1024)
    echo = requests.post(f"{proxy_url}/apps/crm/upload/", data=data, timeout=30).json()
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()


# --- Forged entries in Redis (the threat model) --------------------------------------------------------------------


def test_a_registration_rewritten_without_the_shared_secret_diverts_no_request(proxy_url, r, crm, upstream_a, trap):
    import json as json_module

    assert requests.get(f"{proxy_url}/apps/crm/x", timeout=10).json()["server"] == "A"
    forged = {"name": "env_a", "url": trap.url, "proxy_url": trap.url, "version": "1.0.0", "heartbeat_at": time.time()}
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", json_module.dumps(forged))
    # A process that knew env_a keeps serving from its last verified registration: no request fails.
    for _ in range(10):
        directory.directory.invalidate()
        response = requests.get(f"{proxy_url}/apps/crm/x", timeout=10)
        assert response.status_code == 200 and response.json()["server"] == "A"
    for _ in range(10):
        directory.directory.clear()  # as a fresh process would: nothing known from before the forgery
        response = requests.get(f"{proxy_url}/apps/crm/x", timeout=10)
        assert response.status_code in (200, 503)  # no verified registration: offline, no target
    assert trap.requests == []


def test_a_status_or_configuration_forged_without_the_shared_secret_starts_nothing(proxy_url, r, upstream_a):
    import json as json_module

    register_environment("env_a", url=upstream_a.url)
    publish(r, "crm", ["env_a"], {"env_a": contract.STOPPED})
    r.hset(contract.STATUSES_KEY, "crm/env_a", json_module.dumps(
        {"app": "crm", "environment": "env_a", "state": "running", "at": time.time()}))
    r.hset(contract.APPS_KEY, "ghost", json_module.dumps({"name": "ghost", "environments": ["env_a"]}))
    r.hset(contract.STATUSES_KEY, "ghost/env_a", json_module.dumps(
        {"app": "ghost", "environment": "env_a", "state": "running", "at": time.time()}))
    directory.directory.clear()

    assert requests.get(f"{proxy_url}/apps/crm/x", timeout=10).status_code == 503
    assert requests.get(f"{proxy_url}/apps/ghost/x", timeout=10).status_code == 404
    assert upstream_a.requests == []
