#!/usr/bin/env python3
"""Enqueue benchmark driver (run by scripts/bench-enqueue; standard library only).

On a fresh PostgreSQL database, with the queue paused (nothing drains while enqueueing), per
round: N jobs through `chom jobs enqueue --batch` (newline-delimited JSON on stdin, the whole
CLI process timed), M jobs through the single-job RPC `jobs.enqueue` (8 connections, as
scripts/bench-queue does), and the raw-SQL ceiling (one INSERT ... SELECT of N rows from psql,
no application in between). `jobs` is emptied between runs. Prints one JSON line; exit 1 when
the batch rate is under 20,000 jobs/s.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

import importlib.util  # noqa: E402

# scripts/bench/queue.py, loaded under another name (it would shadow the standard `queue`).
_spec = importlib.util.spec_from_file_location(
    "chom_bench_queue", os.path.join(os.path.dirname(os.path.abspath(__file__)), "queue.py"))
_q = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_q)
Node, call, enqueue_many, psql, rpc_conn = _q.Node, _q.call, _q.enqueue_many, _q.psql, _q.rpc_conn

TARGET = 20_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--single", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="chom-bench-enqueue-")
    db = f"chom_bench_enqueue_{os.getpid()}"
    psql(a.pg_url, f"CREATE DATABASE {db}")
    url = a.pg_url.rsplit("/", 1)[0] + "/" + db
    node = None
    try:
        node = Node(a.bin, work, url, 4, "bench-enqueue")
        c = rpc_conn(node.sock)
        call(c, "queue.pause", {"queue": "default"})
        c[0].close()
        lines = os.path.join(work, "jobs.ndjson")
        with open(lines, "w") as f:
            for i in range(a.n):
                f.write(json.dumps({"kind": "noop", "payload": {"i": i}}) + "\n")
        empty = lambda: psql(url, "TRUNCATE jobs")
        batch, single, ceiling = [], [], []
        for r in range(a.rounds):
            empty()
            with open(lines) as stdin:
                start = time.perf_counter()
                out = subprocess.run([a.bin, "--config", os.path.join(work, "chom.toml"), "jobs", "enqueue", "--batch"],
                                     stdin=stdin, capture_output=True, text=True)
                elapsed = time.perf_counter() - start
            if out.returncode != 0 or len(out.stdout.splitlines()) != a.n:
                sys.exit(f"batch enqueue failed: {out.stderr[-2000:]}")
            batch.append(a.n / elapsed)
            empty()
            single.append(enqueue_many(node.sock, a.single))
            empty()
            start = time.perf_counter()
            psql(url, f"INSERT INTO jobs (queue, kind, payload) SELECT 'default', 'noop', "
                      f"json_build_object('i', g)::text FROM generate_series(1, {a.n}) g")
            ceiling.append(a.n / (time.perf_counter() - start))
            print(f"round {r + 1}: batch {batch[-1]:.0f}/s, single {single[-1]:.0f}/s, "
                  f"sql {ceiling[-1]:.0f}/s", file=sys.stderr, flush=True)
        b, s, q = (statistics.median(x) for x in (batch, single, ceiling))
        doc = {"bench": "enqueue", "backend": "postgres", "n": a.n, "rounds": a.rounds,
               "batch_jobs_per_s": round(b), "single_rpc_jobs_per_s": round(s),
               "sql_insert_jobs_per_s": round(q), "batch_vs_single": round(b / s, 1),
               "batch_vs_sql": round(b / q, 3), "target_jobs_per_s": TARGET,
               "meets_target": b >= TARGET}
        print(json.dumps(doc), flush=True)
        return 0 if doc["meets_target"] else 1
    finally:
        if node:
            node.stop()
        psql(a.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
