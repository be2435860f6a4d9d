"""Figure: processes per web (APP_WEB_PROCESSES). A hosted application's login page straight from a worker web of one
process and from one of two, side by side, in alternating load runs (1, 2, 1, 2, …).

Both webs are extra web processes of environment env_a, started the documented way (``python -m
supervisor_project.web``) with the variables of env_a's own web (read from its process), APP_WEB_PROCESSES aside:
they serve the same running application from the same database. ``python -m bench.processes [--quick]`` measures
this figure alone on a cluster of one environment and prints it.
"""

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from supervisor_project.web import web_command

from . import proxy
from .cluster import ROOT, Cluster, free_port, wait_answering

APP = "bprocs"
COUNTS = (1, 2)


def name(processes):
    return f"worker web, {processes} process{'es' if processes > 1 else ''}"


def measure(cluster, quick):
    cluster.create_app(APP, ["env_a"])
    cluster.command(APP, "start")
    rounds, seconds = (3, 3.0) if quick else (6, 10.0)
    with worker_webs(cluster, COUNTS) as bases:
        figure = proxy.alternate({name(n): f"{base}/apps/{APP}/admin/login/" for n, base in bases.items()},
                                 rounds, seconds)
    figure["cores"] = os.cpu_count()
    return figure


def rows(figure):
    one, two = name(1), name(2)
    spread = {n: sorted(round(run["rps"]) for run in figure["runs"][n]) for n in (one, two)}
    ratio = proxy.ratio(figure, two, one)
    bad = proxy.errors(figure)  # answers that were not 2xx/3xx (a 503 is fast, and would pass for speed)
    return [(
        "processes per web: 2 ÷ 1 (APP_WEB_PROCESSES), hosted login page straight from a worker",
        f"{figure['tool']}, 16 connections, `/apps/{APP}/admin/login/` from two extra worker webs of env_a, one of 1 "
        f"process and one of 2; median over {figure['rounds']} rounds of alternating {figure['seconds']:g} s runs; "
        f"{figure['cores']} cores",
        "≥ 1.7 on 2 cores",
        f"{ratio:.2f} ({proxy.median(figure, two, 'rps'):.0f} vs {proxy.median(figure, one, 'rps'):.0f} req/s; "
        f"runs {spread[two]} vs {spread[one]})" + (f"; {bad} errors" if bad else ""),
        ("pass" if ratio >= 1.7 and not bad else "**FAIL**") if figure["cores"] >= 2 else "–",
    )]


def environ_of(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@contextlib.contextmanager
def worker_webs(cluster, counts):
    """{processes: base URL}: a web of env_a per count, each with that many processes. COUNTS may map each count to
    more variables for that web."""

    def extra(count):
        return {"APP_WEB_PROCESSES": str(count), **(counts.get(count, {}) if isinstance(counts, dict) else {})}

    env = environ_of(cluster.state["processes"]["env_a.web"])
    processes = []
    try:
        bases = {}
        for count in counts:
            port = free_port()
            log = open(cluster.storage / f"web-{count}-processes.log", "w")
            process = subprocess.Popen(web_command(port), cwd=ROOT, env={**env, **extra(count)},
                                       stdout=log, stderr=subprocess.STDOUT)
            processes.append(process)
            bases[count] = f"http://127.0.0.1:{port}"
            wait_answering(f"{bases[count]}/healthz", process)
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def measure_alone(measure, argv=None):
    """MEASURE(cluster, quick)'s figure, on a cluster of one environment of its own (``--quick`` in ARGV)."""
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="appsup-bench-") as storage:
        cluster = Cluster(storage, envs=1)
        try:
            cluster.start()
            return measure(cluster, quick)
        finally:
            cluster.stop()


def main(argv=None):
    figure = measure_alone(measure, argv)
    for n, runs in figure["runs"].items():
        print(f"{n}: " + ", ".join(f"{run['rps']:.0f}" for run in runs) + " req/s")
    for row in rows(figure):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
