"""Figure 5, worker memory: VmRSS of env_c's web process after it serves 1, 10 and 100 running applications."""

import statistics

import requests

ENV = "env_c"


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def measure(cluster, quick):
    checkpoints = (1, 5, 20) if quick else (1, 10, 100)
    rounds = 3
    pid = cluster.state["processes"][f"{ENV}.web"]
    base = cluster.env_url(ENV)
    rss = {}
    started = 0
    for target in checkpoints:
        while started < target:
            name = f"bmem{started}"
            cluster.create_app(name, [ENV])
            cluster.command(name, "start")
            r = requests.get(f"{base}/apps/{name}/admin/login/", timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"{name} login page: {r.status_code}")
            started += 1
        # Every app served again, a few rounds, so the measure is of a steady state rather than of the last first
        # request; the median of the samples taken after each round.
        samples = []
        for _ in range(rounds):
            for i in range(started):
                requests.get(f"{base}/apps/bmem{i}/admin/login/", timeout=30)
            samples.append(rss_mb(pid))
        rss[target] = statistics.median(samples)
    lo, hi = checkpoints[0], checkpoints[-1]
    return {"rss": rss, "rounds": rounds, "per_app": (rss[hi] - rss[lo]) / (hi - lo),
            "per_app_first": (rss[checkpoints[1]] - rss[lo]) / (checkpoints[1] - lo), "checkpoints": checkpoints}
