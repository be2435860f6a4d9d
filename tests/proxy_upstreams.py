"""Stand-in workers for the access proxy's tests: a real HTTP/1.1 server and a real WebSocket server, each in a
thread of the test process, that report what they received.

EchoUpstream answers every path under /apps/<app>/ with a JSON echo of the request (method, target, headers,
body length and hash), except a few paths that do one thing each:

    …/big?size=N        N bytes (Content-Length), written in 64 KiB chunks; ``sent`` counts what went out
    …/redirect?to=URL   302 with that Location
    …/cookies?set=C     a Set-Cookie header for each C (default: two cookies of crm's, Path=/apps/crm/)
    …/hop               response with hop-by-hop headers that must not reach the client
    …/slow?delay=S      the echo, after S seconds
    …/gzip              a gzip-encoded body (Content-Encoding: gzip)
    …/truncated?size=N  announces N bytes, sends half, closes the connection
    …/status?code=N     the echo with status N
"""

import asyncio
import gzip
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the proxy gave up on us (a timeout test)
            self.close_connection = True

    def _handle(self):
        server = self.server
        body = self._body()
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        record = {
            "server": server.name,
            "client_port": self.client_address[1],
            "method": self.command,
            "target": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_start": body[:200].decode("latin-1"),
        }
        with server.lock:
            server.requests.append(record)
        action = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if action == "big":
            return self._big(int(query["size"][0]))
        if action == "redirect":
            return self._send(302, headers=[("Location", query["to"][0])])
        if action == "cookies":
            cookies = query.get("set", ["sessionid_crm=s3cr3t; Path=/apps/crm/; HttpOnly", "theme=dark; Path=/apps/crm/"])
            return self._send(200, b"cookies", headers=[
                *(("Set-Cookie", cookie) for cookie in cookies), ("Content-Type", "text/plain")])
        if action == "hop":
            return self._send(200, b"hop", headers=[
                ("Connection", "X-Hop-Out"), ("X-Hop-Out", "1"), ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"), ("X-Kept", "yes"), ("Content-Type", "text/plain")])
        if action == "slow":
            time.sleep(float(query["delay"][0]))
        if action == "gzip":
            return self._send(200, gzip.compress(b"compressed " * 100), headers=[
                ("Content-Encoding", "gzip"), ("Content-Type", "text/plain")])
        if action == "truncated":
            size = int(query["size"][0])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(b"y" * (size // 2))
            self.wfile.flush()
            self.close_connection = True
            return
        code = int(query["code"][0]) if action == "status" else 200
        self._send(code, json.dumps(record).encode(), headers=[("Content-Type", "application/json")])

    def _big(self, size):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"x" * CHUNK
        left = size
        try:
            while left > 0:
                piece = block[: min(CHUNK, left)]
                self.wfile.write(piece)
                left -= len(piece)
                with self.server.lock:
                    self.server.sent += len(piece)
        except OSError:
            with self.server.lock:
                self.server.aborted += 1
            self.close_connection = True
        else:
            with self.server.lock:
                self.server.completed += 1

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class EchoUpstream(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a client (the proxy) going away mid-answer is part of the tests

    def __init__(self, name):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.lock = threading.Lock()
        self.requests = []
        self.sent = 0
        self.aborted = 0
        self.completed = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.sent = self.aborted = self.completed = 0

    def last(self):
        with self.lock:
            return self.requests[-1] if self.requests else None

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def header(record, name):
    """A header's values in an echo record, in order."""
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


class WebSocketEcho:
    """A websockets server: first sends a JSON description of the handshake request, then echoes every message."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = None
        self.closed_codes = []

    async def _handler(self, connection):
        request = connection.request
        await connection.send(json.dumps({
            "path": request.path,
            "headers": [[k, v] for k, v in request.headers.raw_items()],
            "subprotocol": connection.subprotocol,
        }))
        try:
            async for message in connection:
                if message == "close-4001":
                    await connection.close(4001, "asked to")
                    return
                await connection.send(message)
        finally:
            self.closed_codes.append(connection.close_code)

    async def _start(self):
        from websockets.asyncio.server import serve

        def select_subprotocol(connection, offered):
            return next((p for p in ("chat", "other") if p in offered), None)

        self.server = await serve(self._handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
