"""A real HTTP receiver of alert webhooks for the tests: an http.server in a thread of the test process that records
every POST (headers and body) and answers with a chosen status, after a chosen delay."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .processes import wait_for


class Receiver:
    def __init__(self, port=0, status=200, delay=0.0):
        self.status = status
        self.delay = delay
        self.posts = []  # (headers, body bytes), in the order received
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.posts.append((dict(self.headers), body))
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def alerts(self):
        with self._lock:
            return [json.loads(body) for _, body in self.posts]

    def clear(self):
        with self._lock:
            self.posts.clear()

    def wait_for(self, predicate, timeout=10, what="alerts"):
        """Wait until PREDICATE(alerts received so far) holds; returns them."""
        return wait_for(lambda: predicate(self.alerts()) and self.alerts(), timeout=timeout, what=what)
