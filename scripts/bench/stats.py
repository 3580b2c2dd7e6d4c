#!/usr/bin/env python3
"""Flat-statistics benchmark driver (run by scripts/bench-stats; standard library only).

Times what operators and the node itself run against the queue while finished jobs are
retained for `queue.retention`: `queue.stats`, `health` (every check run now, the queue check
included: what /health caches) and `status` through the node's admin RPC, and `jobs.kill_stuck`
(the reaper's stuck-job killer, also an operator command). Each is timed --runs times (medians)
on a fresh database whose jobs table is empty, then again after --rows completed jobs (one in
ten failed) are inserted by one `INSERT ... SELECT generate_series` and the table vacuumed and
analyzed (as autovacuum would), all within the retention window so the node's pruner keeps them.
A few unfinished jobs are there in both phases (pending, delayed, reserved by a node that went
away), so the counts read are not all zero. PostgreSQL always; SQLite too with --sqlite.
One JSON line per backend, the PostgreSQL line last:
{"bench":"stats","backend":"postgres","empty_ms":..,"retained_1m_ms":..,"ratio":..,...}
where empty_ms / retained_1m_ms / ratio are queue.stats's; exit 1 when the ratio of queue.stats,
health or status exceeds 2.
"""
import argparse, json, os, shutil, sqlite3, statistics, sys, tempfile, time

import importlib.util  # noqa: E402

# scripts/bench/queue.py, loaded under another name (it would shadow the standard `queue`).
_spec = importlib.util.spec_from_file_location(
    "chom_bench_queue", os.path.join(os.path.dirname(os.path.abspath(__file__)), "queue.py"))
_q = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_q)
Node, call, psql, rpc_conn = _q.Node, _q.call, _q.psql, _q.rpc_conn

TARGET = 2.0
CALLS = [
    ("stats", "queue.stats", {}),
    ("health", "health", {}),
    ("status", "status", {}),
    ("kill_stuck", "jobs.kill_stuck", {"older_than": "1h"}),
]

# The retained rows: finished over the last 23 hours (inside the default 24h retention).
PG_RETAINED = """
INSERT INTO jobs (queue, kind, payload, state, attempts, reserved_at, reserved_by, finished_at,
                  created_at, available_at)
SELECT 'default', 'noop', '{{}}', CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, 1,
       t, 'bench-old', t, t, t
FROM generate_series(1, {n}) AS g, LATERAL (SELECT now() - g * (interval '23 hours' / {n})) AS x(t)
"""
SQLITE_RETAINED = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n})
INSERT INTO jobs (queue, kind, payload, state, attempts, reserved_at, reserved_by, finished_at,
                  created_at, available_at)
SELECT 'default', 'noop', '{{}}', CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'completed' END, 1,
       t, 'bench-old', t, t, t
