#!/usr/bin/env python3
"""Queue benchmark driver (run by scripts/bench-queue; standard library only).

PostgreSQL: enqueue N noop jobs through the admin RPC (8 concurrent connections) while the
queue is paused, resume, and time the drain by 64 workers (median of --rounds drains, the
later ones loaded by SQL), alternating with the raw-SQL ceiling (median of as many runs): pgbench
claiming 500 rows with FOR UPDATE SKIP LOCKED and deleting them, on an equivalent table, no
application in between; then pickup latency on an idle queue (enqueue -> job start, from
debug.record's start stamp). Also reported: `design_sql`, the node's own statements run by
pgbench with no application (claim committed alone, then completed rows kept), which shows how
much of the gap to the ceiling is the design (a job is reserved before it runs; completed jobs
are kept for `queue.retention`) and how much is the node. SQLite: the same enqueue and drain,
reported without a ceiling.
Prints one JSON line per backend; the PostgreSQL line last.
"""
import argparse, json, os, random, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

# Jobs not yet finished (SQLite); answered from the partial indexes on pending and reserved rows.
UNFINISHED = "SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'pending' LIMIT 1) p) + (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'reserved' LIMIT 1) r)"
# PostgreSQL indexes no `state` (completions are HOT updates, migration 0004): pending rows are
# found by the claim index; reserved ones by scanning the reservation index from its newest
# end, where the last reservations are (a full scan only once, when none is left).
PG_PENDING = "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE reserved_at IS NULL LIMIT 1) p"
PG_RESERVED = ("SELECT count(*) FROM (SELECT 1 FROM jobs WHERE reserved_at IS NOT NULL AND state = 'reserved' "
               "ORDER BY reserved_at DESC LIMIT 1) r")

def rpc_conn(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s, s.makefile("rb")

def call(conn, method, params, rid=1):
    s, f = conn
    s.sendall((json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}) + "\n").encode())
    r = json.loads(f.readline())
    if "error" in r:
        raise RuntimeError(f"{method}: {r['error']}")
    return r["result"]

