"""Figure 2, command round trip: a no-op ``ping`` through the project's command channel (workers.channel.enqueue,
then apps.lifecycle._wait, as the supervisor does) vs plain RQ (a SimpleWorker on the same Redis running
builtins.len, JSON serializer). ``measure`` runs in the orchestrator; ``main`` is the in-process Django side."""

import json
import statistics
import subprocess
import sys
import time

from .cluster import ROOT, run_json

APP = "bproxy"  # created and placed on env_a by the proxy figure
PLAIN_QUEUE = "bench-plain-rq"

PLAIN_WORKER = """
import sys
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
conn = Redis.from_url(sys.argv[1])
q = Queue(sys.argv[2], connection=conn, serializer=JSONSerializer)
SimpleWorker([q], connection=conn, serializer=JSONSerializer).work(with_scheduler=False)
"""


def measure(cluster, quick):
    env = cluster.django_environ()
    worker = subprocess.Popen([sys.executable, "-c", PLAIN_WORKER, cluster.state["redis_url"], PLAIN_QUEUE],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rounds, per_round = (4, 25) if quick else (8, 50)
        return run_json("bench.commands", [str(rounds), str(per_round)], env, timeout=600)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main():
    import django

    django.setup()
    from rq.queue import Queue
    from rq.serializers import JSONSerializer

    from apps import lifecycle
    from exchange import channel, contract
    from exchange.redis_client import command_redis

    rounds, per_round = int(sys.argv[1]), int(sys.argv[2])
    plain = Queue(PLAIN_QUEUE, connection=command_redis(), serializer=JSONSerializer)

    def ping():
        began = time.perf_counter()
        job_id = channel.enqueue("env_a", contract.PING, APP, {})
        result = lifecycle._wait(job_id, "env_a", time.monotonic() + 30, time.monotonic, command=contract.PING, app=APP)
        if not isinstance(result, dict) or result.get("state") != "pong":
            raise RuntimeError(f"ping failed: {result}")
        return (time.perf_counter() - began) * 1000

    def plain_rq():
        began = time.perf_counter()
        job = plain.enqueue("builtins.len", [1, 2, 3], result_ttl=600)
        result = job.latest_result(timeout=30)
        if result is None or result.return_value != 3:
            raise RuntimeError(f"plain RQ job failed: {result}")
        return (time.perf_counter() - began) * 1000

    for _ in range(5):  # warm up both
        ping(), plain_rq()
    runs = []
    for _ in range(rounds):  # A B A B
        a = [ping() for _ in range(per_round)]
        b = [plain_rq() for _ in range(per_round)]
        runs.append({"a50": statistics.median(a), "a99": _pct(a, 0.99),
                     "b50": statistics.median(b), "b99": _pct(b, 0.99)})
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    print(json.dumps({
        "ratio": statistics.median(r["a50"] / r["b50"] for r in runs),
        "p50_cmd": med("a50"), "p99_cmd": med("a99"), "p50_rq": med("b50"), "p99_rq": med("b99"),
        "rounds": rounds, "per_round": per_round,
    }))


if __name__ == "__main__":
    main()
