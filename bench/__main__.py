"""``python -m bench [--quick]``: start a cluster, measure every figure, stop the cluster, write docs/benchmarks.md."""

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import traceback

from . import commands, data, memory, processes, proxy, scale, share, start
from .cluster import ROOT, Cluster

OUTPUT = ROOT / "docs" / "benchmarks.md"
# What the figures are and how to run them: prose kept in a file of its own, so that a run rewrites only its results.
ABOUT = ROOT / "bench" / "about.md"


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def verdict(ok):
    return "pass" if ok else "**FAIL**"


def rows_proxy(pages):
    login, static = pages["login page"], pages["static file"]
    how = (f"{login['tool']}, 16 connections, the admin login page; median over {login['rounds']} rounds of "
           f"alternating {login['seconds']:g} s runs of every server in turn, each one process")

    def rps(figure, name):
        return f"{proxy.median(figure, name, 'rps'):.0f}"

    def pair(figure, a, b):
        return f"{proxy.ratio(figure, a, b):.2f} ({rps(figure, a)} vs {rps(figure, b)} req/s)"

    worker_vs_bare = proxy.ratio(login, proxy.WORKER, proxy.BARE_GUNICORN)
    rows = [
        ("hosted login page, straight from a worker ÷ bare Django under gunicorn (1 process, 8 threads)",
         f"{how}; the worker serves the hosted application as deployed (uvicorn, Django on 8 threads)", "≥ 0.9",
         pair(login, proxy.WORKER, proxy.BARE_GUNICORN)
         + (f"; {proxy.errors(login)} answers not 2xx/3xx" if proxy.errors(login) else ""),
         verdict(worker_vs_bare >= 0.9 and not proxy.errors(login))),
        ("hosting overhead: worker ÷ bare Django under the worker's own server", f"{how}; bare Django under uvicorn "
         "with Django's WSGI handler on 8 threads, as supervisor_project.asgi serves", "(reported)",
         pair(login, proxy.WORKER, proxy.BARE_UVICORN), "–"),
        ("server: bare Django under uvicorn with Django's ASGI handler ÷ under gunicorn", f"{how}; why Django's "
         "pages go to its WSGI handler in a thread pool", "(reported)",
         pair(login, proxy.BARE_ASGI, proxy.BARE_GUNICORN), "–"),
    ]
    for label, figure in (("login page", login), ("static file", static)):
        through = proxy.ratio(figure, proxy.SUPERVISOR, proxy.WORKER)
        path = figure["urls"][proxy.SUPERVISOR].split("/apps/", 1)[1]
        target = 0.9  # close to the worker's own rate, small answers included
        med = lambda name, key: proxy.median(figure, name, key)  # noqa: E731
        bad = proxy.errors(figure)
        rows += [
            (f"proxy cost, {label} (rps ratio)", f"{figure['tool']}, 16 connections, `/apps/{path}` via the "
             f"supervisor vs the worker's port; median of {figure['rounds']} alternating runs of "
             f"{figure['seconds']:g} s", f"≥ {target}", pair(figure, proxy.SUPERVISOR, proxy.WORKER)
             + (f"; {bad} answers not 2xx/3xx" if bad else ""),
             verdict(through >= target and not bad)),  # a 503 is fast, and would pass for speed
            (f"proxy latency added, {label}", "same runs: p50 / p99 through the supervisor minus direct", "(reported)",
             f"p50 {med(proxy.SUPERVISOR, 'p50_ms') - med(proxy.WORKER, 'p50_ms'):+.1f} ms "
             f"({med(proxy.SUPERVISOR, 'p50_ms'):.1f} vs {med(proxy.WORKER, 'p50_ms'):.1f}); "
             f"p99 {med(proxy.SUPERVISOR, 'p99_ms') - med(proxy.WORKER, 'p99_ms'):+.1f} ms "
             f"({med(proxy.SUPERVISOR, 'p99_ms'):.1f} vs {med(proxy.WORKER, 'p99_ms'):.1f})"
             + (f"; {bad} errors" if bad else ""), "–"),
        ]
        if proxy.NGINX in figure["runs"]:
            rows.append((f"external proxy, {label} (rps ratio)", f"same runs: `/apps/{path}` via nginx configured by "
                         "`manage.py exportproxy` vs the worker's port", "(reported)",
                         pair(figure, proxy.NGINX, proxy.WORKER), "–"))
    return rows


