"""Request bodies through the access proxy, as deployed: a supervisor web (uvicorn, APP_MODE=supervisor) in front of a
real worker (uvicorn web and agent) serving a running hosted application. The uploads are generated as they are
sent, so the test process never holds one either."""

import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import free_port
from .processes import base_env, http_ready, wait_for, web_process
from .test_worker_web_processes import started_application, worker  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
BLOCK = os.urandom(MIB)


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


class PeakRss:
    """The highest VmRSS of PID while the block runs (sampled every 20 ms)."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            self._done.wait(0.02)

    def __enter__(self):
        self.peak = status_kib(self.pid, "VmRSS")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))


def blocks(count):
    for _ in range(count):
        yield BLOCK


def supervisor_web(tmp_path, redis_url, **extra):
    port = free_port()
    env = base_env(tmp_path / f"supervisor-{port}", redis_url, APP_MODE="supervisor", **extra)
    process = web_process(env, port, tmp_path / f"supervisor-{port}.log")
    process.base = f"http://127.0.0.1:{port}"
    try:
        wait_for(http_ready(f"{process.base}/apps/"), what="the supervisor web")
    except AssertionError:
        process.stop()
        raise
    return process


@pytest.fixture
def supervisor(tmp_path, redis_url):
    process = supervisor_web(tmp_path, redis_url)
    yield process
    process.stop()


def post_with_length(base, path, size, headers=None):
    """POST SIZE bytes with a Content-Length, generated block by block; (status, body)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request("POST", path, body=blocks(size // MIB),
                           headers={"Content-Length": str(size), **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_100_mb_upload_streams_through_the_proxy_to_a_hosted_application(worker, supervisor):  # noqa: F811
    worker_base, worker_processes = worker
    started_application("crm")
    url = f"{supervisor.base}/apps/crm/admin/login/"
    wait_for(lambda: requests.get(url, timeout=10).status_code == 200, what="crm through the proxy")
    requests.post(url, data=b"warm-up", timeout=30)  # the first POST loads what every later one uses
    web_pid = worker_processes[0].pid
    before, web_before = status_kib(supervisor.pid, "VmRSS"), status_kib(web_pid, "VmRSS")

    # Chunked, generated as it is sent: the hosted application reads it all, then refuses it (no CSRF cookie).
    began = time.monotonic()
    with PeakRss(supervisor.pid) as supervisor_rss, PeakRss(web_pid) as web_rss:
        answer = requests.post(url, data=blocks(100), timeout=120)
    seconds = time.monotonic() - began
    after = status_kib(supervisor.pid, "VmRSS")
    assert answer.status_code == 403 and "CSRF" in answer.text, answer.text[:500]

    # With a Content-Length, too.
    with PeakRss(supervisor.pid) as length_rss:
        status, _ = post_with_length(supervisor.base, "/apps/crm/admin/login/", 100 * MIB)
    assert status == 403

    grown = (max(supervisor_rss.peak, length_rss.peak) - before) / 1024
    print(f"\n100 MiB POST through the proxy in {seconds:.1f} s: supervisor RSS {before / 1024:.0f} MiB before, "
          f"peak {supervisor_rss.peak / 1024:.0f} MiB (chunked) / {length_rss.peak / 1024:.0f} MiB (Content-Length), "
          f"{after / 1024:.0f} MiB after; worker web {web_before / 1024:.0f} MiB before, peak "
          f"{web_rss.peak / 1024:.0f} MiB")
    assert grown < 40, f"the supervisor grew by {grown:.0f} MiB during a 100 MiB upload"
    assert "Traceback" not in supervisor.output(), supervisor.output()


def test_a_body_past_app_proxy_max_body_is_a_413_naming_the_limit(tmp_path, redis_url, worker):  # noqa: F811
    started_application("crm")
    limited = supervisor_web(tmp_path, redis_url, APP_PROXY_MAX_BODY="1M")
    try:
        url = f"{limited.base}/apps/crm/admin/login/"
        wait_for(lambda: requests.get(url, timeout=10).status_code == 200, what="crm through the proxy")

        # Announced (Content-Length): refused before anything is forwarded.
        status, body = post_with_length(limited.base, "/apps/crm/admin/login/", 2 * MIB,
                                        headers={"Accept": "application/json"})
        assert status == 413
        refusal = json.loads(body)
        assert refusal["error"] == "too-large" and "1 MiB" in refusal["message"]

        # Chunked: counted while it streams.
        page = requests.post(url, data=blocks(2), timeout=60)
        assert page.status_code == 413 and "APP_PROXY_MAX_BODY" in page.text

        # Within the limit, it goes through (to the application's CSRF check).
        assert requests.post(url, data=blocks(1), timeout=60).status_code == 403
        assert "Traceback" not in limited.output(), limited.output()
    finally:
        limited.stop()
