"""Figure: each application's fair share of a worker web. A fast application's login page, alone and while 16
clients keep a slow application on the same worker web busy (a view that waits 2 s), in alternating runs.

The worker web is an extra web process of environment env_a, started the documented way with env_a's own variables
(read from its process) and a hosted URLconf that adds the slow view (bench.slow_urls); the gate's settings are the
defaults (APP_APP_CONCURRENCY half of APP_WEB_THREADS). ``python -m bench.share [--quick]`` measures this figure
alone on a cluster of one environment and prints it.
"""

import statistics
import sys
import threading
import time

import requests

from . import load
from .processes import measure_alone, worker_webs

SLOW, FAST = "bslow", "bfast"
CLIENTS = 16


def measure(cluster, quick):
    for app in (SLOW, FAST):
        cluster.create_app(app, ["env_a"])
        cluster.command(app, "start")
    rounds, seconds = (2, 3.0) if quick else (4, 5.0)
    with worker_webs(cluster, {1: {"APP_HOSTED_URLCONF": "bench.slow_urls"}}) as bases:
        base = bases[1]
        fast = f"{base}/apps/{FAST}/admin/login/"
        runs = {"alone": [], "busy": []}
        slow_answers = {}
        for _ in range(rounds):
            runs["alone"].append(load.run(fast, connections=4, seconds=seconds))
            with _kept_busy(f"{base}/apps/{SLOW}/slow/?s=2", slow_answers):
                runs["busy"].append(load.run(fast, connections=4, seconds=seconds))
    return {"runs": runs, "slow_answers": slow_answers, "tool": load.tool(), "rounds": rounds, "seconds": seconds}


class _kept_busy:
    """CLIENTS threads requesting URL over and over for the block; counts their answers by status in ANSWERS."""

    def __init__(self, url, answers):
        self.url, self.answers, self.stop = url, answers, threading.Event()

    def _client(self):
        session = requests.Session()
        while not self.stop.is_set():
            try:
                status = session.get(self.url, timeout=30).status_code
            except requests.RequestException:
                status = "error"
            self.answers[status] = self.answers.get(status, 0) + 1

    def __enter__(self):
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        time.sleep(1.0)  # every slot of the slow application taken, the rest waiting or refused
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def rows(figure):
    runs = figure["runs"]
    p99 = {kind: statistics.median(run["p99_ms"] for run in runs[kind]) for kind in runs}
    errors = sum(run["errors"] for run in runs["busy"])
    ratio = p99["busy"] / p99["alone"]
    slow = ", ".join(f"{status}: {count}" for status, count in sorted(figure["slow_answers"].items(), key=str))
    return [(
        f"fair share: a fast application beside a slow one kept busy by {CLIENTS} clients, same worker web",
        f"{figure['tool']}, 4 connections, the fast application's login page, alone and while {CLIENTS} clients "
        f"request the slow one's 2 s view; {figure['rounds']} alternating rounds of {figure['seconds']:g} s, "
        "medians of per-run p99; default APP_APP_CONCURRENCY (half of APP_WEB_THREADS)",
        "100 % answered 2xx/3xx; p99 ≤ 2× alone",
        f"p99 {p99['busy']:.1f} ms busy vs {p99['alone']:.1f} ms alone ({ratio:.2f}×); {errors} fast answers not "
        f"2xx/3xx; the slow one's answers {{{slow}}}",
        "pass" if ratio <= 2 and errors == 0 else "**FAIL**",
    )]


def main(argv=None):
    for row in rows(measure_alone(measure, argv)):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