def rows_commands(c):
    how = (f"`ping` via workers.channel.enqueue + apps.lifecycle._wait to env_a's agent vs plain RQ "
           f"(SimpleWorker, builtins.len, JSON) on the same Redis; {c['rounds']} alternating rounds × "
           f"{c['per_round']} jobs, medians of per-round p50/p99")
    return [("command round trip", how, "p50 ≤ 1.5× plain RQ",
             f"{c['ratio']:.2f}× (p50 {c['p50_cmd']:.1f} vs {c['p50_rq']:.1f} ms; "
             f"p99 {c['p99_cmd']:.1f} vs {c['p99_rq']:.1f} ms)", verdict(c["ratio"] <= 1.5))]


def rows_start(s):
    fresh = ", ".join(f"{x:.2f}" for x in s["fresh_all"])
    restart = ", ".join(f"{x:.2f}" for x in s["restart_all"])
    return [
        ("fresh start, 2 environments", f"`POST /api/apps/<new>/start` on env_a then env_b (SQLite), "
         f"median of {s['rounds']} (alternating with restarts)", "< 3 s",
         f"{s['fresh']:.2f} s ({fresh})", verdict(s["fresh"] < 3)),
        ("restart, 2 environments", "`POST /api/apps/<migrated>/restart` right after its fresh start",
         "< 1 s", f"{s['restart']:.2f} s ({restart})", verdict(s["restart"] < 1)),
    ]


def rows_scale(s, quick):
    rows = []
    for dialect in scale.DIALECTS:
        if dialect in s:
            rows += rows_scale_on(dialect, s[dialect], quick)
    return rows


def rows_scale_on(dialect, s, quick):
    big, small, http = s["big"], s["small"], s["http"]
    size = f"{big['envs']:,} envs / {big['apps']:,} apps, {dialect}" + (" (reduced in --quick)" if quick else "")
    versus = f"{big['envs']:,}/{big['apps']:,} vs {small['envs']:,}/{small['apps']:,} rows"
    served = "HTTP (requests, keep-alive) against a supervisor web process (uvicorn)"
    rows = []
    for label, ms in http["ms"].items():
        who = "superuser logged in via the admin login form" if "admin" in label or "Open" in label else \
            "Bearer token"
        rows.append((f"scale ({dialect}): {label}", f"{served}, {who}, {size}; warm-up, then median of "
                     f"{http['repeats']} round robin", "< 300 ms", f"{ms:.0f} ms", verdict(ms < 300)))
        qb, qs = big["queries"][label], small["queries"][label]
        rows.append((f"scale ({dialect}): {label}, queries", f"in-process test Client + CaptureQueriesContext, "
                     f"{versus}", "equal", f"{qb} vs {qs}", verdict(qb == qs)))
    rows.append((f"heartbeats ({dialect}): the controller's mirror", f"in-process, one `Controller.mirror()` "
                 f"(registrations, reported states, environment statuses, events) after all {big['envs']:,} "
                 f"environments heartbeat (registry.announce, one Redis pipeline), {big['apps']:,} reported states "
                 f"in Redis; {size}; median of {big['sync_repeats']}", "< 300 ms",
                 f"{big['sync_ms']:.0f} ms (at {small['envs']:,} envs: {small['sync_ms']:.0f} ms); the mirror after "
                 f"it, reading back its {big['envs']:,} events: {big['echo_ms']:.0f} ms",
                 verdict(big["sync_ms"] < 300)))
    rows.append((f"heartbeats ({dialect}): the controller's mirror, queries",
                 f"same calls, CaptureQueriesContext, {versus}", "equal",
                 f"{big['sync_queries']} vs {small['sync_queries']}",
                 verdict(big["sync_queries"] == small["sync_queries"])))
    for kind, when in (("heartbeats", "after all environments heartbeat"), ("after", "the pass after that one"),
                       ("idle", "with nothing new")):
        ms, small_ms = big["pass_ms"][kind], small["pass_ms"][kind]
        qb, qs = big["pass_queries"][kind], small["pass_queries"][kind]
        rows.append((f"controller ({dialect}): one pass, {when}", "in-process `Controller.run_pass()` (lease, "
                     "cache check, mirror, alerts, reconcile candidates, health); "
                     f"{size}; median of {big['sync_repeats']}; queries {versus}", "< 300 ms, queries equal",
                     f"{ms:.0f} ms (at {small['envs']:,} envs: {small_ms:.0f} ms); {qb} vs {qs} queries",
                     verdict(ms < 300 and qb == qs)))
    rows.append((f"scale ({dialect}): seeding", "bulk INSERTs and one Redis pipeline of reported states, not "
                 "through the API", "(reported)", f"{big['seed_seconds']:.0f} s", "–"))
    return rows


