"""The bounds every web process puts on a request's head (supervisor_project.edge), as an attacker meets them: a real
supervisor web started the documented way (supervisor_project.web.web_args), raw sockets and nothing else."""

import socket
import threading
import time

import pytest

from supervisor_project.config import DEFAULT_MAX_HEADER_BYTES
from supervisor_project.web import web_args

from .test_proxy_body_processes import PeakRss, supervisor_web

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

KIB = 1024
MIB = 1024 * KIB
HEAD_TIMEOUT = 3  # APP_HEAD_TIMEOUT of the process under test, so that waiting for it keeps the tests short
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
def web(tmp_path, redis_url):
    process = supervisor_web(tmp_path, redis_url, APP_HEAD_TIMEOUT=HEAD_TIMEOUT)
    process.port = int(process.base.rsplit(":", 1)[1])
    yield process
    process.stop()


def connect(web, timeout=30):
    return socket.create_connection(("127.0.0.1", web.port), timeout=timeout)


def read_until_closed(sock):
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_response(sock):
    """One response with a Content-Length, read off a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_every_web_process_is_started_with_the_bounded_protocol():
    args = web_args(8000)
    assert args[args.index("--http") + 1] == "supervisor_project.edge:BoundedHttpToolsProtocol"


def test_a_head_over_the_limit_is_answered_431_and_closed(web):
    with connect(web) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (64 * KIB) + b"\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert f"over {DEFAULT_MAX_HEADER_BYTES} bytes".encode() in answer


def test_a_large_head_under_the_limit_is_served(web):
    with connect(web) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: c=" + b"a" * (DEFAULT_MAX_HEADER_BYTES - 200)
                     + b"\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def _send_huge_head(port, size, chunk, outcome):
    """Send a head with a SIZE-byte header in CHUNKs until the server closes; OUTCOME gets the bytes it took."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            deadline = time.monotonic() + 20
            while sent < size and time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # closed by the server: what a bounded server does
            pass
    outcome.append(sent)


def test_eight_64_mib_heads_cost_the_server_less_than_100_mb(web):
    # Served once first, so that what the first request loads is not counted.
    with connect(web) as sock:
        sock.sendall(HEALTH)
        read_response(sock)
    chunk = b"a" * MIB
    outcome = []
    senders = [threading.Thread(target=_send_huge_head, args=(web.port, 64 * MIB, chunk, outcome)) for _ in range(8)]
    with PeakRss(web.pid) as rss:
        before = rss.peak
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(60)
    assert len(outcome) == 8
    grown_mb = (rss.peak - before) / 1024
    assert grown_mb < 100, f"the web process grew by {grown_mb:.0f} MB for 8 heads of 64 MiB (bytes each sent: {outcome})"
    assert max(outcome) < 64 * MIB, "a 64 MiB header was read to its end"
    with connect(web) as sock:  # and it still serves
        sock.sendall(HEALTH)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_a_half_sent_head_is_answered_408_and_closed_within_the_timeout(web):
    with connect(web) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = read_until_closed(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert HEAD_TIMEOUT - 0.5 < took < HEAD_TIMEOUT + 2


def test_a_head_sent_a_byte_at_a_time_is_closed_within_the_timeout(web):
    with connect(web) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > HEAD_TIMEOUT + 3:
                break
        if not closed:
            sock.settimeout(max(0.5, HEAD_TIMEOUT + 3 - (time.monotonic() - started)))
            closed = read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
        took = time.monotonic() - started
    assert closed and took < HEAD_TIMEOUT + 2


def test_a_connection_that_sends_nothing_is_closed_within_the_timeout(web):
    with connect(web) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""  # closed without an answer: nothing was asked
        assert time.monotonic() - started < HEAD_TIMEOUT + 2


def test_a_keep_alive_connection_serves_requests_after_idling_longer_than_the_head_timeout(web):
    # The time between requests is the keep-alive timeout's (uvicorn's 5 s), not the head's.
    with connect(web) as sock:
        for pause in (0, HEAD_TIMEOUT + 1, 0):
            time.sleep(pause)
            sock.sendall(HEALTH)
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_a_half_sent_head_after_a_served_request_is_closed_within_the_timeout(web):
    with connect(web) as sock:
        sock.sendall(HEALTH)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = read_until_closed(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert took < HEAD_TIMEOUT + 2
