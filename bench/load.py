"""HTTP load: wrk when installed, else a threaded Python generator (requests, one session per connection)."""

import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

import requests

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def tool():
    return "wrk" if shutil.which("wrk") else "python threads (requests)"


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    """{"rps", "p50_ms", "p99_ms", "errors"} from the stdout of ``wrk --latency``; HTTP errors and socket errors both
    count as errors."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", out)
    if m:
        errs += sum(int(x) for x in re.findall(r"\d+", m.group(0)))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errs}


def run(url, connections=16, seconds=3.0):
    """{"rps", "p50_ms", "p99_ms", "errors"} for one run against URL."""
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency", url],
                             capture_output=True, text=True, check=True).stdout
        return parse_wrk(out)
    return _python_run(url, connections, seconds)


def _python_run(url, connections, seconds):
    latencies, errors, lock = [], [0], threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker():
        session = requests.Session()
        mine, bad = [], 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                ok = session.get(url, timeout=30).status_code < 400
            except requests.RequestException:
                ok = False
            mine.append((time.perf_counter() - began) * 1000)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], "errors": errors[0]}


@dataclass
class UnderFault:
    requests: int
    failures: list  # (status code or exception name, seconds since the start), for every answer but a 200
    slowest: float  # seconds
    fault: object  # what the fault returned


def under_fault(url, fault, seconds=8.0, fault_at=2.0, threads=4, settle=2.0):
    """GET URL from THREADS clients (a session each) while FAULT is called once, FAULT_AT seconds in; the load goes
    on until SECONDS from the start and at least SETTLE seconds after FAULT returned. For the fault drills and tests:
    what users saw while Redis was flushed, restarted or hung."""
    began = time.monotonic()
    done, lock = threading.Event(), threading.Lock()
    seen = UnderFault(0, [], 0.0, None)

    def client():
        http = requests.Session()
        while not done.is_set():
            sent = time.monotonic()
            try:
                outcome = http.get(url, timeout=10).status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                seen.slowest = max(seen.slowest, time.monotonic() - sent)
                seen.requests += 1
                if outcome != 200:
                    seen.failures.append((outcome, round(time.monotonic() - began, 3)))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for c in clients:
        c.start()
    time.sleep(fault_at)
    seen.fault = fault()
    time.sleep(max(settle, seconds - (time.monotonic() - began)))
    done.set()
    for c in clients:
        c.join(20)
    return seen