FROM (SELECT n, CAST(strftime('%s', 'now') AS INTEGER) * 1000 - n * (82800000 / {n}) AS t FROM g)
"""
# Another program's plain enqueues.
PG_UNFINISHED = "INSERT INTO jobs (queue, kind, payload) SELECT 'default', 'noop', '{}' FROM generate_series(1, 20)"


def time_calls(sock, runs):
    """Median milliseconds per call name, over `runs` timed rounds after two warm-up rounds."""
    c = rpc_conn(sock)
    samples = {name: [] for name, _, _ in CALLS}
    for r in range(runs + 2):
        for name, method, params in CALLS:
            start = time.perf_counter()
            call(c, method, params, r)
            if r >= 2:
                samples[name].append((time.perf_counter() - start) * 1000)
    c[0].close()
    return {name: statistics.median(v) for name, v in samples.items()}


def counts(sock):
    c = rpc_conn(sock)
    qs = call(c, "queue.stats", {})["queues"]
    c[0].close()
    return {k: sum(q[k] for q in qs) for k in ("ready", "delayed", "reserved", "completed", "failed")}


def report(backend, empty, full, rows, runs, seen):
    out = {"bench": "stats", "backend": backend,
           "empty_ms": round(empty["stats"], 3), "retained_1m_ms": round(full["stats"], 3),
           "ratio": round(full["stats"] / empty["stats"], 2)}
    for name in ("health", "status", "kill_stuck"):
        out[f"{name}_empty_ms"] = round(empty[name], 3)
        out[f"{name}_retained_1m_ms"] = round(full[name], 3)
        out[f"{name}_ratio"] = round(full[name] / empty[name], 2)
    out.update({"retained_rows": rows, "runs": runs, "counts": seen})
    return out


def measure(backend, sock, a, load):
    """Time the calls on the table as it is, run `load` (which retains the finished rows),
    time them again."""
    empty = time_calls(sock, a.runs)
    start = time.perf_counter()
    load()
    load_s = time.perf_counter() - start
    full = time_calls(sock, a.runs)
    seen = counts(sock)
    print(json.dumps({"backend": backend, "load_s": round(load_s, 1), "empty_ms": empty,
                      "retained_ms": full}), file=sys.stderr, flush=True)
    return report(backend, empty, full, a.rows, a.runs, seen)


def unfinished_sqlite(path):
    """20 pending jobs (as another program enqueues), 3 of them delayed an hour."""
    con = sqlite3.connect(path, timeout=30)
    con.execute("INSERT INTO jobs (queue, kind, payload) VALUES " + ",".join(["('default', 'noop', '{}')"] * 20))
    con.execute("UPDATE jobs SET available_at = available_at + 3600000 WHERE id IN "
                "(SELECT id FROM jobs WHERE state = 'pending' ORDER BY id LIMIT 3)")
    con.commit()
    con.close()


def run_pg(a, work):
    db = f"chom_bench_stats_{os.getpid()}"
    psql(a.pg_url, f"CREATE DATABASE {db}")
    url = a.pg_url.rsplit("/", 1)[0] + "/" + db
    node = None
    try:
        node = Node(a.bin, os.path.join(work, "pg"), url, 4, "bench-stats")
        c = rpc_conn(node.sock)
        call(c, "queue.pause", {"queue": "default"})
        c[0].close()
        psql(url, PG_UNFINISHED)
        psql(url, "UPDATE jobs SET available_at = now() + interval '1 hour' "
                  "WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT 3)")
        # Three reserved by a node that went away (rescue has something to look at, later).
        psql(url, "UPDATE jobs SET state = 'reserved', reserved_at = now(), reserved_by = 'bench-gone' "
                  "WHERE id IN (SELECT id FROM jobs ORDER BY id DESC LIMIT 3)")
        psql(url, "VACUUM ANALYZE jobs")

        def load():
            psql(url, PG_RETAINED.format(n=a.rows))
            psql(url, "VACUUM ANALYZE jobs")
        return measure("postgres", node.sock, a, load)
    finally:
        if node:
            node.stop()
        psql(a.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def run_sqlite(a, work):
    path = os.path.join(work, "sqlite", "chom.db")
    node = Node(a.bin, os.path.join(work, "sqlite"), f"sqlite://{path}", 4, "bench-stats")
    try:
        c = rpc_conn(node.sock)
        call(c, "queue.pause", {"queue": "default"})
        c[0].close()
        unfinished_sqlite(path)
        return measure("sqlite", node.sock, a, lambda: load_sqlite(path, a.rows))
    finally:
        node.stop()


def load_sqlite(path, rows):
    con = sqlite3.connect(path, timeout=30)
    try:
        con.execute(SQLITE_RETAINED.format(n=rows))
        con.commit()
        # What the node's own completions would have counted (migration 0011 counts what
        # was there when it ran); the table exists only with flat statistics.
        if con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'job_counts'").fetchone()[0]:
            con.execute("INSERT INTO job_counts (queue, completed, failed) "
                        "SELECT queue, count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'failed') "
                        "FROM jobs WHERE reserved_by = 'bench-old' GROUP BY queue "
                        "ON CONFLICT (queue) DO UPDATE SET completed = completed + excluded.completed, "
                        "failed = failed + excluded.failed")
            con.commit()
        con.execute("ANALYZE")
        # The load leaves a WAL of the whole table; the node's own writes are checkpointed
        # every 1,000 pages, so fold it in as they would have been.
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--sqlite", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="chom-bench-stats-")
    try:
        lines = []
        if a.sqlite:
            lines.append(run_sqlite(a, work))
            print(json.dumps(lines[-1]), flush=True)
        lines.append(run_pg(a, work))
        print(json.dumps(lines[-1]), flush=True)
        worst = max(max(l["ratio"], l["health_ratio"], l["status_ratio"]) for l in lines)
        sys.exit(0 if worst <= TARGET else 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
