"""proxy.spooled: under daphne, a request body is read from daphne's spool file as the application asks for it,
instead of being copied whole into the application's input queue. Here against a stand-in for daphne's request
object, shaped as daphne 4.2 makes it (daphne.server.Server.create_application, WebRequest.process)."""

import asyncio
import functools
import io
import tempfile

from proxy import spooled


class StandInRequest:
    """What daphne's WebRequest offers: the spooled ``content``, and ``application_queue`` (None until the
    application has been made)."""

    def __init__(self, content):
        self.content = content
        self.application_queue = None
        self.sent = []


async def handle_reply(protocol, message):
    """daphne's send is ``partial(server.handle_reply, protocol)``."""
    protocol.sent.append(message)


def daphne_like(body, spool=None):
    """(request, queue, receive, send) as daphne hands them to an application: body already spooled, position 0."""
    content = spool if spool is not None else io.BytesIO()
    content.write(body)
    content.seek(0)
    request = StandInRequest(content)
    queue = asyncio.Queue()
    return request, queue, queue.get, functools.partial(handle_reply, request)


def queue_body_as_daphne_does(request, queue, buffer_size=8192):
    """WebRequest.process, after the application is made: the whole file into the queue."""
    request.application_queue = queue
    while True:
        chunk = request.content.read(buffer_size)
        more_body = not (len(chunk) < buffer_size)
        queue.put_nowait({"type": "http.request", "body": chunk, "more_body": more_body})
        if not more_body:
            break


def read_all(receive):
    async def run():
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message["more_body"]:
                return messages

    return asyncio.run(run())


def test_the_body_is_read_from_the_spool_chunk_by_chunk_and_never_queued():
    body = bytes(range(256)) * 1024 * 1  # 256 KiB
    with tempfile.TemporaryFile() as spool:
        async def run():
            request, queue, receive, send = daphne_like(body, spool)
            paced = spooled.paced(receive, send)
            assert paced is not receive
            queue_body_as_daphne_does(request, queue)
            assert queue.qsize() == 0  # daphne's copy stayed out of memory
            messages = []
            while not messages or messages[-1]["more_body"]:
                messages.append(await paced())
            return messages, queue

        messages, queue = asyncio.run(run())
    assert b"".join(m["body"] for m in messages) == body
    assert max(len(m["body"]) for m in messages) == spooled.CHUNK
    assert [m["more_body"] for m in messages] == [True] * (len(messages) - 1) + [False]


def test_after_the_body_other_messages_come_through_the_queue():
    async def run():
        request, queue, receive, send = daphne_like(b"hello")
        paced = spooled.paced(receive, send)
        queue_body_as_daphne_does(request, queue)
        first = await paced()
        queue.put_nowait({"type": "http.disconnect"})  # daphne.http_protocol.WebRequest.send_disconnect
        return first, await paced()

    first, then = asyncio.run(run())
    assert first == {"type": "http.request", "body": b"hello", "more_body": False}
    assert then == {"type": "http.disconnect"}


def test_an_empty_body_is_one_empty_message():
    async def run():
        request, queue, receive, send = daphne_like(b"")
        paced = spooled.paced(receive, send)
        queue_body_as_daphne_does(request, queue)
        return await paced()

    assert asyncio.run(run()) == {"type": "http.request", "body": b"", "more_body": False}


def test_a_lost_connection_mid_body_is_a_disconnect():
    async def run():
        request, queue, receive, send = daphne_like(b"x" * (3 * spooled.CHUNK))
        paced = spooled.paced(receive, send)
        queue_body_as_daphne_does(request, queue)
        first = await paced()
        request.content.close()  # what Twisted does when the connection is lost
        return first, await paced()

    first, then = asyncio.run(run())
    assert first["more_body"] and then == {"type": "http.disconnect"}


def test_anything_but_daphne_before_it_queues_the_body_keeps_its_own_receive():
    async def run():
        request, queue, receive, send = daphne_like(b"body")
        request.application_queue = queue  # too late: daphne has queued the body already
        assert spooled.paced(receive, send) is receive

        async def other_receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        assert spooled.paced(other_receive, send) is other_receive
        assert spooled.paced(receive, handle_reply) is receive

    asyncio.run(run())


def test_the_proxy_application_is_an_asgi3_callable_that_paces_daphne_bodies():
    from asgiref.compatibility import guarantee_single_callable

    from proxy import asgi as proxy_asgi

    async def django(scope, receive, send):
        message = await receive()
        await send({"type": "done", "body": message["body"]})

    app = proxy_asgi.build(django)
    assert guarantee_single_callable(app) is app

    async def run():
        request, queue, receive, send = daphne_like(b"payload")
        coroutine = app(scope={"type": "http", "path": "/admin/"}, receive=receive, send=send)
        queue_body_as_daphne_does(request, queue)
        assert queue.qsize() == 0
        await coroutine
        return request.sent

    assert asyncio.run(run()) == [{"type": "done", "body": b"payload"}]
