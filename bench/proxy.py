"""Figure 1, proxy cost: a hosted app's pages through the supervisor vs straight from the worker.

Two pages: the admin login page (a rendered Django view, what users mostly load) and a static file the worker serves
from memory (whitenoise), where the worker's own work is small and the proxy's share of the cost is largest.
"""

import statistics

import requests

from . import load

APP = "bproxy"
PAGES = {"login page": "admin/login/", "static file": "static/admin/css/base.css"}


def measure(cluster, quick):
    cluster.create_app(APP, ["env_a"])
    cluster.command(APP, "start")
    rounds, seconds = (3, 2.0) if quick else (5, 5.0)
    return {label: _compare(cluster, f"/apps/{APP}/{path}", rounds, seconds) for label, path in PAGES.items()}


def _compare(cluster, path, rounds, seconds):
    through = cluster.url + path
    direct = cluster.env_url("env_a") + path
    for url in (through, direct):
        r = requests.get(url, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code}")
    load.run(direct, seconds=1.0)  # warm up both
    load.run(through, seconds=1.0)
    runs = []
    for _ in range(rounds):  # A B A B
        a = load.run(through, seconds=seconds)
        b = load.run(direct, seconds=seconds)
        runs.append((a, b))
    ratio = statistics.median(a["rps"] / b["rps"] for a, b in runs)
    med = lambda side, key: statistics.median(r[side][key] for r in runs)  # noqa: E731
    return {
        "path": path, "ratio": ratio,
        "rps_proxy": med(0, "rps"), "rps_direct": med(1, "rps"),
        "p50_proxy": med(0, "p50_ms"), "p50_direct": med(1, "p50_ms"),
        "p99_proxy": med(0, "p99_ms"), "p99_direct": med(1, "p99_ms"),
        "errors": sum(a["errors"] + b["errors"] for a, b in runs),
        "rounds": rounds, "seconds": seconds, "tool": load.tool(),
    }