def rows_memory(m, quick):
    rss = ", ".join(f"{n} apps {mb:.1f} MB" for n, mb in m["rss"].items())
    lo, mid, hi = m["checkpoints"]
    how = (f"VmRSS of env_c's web (uvicorn) after starting N apps via the API and fetching each login page; "
           f"slope {lo}→{hi} apps" + (" (reduced from 1/10/100 in --quick)" if quick else "")
           + f"; median of {m['rounds']} samples, each after a round of requests to every app")
    return [("worker memory per app", how, "< 2 MB",
             f"{m['per_app']:.2f} MB/app ({lo}→{mid}: {m['per_app_first']:.2f}); {rss}", verdict(m["per_app"] < 2))]


def row_line(row):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"


def write_partial(rows, info, quick, notes, seconds, only):
    """Put ROWS (the figures ONLY, measured again) into the last run's table: rows of the same figure replaced, new
    ones added, the others and the last run's description kept; a note says which rows are from when."""
    lines = OUTPUT.read_text().rstrip("\n").splitlines()
    last_run = lines.index("## Last run")
    first = next(i for i in range(last_run, len(lines)) if lines[i].startswith("| figure |")) + 2  # its rows
    end = first
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    new = {row_line(row)[2:].split(" | ", 1)[0]: row_line(row) for row in rows}
    table = [new.pop(line[2:].split(" | ", 1)[0], line) for line in lines[first:end]] + list(new.values())
    rest = lines[end:]
    note = (f"- `bin/bench --only {','.join(sorted(only))}`{' --quick' if quick else ''} on {info['date']} "
            f"({seconds:.0f} s) measured again: " + "; ".join(str(row[0]) for row in rows))
    added = [note] + [f"- {n}" for n in notes]
    if "## Notes" in rest:
        at = rest.index("## Notes") + 2
        rest = rest[:at] + added + rest[at:]
    else:
        rest = rest + ["", "## Notes", ""] + added
    head = lines[:first]
    head = ["# Benchmarks", "", ABOUT.read_text().rstrip("\n"), ""] + head[head.index("## Last run"):]
    OUTPUT.write_text("\n".join(head + table + rest) + "\n")


