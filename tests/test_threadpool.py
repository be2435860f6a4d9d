"""supervisor_project.threadpool: Django's WSGI handler served as ASGI on a pool of threads."""

import asyncio
import threading

import pytest

from supervisor_project.threadpool import BUFFER, DjangoOnThreads

SCOPE = {"type": "http", "method": "POST", "path": "/apps/crm/upload", "root_path": "", "query_string": b"a=1",
         "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("10.0.0.7", 5555),
         "headers": [(b"host", b"crm.example"), (b"content-type", b"text/plain")]}


def serve(wsgi_application, body_parts=(b"",), on_send=None):
    """The messages the adapter sends for one request whose body arrives as BODY_PARTS."""
    sent = []
    parts = list(body_parts)

    async def receive():
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def send(message):
        sent.append(message)
        if on_send is not None:
            on_send(message)

    asyncio.run(DjangoOnThreads(wsgi_application, threads=2)(SCOPE, receive, send))
    return sent


def test_a_page_is_sent_whole_with_its_status_and_headers():
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Seen", environ["REMOTE_ADDR"])])
        return [b"one ", b"two"]

    start, body = serve(app)
    assert start == {"type": "http.response.start", "status": 201,
                     "headers": [(b"content-type", b"text/plain"), (b"x-seen", b"10.0.0.7")]}
    assert body == {"type": "http.response.body", "body": b"one two", "more_body": False}


def test_the_request_body_is_read_as_the_application_asks_for_it():
    seen = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        while chunk := stream.read(3):
            seen.append(chunk)
        start_response("200 OK", [])
        return [b"%d" % sum(map(len, seen))]

    sent = serve(app, body_parts=(b"abcd", b"efgh", b"ij"))
    assert b"".join(seen) == b"abcdefghij"
    assert sent[-1]["body"] == b"10"


def test_a_long_answer_streams_and_the_thread_waits_for_each_chunk_to_be_sent():
    chunk = b"x" * (BUFFER // 2)
    produced, sent_when_produced = [], []
    sent_count = [0]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(8):
            produced.append(threading.current_thread().name)
            sent_when_produced.append(sent_count[0])
            yield chunk

    def count(message):
        sent_count[0] += 1

    sent = serve(app, on_send=count)
    assert sent[0]["type"] == "http.response.start"
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == chunk * 8
    assert bodies[-1]["more_body"] is False and all(m["more_body"] for m in bodies[:-1])
    # Three chunks pass BUFFER: the status line and those chunks go out (2 messages); from then on every chunk was
    # sent before the next one was produced, so memory holds one chunk, not the download.
    assert sent_when_produced == [0, 0, 0, 2, 3, 4, 5, 6]
    assert all(name.startswith("django") for name in produced)


def test_the_iterables_close_is_called_even_when_it_fails():
    closed = []

    class Failing:
        def __iter__(self):
            yield b"partial"
            raise OSError("disk gone")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Failing()

    with pytest.raises(OSError, match="disk gone"):  # the server answers 500 or cuts the connection
        serve(app)
    assert closed == [True]


def test_an_application_that_never_starts_a_response_is_an_error():
    with pytest.raises(RuntimeError, match="start_response"):
        serve(lambda environ, start_response: [])


def test_the_environ_is_the_wsgi_one_django_expects():
    captured = {}

    def app(environ, start_response):
        captured.update(environ)
        start_response("200 OK", [])
        return []

    serve(app)
    assert (captured["REQUEST_METHOD"], captured["PATH_INFO"], captured["QUERY_STRING"]) == (
        "POST", "/apps/crm/upload", "a=1")
    assert (captured["HTTP_HOST"], captured["CONTENT_TYPE"], captured["SERVER_PORT"]) == ("crm.example", "text/plain",
                                                                                          "80")
