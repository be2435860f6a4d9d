"""bench/load.py: parsing wrk's report, and the Python load generator used where wrk is not installed."""

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import load

WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:34000/apps/bproxy/admin/login/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   131.84ms   38.12ms   1.02s    81.25%
    Req/Sec    60.48     14.91   101.00     69.70%
  Latency Distribution
     50%  128.31ms
     75%  146.02ms
     90%  171.77ms
     99%    1.02s
  603 requests in 5.03s, 2.21MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:    119.88
Transfer/sec:    449.91KB
"""

WRK_REPORT_CLEAN = """\
Running 1s test @ http://127.0.0.1:8000/
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.50us  120.33us   2.10ms   90.00%
    Req/Sec     4.80k   310.12     5.20k    75.00%
  Latency Distribution
     50%  398.00us
     75%  450.12us
     90%  520.40us
     99%  900.00us
  9612 requests in 1.00s, 1.39MB read
Requests/sec:   9598.41
Transfer/sec:      1.39MB
"""


def test_parse_wrk_counts_http_and_socket_errors():
    result = load.parse_wrk(WRK_REPORT)
    assert result["rps"] == pytest.approx(119.88)
    assert result["p50_ms"] == pytest.approx(128.31)
    assert result["p99_ms"] == pytest.approx(1020.0)  # seconds, not the Thread Stats line
    assert result["errors"] == 7 + 3 + 2


def test_parse_wrk_microseconds_and_no_errors():
    result = load.parse_wrk(WRK_REPORT_CLEAN)
    assert result == {"rps": pytest.approx(9598.41), "p50_ms": pytest.approx(0.398), "p99_ms": pytest.approx(0.9),
                      "errors": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generators use it

    def do_GET(self):
        body = b"broken" if self.path == "/fail" else b"ok"
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def without_wrk(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(load.shutil, "which", lambda name: None if name == "wrk" else real(name))


def test_python_generator_measures_a_real_server(server, without_wrk):
    assert load.tool() == "python threads (requests)"
    result = load.run(server + "/ok", connections=4, seconds=0.5)
    assert result["rps"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["errors"] == 0


def test_python_generator_counts_server_errors(server, without_wrk):
    result = load.run(server + "/fail", connections=4, seconds=0.5)
    assert result["rps"] > 0
    assert result["errors"] > 0


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_counts_server_errors(server):
    result = load.run(server + "/fail", connections=4, seconds=1)
    assert result["rps"] > 0
    assert result["errors"] > 0