def psql(url, sql):
    out = subprocess.run(["psql", url, "-qtAc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()

class Session:
    """One long-lived psql for frequent polls: a new psql per poll (a process and a backend
    fork) would take CPU from the drain being measured."""
    def __init__(self, url):
        self.p = subprocess.Popen(["psql", url, "-qtAX", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo __end__\n")
        self.p.stdin.flush()
        lines = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("psql session ended")
            line = line.rstrip("\n")
            if line == "__end__":
                return "\n".join(lines).strip()
            lines.append(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)

class Node:
    def __init__(self, binary, workdir, db_url, workers, name):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.sock = os.path.join(workdir, "chom.sock")
        cfg = os.path.join(workdir, "chom.toml")
        with open(cfg, "w") as f:
            f.write(f'[node]\nname = "{name}"\ndata_dir = "{workdir}"\n'
                    f'[database]\nurl = "{db_url}"\nmax_connections = 10\n'
                    f'[http]\nlisten = "127.0.0.1:0"\n[admin]\nsocket = "{self.sock}"\n'
                    f'[queue]\nworkers = {workers}\npoll_interval = "1s"\n[log]\nlevel = "warn"\n')
        env = dict(os.environ, CHOM_DEBUG_HOOKS="1")
        self.log = open(os.path.join(workdir, "node.log"), "w")
        self.proc = subprocess.Popen([binary, "--config", cfg, "node"], env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while True:
            try:
                c = rpc_conn(self.sock)
                if call(c, "status", {})["ready"]:
                    c[0].close()
                    break
                c[0].close()
            except (OSError, RuntimeError):
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                sys.exit(f"node did not become ready; see {self.log.name}")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

def enqueue_many(sock, n, threads=8):
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    def work(k):
        c = rpc_conn(sock)
        for i in range(k):
            call(c, "jobs.enqueue", {"kind": "noop", "payload": {}}, i)
        c[0].close()
    start = time.perf_counter()
    ts = [threading.Thread(target=work, args=(k,)) for k in per]
    for t in ts: t.start()
    for t in ts: t.join()
    return n / (time.perf_counter() - start)

def drain(node, finished, n):
    c = rpc_conn(node.sock)
    start = time.perf_counter()
    call(c, "queue.resume", {"queue": "default"})
    # `finished` must be cheap (partial-index probes): the poll shares the machine with the
    # drain it measures.
    while not finished():
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    c[0].close()
    return n / elapsed

def run_backend(binary, db_url, n, workers, workdir, finished, before_drain=lambda: None):
    node = Node(binary, workdir, db_url, workers, "bench")
    c = rpc_conn(node.sock)
    call(c, "queue.pause", {"queue": "default"})
    c[0].close()
    enqueue_rate = enqueue_many(node.sock, n)
    before_drain()
    drain_rate = drain(node, finished, n)
    return node, enqueue_rate, drain_rate

def claim_500(pending):
    return ("UPDATE bench_jobs SET state = 'reserved', reserved_at = now(), reserved_by = 'bench-' || :client_id, attempts = attempts + 1 "
            f"WHERE id IN (SELECT id FROM bench_jobs WHERE {pending} AND queue = 'default' AND available_at <= now() "
            "ORDER BY available_at, id LIMIT 500 FOR UPDATE SKIP LOCKED);\n")
# The ceiling: claim and delete in one transaction, on the jobs table as the first queue
# migration (0002) created it: the layout best suited to claim-and-delete, and the same ceiling
# as before migration 0004, so ratios stay comparable.
CEILING_SQL = ("BEGIN;\n" + claim_500("state = 'pending'") +
               "DELETE FROM bench_jobs WHERE state = 'reserved' AND reserved_by = 'bench-' || :client_id;\nCOMMIT;\n")
CEILING_DDL = """
CREATE TABLE bench_jobs (
    id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL DEFAULT 'default', kind TEXT NOT NULL,
    payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NULL,
    timeout_ms BIGINT NULL, state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'reserved', 'completed', 'failed')),
    unique_key TEXT NULL, last_error TEXT NULL, reserved_at TIMESTAMPTZ NULL, reserved_by TEXT NULL,
    available_at TIMESTAMPTZ NOT NULL DEFAULT now(), created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ NULL);
CREATE INDEX ON bench_jobs (queue, available_at, id) WHERE state = 'pending';
CREATE UNIQUE INDEX ON bench_jobs (unique_key) WHERE unique_key IS NOT NULL AND state IN ('pending', 'reserved');
CREATE INDEX ON bench_jobs (reserved_at) WHERE state = 'reserved';
CREATE INDEX ON bench_jobs (finished_at) WHERE finished_at IS NOT NULL;
"""
# What the node's design costs in SQL alone (no application), on the node's own table layout:
# the claim committed on its own (a job must be reserved before it runs), then the completion,
# whose rows are kept for the retention period.
# The claimed ids come back (as the node gets them) and the completion names them.
DESIGN_SQL = ("WITH c AS (" + claim_500("reserved_at IS NULL").rstrip(";\n") + " RETURNING id) "
              "SELECT quote_literal(coalesce(array_agg(id), '{}')::text) AS ids FROM c \\gset\n"
              "UPDATE bench_jobs SET state = 'completed', finished_at = now() "
              "WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'reserved';\n")
# LIKE copies columns, constraints and indexes but not storage parameters.
DESIGN_DDL = "CREATE TABLE bench_jobs (LIKE jobs INCLUDING ALL) WITH (fillfactor = 30)"

def sql_ceiling(db_url, n, clients, body=CEILING_SQL, ddl=CEILING_DDL):
    psql(db_url, "DROP TABLE IF EXISTS bench_jobs; " + ddl)
    psql(db_url, f"INSERT INTO bench_jobs (queue, kind, payload) SELECT 'default', 'noop', '{{}}' FROM generate_series(1, {n})")
    psql(db_url, "VACUUM ANALYZE bench_jobs")
    script = tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False)
    script.write(body)
    script.close()
    per_client = -(-n // 500 // clients)  # transactions per client to empty the table
    start = time.perf_counter()
    subprocess.run(["pgbench", "-n", "-c", str(clients), "-t", str(per_client), "-f", script.name, db_url],
                   check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    left = int(psql(db_url, "SELECT count(*) FROM bench_jobs WHERE state IN ('pending', 'reserved')"))
    os.unlink(script.name)
    psql(db_url, "DROP TABLE bench_jobs")
    return (n - left) / elapsed

def pickup_latency(node, samples, side_file):
    c = rpc_conn(node.sock)
    sent = {}
    for i in range(samples):
        t = time.time()
        jid = call(c, "jobs.enqueue", {"kind": "debug.record", "payload": {"file": side_file}}, i)["id"]
        sent[jid] = t
        time.sleep(0.02 + random.random() * 0.01)  # an idle queue between samples
    deadline = time.time() + 30
    while time.time() < deadline:
        lines = open(side_file).read().split("\n") if os.path.exists(side_file) else []
        if len([l for l in lines if l]) >= samples:
            break
        time.sleep(0.05)
    c[0].close()
    lat = []
    for line in open(side_file):
        jid, _node, micros = line.split()
        lat.append((int(micros) / 1e6 - sent[int(jid)]) * 1000)
    lat.sort()
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))], statistics.median(lat)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="chom-bench-")
    try:
        # SQLite
        sqlite_path = os.path.join(work, "sqlite", "chom.db")
        def sqlite_finished():
            import sqlite3
            con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=5)
            try:
                return con.execute(UNFINISHED).fetchone()[0] == 0
            finally:
                con.close()
        node, enq, dr = run_backend(a.bin, f"sqlite://{sqlite_path}", a.n, a.workers, os.path.join(work, "sqlite"), sqlite_finished)
        node.stop()
        print(json.dumps({"bench": "queue", "backend": "sqlite", "n": a.n, "workers": a.workers,
                          "drain_jobs_per_s": round(dr), "enqueue_jobs_per_s": round(enq)}), flush=True)

        # PostgreSQL
        base = a.pg_url.rsplit("/", 1)[0]
        db = f"chom_bench_{random.randrange(1 << 32):x}"
        psql(a.pg_url, f"CREATE DATABASE {db}")
        url = f"{base}/{db}"
        try:
            session = Session(url)
            finished = lambda: session.query(PG_PENDING) == "0" and session.query(PG_RESERVED) == "0"
            # Each drain starts, like each ceiling run, from a table vacuumed and analyzed after
            # its load (as autovacuum would; this server may run without it): earlier rounds'
            # claims leave dead claim-index entries and row versions behind.
            vacuum = lambda: psql(url, "VACUUM ANALYZE jobs")
            node, enq, dr = run_backend(a.bin, url, a.n, a.workers, os.path.join(work, "pg"), finished, vacuum)
            p99, p50 = pickup_latency(node, 200, os.path.join(work, "pickup"))
            # More rounds, alternating drain and ceiling so both see the same machine noise;
            # later drains are loaded by one SQL INSERT (the enqueue rate was measured above).
            drains, ceilings = [dr], [sql_ceiling(url, a.n, a.clients)]
            designs = [sql_ceiling(url, a.n, a.clients, DESIGN_SQL, DESIGN_DDL)]
            for _ in range(a.rounds - 1):
                c = rpc_conn(node.sock)
                call(c, "queue.pause", {"queue": "default"})
                c[0].close()
                psql(url, f"INSERT INTO jobs (queue, kind, payload) SELECT 'default', 'noop', '{{}}' FROM generate_series(1, {a.n})")
                vacuum()
                drains.append(drain(node, finished, a.n))
                ceilings.append(sql_ceiling(url, a.n, a.clients))
                designs.append(sql_ceiling(url, a.n, a.clients, DESIGN_SQL, DESIGN_DDL))
            node.stop()
            session.close()
            dr, ceiling = statistics.median(drains), statistics.median(ceilings)
            design = statistics.median(designs)
            print(json.dumps({"rounds": a.rounds, "drain_jobs_per_s": [round(d) for d in drains],
                              "sql_ceiling_jobs_per_s": [round(c) for c in ceilings],
                              "design_sql_jobs_per_s": [round(d) for d in designs]}), file=sys.stderr, flush=True)
        finally:
            psql(a.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        out = {"bench": "queue", "backend": "postgres", "n": a.n, "workers": a.workers,
               "drain_jobs_per_s": round(dr), "sql_ceiling_jobs_per_s": round(ceiling),
               "ratio": round(dr / ceiling, 3), "enqueue_jobs_per_s": round(enq),
               "design_sql_jobs_per_s": round(design), "design_sql_ratio": round(design / ceiling, 3),
               "pickup_p99_ms": round(p99, 2), "pickup_median_ms": round(p50, 2),
               "sql_ceiling_clients": a.clients, "rounds": a.rounds}
        print(json.dumps(out), flush=True)
        ok = out["ratio"] >= 0.8 and out["pickup_p99_ms"] < 20
        sys.exit(0 if ok else 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
