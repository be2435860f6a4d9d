"""workers.gate: each application's fair share of a worker web process, at the ASGI level, before a request takes
one of Django's threads. The inner application stands in for Django on its threads: it blocks until told."""

import asyncio
import json

import pytest

from exchange.directory import AppView
from workers.gate import BUSY_RETRY_AFTER, Gate


def scope(path, accept=b"text/html", method="GET"):
    return {"type": "http", "method": method, "path": path, "headers": [(b"accept", accept)]}


class Blocking:
    """An inner application whose requests under a path containing "block" wait until released."""

    def __init__(self):
        self.running = 0
        self.peak = {}
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send):
        app = scope["path"].split("/")[2] if scope["path"].startswith("/apps/") else ""
        self.running += 1
        self.peak[app] = max(self.peak.get(app, 0), self.running)
        try:
            if "block" in scope["path"]:
                await self.release.wait()
        finally:
            self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app, s):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    await app(s, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def gate(inner, views=lambda name: (False, None), **kwargs):
    options = {"concurrency": 2, "queue": 1, "wait": 0.3, "timeout": 0, "threads": 4, **kwargs}
    return Gate(inner, views=views, **options)


def view(name, **config):
    return AppView(name, {"name": name, "display_name": name.upper(), "environments": ["env_a"], **config})


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_application_beyond_its_share_and_queue_is_told_it_is_busy_and_its_neighbour_is_not():
    async def scenario():
        inner = Blocking()
        g = gate(inner)
        slow = [asyncio.create_task(call(g, scope("/apps/slow/block/"))) for _ in range(3)]
        await settle()
        refused = await call(g, scope("/apps/slow/block/"))
        neighbour = await call(g, scope("/apps/fast/"))
        counters = g.counters()
        inner.release.set()
        return refused, neighbour, await asyncio.gather(*slow), counters, inner.peak

    refused, neighbour, slow, counters, peak = asyncio.run(scenario())
    status, headers, body = refused
    assert status == 503
    assert headers[b"retry-after"] == str(BUSY_RETRY_AFTER).encode()
    assert b"slow is busy" in body and b"not affected" in body
    assert neighbour[0] == 200
    assert [answer[0] for answer in slow] == [200, 200, 200]  # two ran, the third waited its turn
    assert counters == {"slow": {"in_flight": 2, "queued": 1, "refused": 1}}
    assert peak["slow"] == 2


def test_a_request_that_waits_longer_than_the_queue_allows_is_refused_and_leaves_the_queue():
    async def scenario():
        inner = Blocking()
        g = gate(inner, wait=0.1)
        running = [asyncio.create_task(call(g, scope("/apps/slow/block/"))) for _ in range(2)]
        await settle()
        waited = await call(g, scope("/apps/slow/block/"))
        counters = g.counters()
        inner.release.set()
        await asyncio.gather(*running)
        return waited, counters, g.counters()

    waited, during, after = asyncio.run(scenario())
    assert waited[0] == 503
    assert during["slow"] == {"in_flight": 2, "queued": 0, "refused": 1}
    assert after == {"slow": {"in_flight": 0, "queued": 0, "refused": 1}}


def test_the_busy_page_is_json_for_a_client_that_asks_for_json():
    async def scenario():
        inner = Blocking()
        g = gate(inner, queue=0, concurrency=1)
        running = asyncio.create_task(call(g, scope("/apps/crm/block/")))
        await settle()
        answer = await call(g, scope("/apps/crm/x/", accept=b"application/json"))
        inner.release.set()
        await running
        return answer

    status, headers, body = asyncio.run(scenario())
    assert status == 503
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["code"] == "busy" and json.loads(body)["app"] == "crm"


def test_requests_outside_the_applications_are_never_limited():
    async def scenario():
        inner = Blocking()
        g = gate(inner, concurrency=1, queue=0)
        running = [asyncio.create_task(call(g, scope(path))) for path in ("/readyz/block", "/static/block.css")] * 1
        running += [asyncio.create_task(call(g, scope("/static/block.js")))]
        await settle()
        peak = inner.running
        inner.release.set()
        return peak, await asyncio.gather(*running)

    peak, answers = asyncio.run(scenario())
    assert peak == 3
    assert [answer[0] for answer in answers] == [200, 200, 200]


def test_an_application_the_directory_knows_does_not_exist_is_not_counted():
    async def scenario():
        g = gate(Blocking(), views=lambda name: (True, None))
        answer = await call(g, scope("/apps/nobody/"))
        return answer, g.loads

    answer, loads = asyncio.run(scenario())
    assert answer[0] == 200 and loads == {}


def test_an_application_configured_with_its_own_concurrency_gets_it_but_never_more_than_the_threads():
    views = {"wide": view("wide", concurrency=3), "huge": view("huge", concurrency=50)}

    async def scenario():
        inner = Blocking()
        g = gate(inner, views=lambda name: (True, views[name]), queue=0)
        running = [asyncio.create_task(call(g, scope(f"/apps/{name}/block/"))) for name in ("wide",) * 4]
        await settle()
        wide = g.counters()["wide"]
        refused_wide = await call(g, scope("/apps/wide/"))
        inner.release.set()
        await asyncio.gather(*running)
        inner.release.clear()
        running = [asyncio.create_task(call(g, scope("/apps/huge/block/"))) for _ in range(6)]
        await settle()
        huge = g.counters()["huge"]
        inner.release.set()
        await asyncio.gather(*running)
        return wide, refused_wide, huge

    wide, refused_wide, huge = asyncio.run(scenario())
    assert wide["in_flight"] == 3 and wide["refused"] == 1
    assert refused_wide[0] == 503
    assert huge["in_flight"] == 4  # the threads


def test_a_request_past_its_timeout_is_answered_504_and_keeps_its_slot_until_it_finishes():
    async def scenario():
        inner = Blocking()
        g = gate(inner, concurrency=1, queue=0, timeout=1)
        late = await call(g, scope("/apps/crm/block/"))
        still = g.counters()
        refused = await call(g, scope("/apps/crm/"))
        inner.release.set()
        await settle()
        after = await call(g, scope("/apps/crm/"))
        return late, still, refused, after

    late, still, refused, after = asyncio.run(scenario())
    assert late[0] == 504 and b"did not answer within 1 seconds" in late[2]
    assert still["crm"]["in_flight"] == 1  # Django's thread is still at work: it counts
    assert refused[0] == 503
    assert after[0] == 200


def test_an_application_timeout_of_its_own_overrides_the_default():
    async def scenario():
        inner = Blocking()
        g = gate(inner, views=lambda name: (True, view(name, request_timeout=1)), timeout=0)
        answer = await call(g, scope("/apps/crm/block/"))
        inner.release.set()
        await settle()
        return answer

    assert asyncio.run(scenario())[0] == 504


def test_an_answer_already_started_is_not_cut_by_the_timeout():
    class Streaming:
        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.sleep(1.3)
            await send({"type": "http.response.body", "body": b"done"})

    status, _, body = asyncio.run(call(gate(Streaming(), timeout=1), scope("/apps/crm/")))
    assert status == 200 and body == b"done"


def test_a_client_gone_while_waiting_gives_its_turn_to_the_next_one():
    async def scenario():
        inner = Blocking()
        g = gate(inner, concurrency=1, queue=2, wait=5)
        running = asyncio.create_task(call(g, scope("/apps/crm/block/")))
        await settle()
        gone = asyncio.create_task(call(g, scope("/apps/crm/")))
        waiting = asyncio.create_task(call(g, scope("/apps/crm/")))
        await settle()
        gone.cancel()
        inner.release.set()
        answers = await asyncio.gather(running, waiting)
        return answers, g.counters()

    answers, counters = asyncio.run(scenario())
    assert [a[0] for a in answers] == [200, 200]
    assert counters == {}


@pytest.mark.parametrize("config", [{"concurrency": 0}, {"concurrency": "9"}, {"concurrency": True},
                                    {"request_timeout": -1}, {"request_timeout": None}])
def test_a_malformed_override_falls_back_to_the_default(config):
    assert gate(None, concurrency=2, timeout=60).limits(config) == (2, 60)