def write(rows, info, quick, notes, seconds, postgres=False):
    lines = [
        "# Benchmarks",
        "",
        ABOUT.read_text().rstrip("\n"),
        "",
        "## Last run",
        "",
        "Generated by `bin/bench" + (" --quick" if quick else "") + (" --postgres" if postgres else "")
        + "` (`python -m bench`); do not edit by hand.",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; {info['date']}",
        f"- mode: {'quick' if quick else 'full'}; took {seconds:.0f} s; cluster: `python -m cluster` "
        "(embedded Redis, supervisor and 3 worker environments, SQLite), driven over HTTP and the JSON API"
        + ("; the scale figures also on PostgreSQL (a database created for the run)" if postgres else ""),
        "- ratios are medians of alternating A/B runs in the same run; absolute numbers drift on shared machines",
        "",
        "| figure | how | target | measured | pass/fail |",
        "|---|---|---|---|---|",
    ]
    lines += [row_line(row) for row in rows]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bin/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs, reduced sizes (< 2 minutes)")
    parser.add_argument("--only",
                        help="comma-separated figures to run: proxy,processes,share,commands,start,data,scale,"
                             "memory; their rows replace or add to the last run's in docs/benchmarks.md")
    parser.add_argument("--postgres", action="store_true",
                        help="also run the scale and data figures on PostgreSQL (127.0.0.1:5432, user postgres; "
                             f"the bench creates and drops databases named {scale.POSTGRES_DATABASE}_<size>, "
                             f"{data.POSTGRES_PREFIX}_<role> and app_{data.APP})")
    args = parser.parse_args(argv)
    every = {"proxy", "processes", "share", "commands", "start", "data", "scale", "memory"}
    only = set(args.only.split(",")) if args.only else every
    began = time.monotonic()
    rows, notes = [], []
    if args.quick:
        notes.append("--quick: shorter load runs, fewer rounds; scale at 1,000 envs / 10,000 apps and 100 / 1,000 "
                     "(instead of 10,000 / 100,000 and 1,000 / 10,000), memory at 1/5/20 apps instead of 1/10/100")
    with tempfile.TemporaryDirectory(prefix="appsup-bench-") as storage:
        cluster = Cluster(storage)
        try:
            say(f"starting a cluster on base port {cluster.base_port} under {storage}")
            cluster.start()
            say(f"cluster ready after {time.monotonic() - began:.0f} s")
            figures = [
                ("proxy", lambda: rows_proxy(proxy.measure(cluster, args.quick))),
                ("processes", lambda: processes.rows(processes.measure(cluster, args.quick))),
                ("share", lambda: share.rows(share.measure(cluster, args.quick))),
                ("commands", lambda: rows_commands(commands.measure(cluster, args.quick))),
                ("start", lambda: rows_start(start.measure(cluster, args.quick))),
                ("data", lambda: data.rows(data.measure(cluster, args.quick, args.postgres), args.quick)),
                ("scale", lambda: rows_scale(scale.measure(cluster, args.quick, args.postgres), args.quick)),
                ("memory", lambda: rows_memory(memory.measure(cluster, args.quick), args.quick)),
            ]
            for name, run in figures:
                if name not in only:
                    continue
                t = time.monotonic()
                say(f"{name}…")
                try:
                    new = run()
                except Exception as exc:
                    traceback.print_exc()
                    new = [(name, "see notes", "–", f"not measured: {exc}"[:200], "**ERROR**")]
                    notes.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
                rows += new
                for row in new:
                    say(f"  {row[0]}: {row[3]} [{row[4]}]")
                say(f"  ({time.monotonic() - t:.0f} s)")
        finally:
            left = cluster.stop()
            if left:
                notes.append(f"processes still alive after stopping the cluster: {left}")
                say(f"WARNING: processes still alive: {left}")
            else:
                say("cluster stopped, no process left")
    seconds = time.monotonic() - began
    if args.only and OUTPUT.exists():
        write_partial(rows, machine(), args.quick, notes, seconds, only)
    else:
        write(rows, machine(), args.quick, notes, seconds, args.postgres)
    say(f"wrote {OUTPUT.relative_to(ROOT)} in {seconds:.0f} s")
    return 1 if any("ERROR" in r[4] for r in rows) else 0


def say(text):
    print(f"bench: {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
