#!/usr/bin/env python3
"""Fleet benchmark driver (run by scripts/bench-fleet; standard library only).

A private PostgreSQL (initdb in a temp dir, pg_stat_statements preloaded, a free loopback port;
the shared server is not touched) holds two databases, migrated by `chom migrate`: one with an
empty inventory and one with N servers in `vps_servers` (one INSERT ... SELECT: the table the
node's inventory reconciliation reads; hosts under .invalid, nothing connects to them).

Per round, alternating: a node on the empty database, then a node on the full one. Start time
is from spawning `chom node` to its log line `fleet: inventory reconciled` with servers=N,
started=N (written once the last VPS actor's pre_start returned; `vps.list` then confirms every
actor runs). Memory per VPS actor: (RSS with N servers - RSS with none) / N, both read from
/proc a few seconds after the reconcile, same binary, same invocation.

Then three nodes on the full database at once: each one's start time, and while all three idle,
the database work of the inventory reconciliation from pg_stat_statements over a window
(statements on vps_servers and the inventory counts), beside the nodes' whole database load.
Prints one JSON line; exit 1 when a target is missed (start under 1 s, under 10 KB per actor).
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile
import threading, time

START_TARGET_S = 1.0
KB_TARGET = 10.0
RECONCILED = re.compile(r"fleet: inventory reconciled.*servers=(\d+) started=(\d+)")
# Strips ANSI colours, should the log format add them.
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PrivatePg:
    """initdb + pg_ctl as the postgres user (PostgreSQL refuses root), removed by close()."""

    def __init__(self, work):
        versions = sorted(os.listdir("/usr/lib/postgresql"))
        self.bin = f"/usr/lib/postgresql/{versions[-1]}/bin"
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        self.port = free_port()
        self.data = os.path.join(self.dir, "data")
        self.tool("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", self.data)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200 "
                "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all")
        self.tool("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "log"), "-w", "start")
        self.running = True
        self.psql("postgres", "CREATE EXTENSION pg_stat_statements")

    def tool(self, name, *args):
        cmd = [os.path.join(self.bin, name), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{name} failed: {out.stderr[-2000:]}")
        return out.stdout

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql):
        out = subprocess.run(["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", self.url(db), "-c", sql],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"psql failed: {out.stderr[-2000:]}")
        return out.stdout

    def close(self):
        if self.running:
            self.running = False
            subprocess.run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"]
                           if not self.root else
                           ["runuser", "-u", "postgres", "--", os.path.join(self.bin, "pg_ctl"),
                            "-D", self.data, "-m", "immediate", "stop"], capture_output=True)


class Node:
    """`chom node` with its log read line by line: the reconcile line is seen as it is written."""

    def __init__(self, binary, work, name, db_url, cache):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.binary, self.sock = binary, os.path.join(self.dir, "chom.sock")
        self.cfg = os.path.join(self.dir, "chom.toml")
        with open(self.cfg, "w") as f:
            f.write(f'[node]\nname = "{name}"\ndata_dir = "{self.dir}"\n'
                    f'[database]\nurl = "{db_url}"\n[cache]\nurl = "{cache}"\n'
                    f'[http]\nlisten = "127.0.0.1:0"\n[api]\nlisten = "127.0.0.1:0"\n[ui]\nlisten = "127.0.0.1:0"\n'
                    f'[admin]\nsocket = "{self.sock}"\n[log]\nlevel = "info"\nformat = "text"\n')
        self.log = open(os.path.join(self.dir, "node.log"), "w")
        self.reconciled = threading.Event()
        self.reconciled_at = None
        self.servers = None
        self.cpu_s = None
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen([binary, "--config", self.cfg, "node"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=dict(os.environ, NO_COLOR="1"))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            m = RECONCILED.search(ANSI.sub("", line))
            if m and not self.reconciled.is_set():
                self.reconciled_at = time.perf_counter()
                self.cpu_s = self.cpu_seconds()
                self.servers = (int(m.group(1)), int(m.group(2)))
                self.reconciled.set()
            self.log.write(line)
        self.log.flush()

    def wait_reconciled(self, limit=120):
        deadline = time.perf_counter() + limit
        while not self.reconciled.wait(0.1) and self.proc.poll() is None and time.perf_counter() < deadline:
            pass
        if not self.reconciled.is_set():
            self.stop()
            self.log.flush()
            with open(os.path.join(self.dir, "node.log")) as f:
                tail = "".join(f.readlines()[-30:])
            sys.exit(f"{self.dir}: no 'inventory reconciled' line (exit status {self.proc.returncode}); "
                     f"its log ends:\n{tail}")
        return self.reconciled_at - self.started_at

    def cpu_seconds(self):
        """User + system CPU time of the node so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def rpc(self, method, params=None):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(60)
        c.connect(self.sock)
        c.sendall((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        c.close()
        doc = json.loads(buf)
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return doc["result"]

    def running_actors(self):
        return sum(1 for v in self.rpc("vps.list")["vps"] if v["actor"] == "running")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def settled_rss(node, settle):
    """RSS once the node has idled `settle` seconds after its reconcile (allocations of the
    start, e.g. the 10,000 rows read, given back or kept as the allocator decides)."""
    time.sleep(settle)
    return node.rss_bytes()


def one_node(a, pg, work, tag, db, servers):
    node = Node(a.bin, work, tag, pg.url(db), a.cache)
    try:
        start = node.wait_reconciled()
        if node.servers != (servers, servers):
            sys.exit(f"{tag}: reconciled {node.servers}, expected ({servers}, {servers})")
        rss = settled_rss(node, a.settle)
        running = node.running_actors()
        if running != servers:
            sys.exit(f"{tag}: {running} actors running, expected {servers}")
        return start, rss, node.cpu_s
    finally:
        node.stop()


def reconcile_load(pg, db, window):
    """pg_stat_statements over `window` seconds of idle nodes: the inventory's statements and
    everything the nodes ran."""
    pg.psql(db, "SELECT pg_stat_statements_reset()")
    time.sleep(window)
    rows = pg.psql(db, """SELECT calls, rows, round(total_exec_time::numeric, 3),
        query ~ 'vps_servers|FROM tenants', regexp_replace(left(query, 110), '\\s+', ' ', 'g')
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = current_database() AND query NOT LIKE '%pg_stat_statements%'
        ORDER BY total_exec_time DESC""")
    stats = []
    for line in rows.splitlines():
        calls, nrows, ms, mine, query = line.split("|", 4)
        stats.append({"calls": int(calls), "rows": int(nrows), "ms": float(ms), "query": query,
                      "inventory": mine == "t"})
    # The reconciliation's statements: the server list and the inventory gauges' counts.
    inventory = [s for s in stats if s["inventory"]]
    per_min = 60.0 / window
    for s in stats[:12]:
        print(f"  {s['calls']:6} calls {s['rows']:8} rows {s['ms']:10.2f} ms  {s['query']}", file=sys.stderr)
    return {
        "reconcile_db_calls_per_min": round(sum(s["calls"] for s in inventory) * per_min, 1),
        "reconcile_db_rows_per_s": round(sum(s["rows"] for s in inventory) / window, 1),
        "reconcile_db_ms_per_min": round(sum(s["ms"] for s in inventory) * per_min, 2),
        "all_db_calls_per_s": round(sum(s["calls"] for s in stats) / window, 1),
        "all_db_ms_per_min": round(sum(s["ms"] for s in stats) * per_min, 2),
        "window_s": window,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=65)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--cache", default="memory://")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="chom-bench-fleet-")
    os.chmod(work, 0o711)  # the postgres user reaches its data dir inside
    pg, nodes = None, []
    try:
        pg = PrivatePg(work)
        for db in ("inv_empty", "inv_full"):
            pg.psql("postgres", f"CREATE DATABASE {db}")
            cfg = os.path.join(work, f"migrate-{db}.toml")
            with open(cfg, "w") as f:
                f.write(f'[node]\ndata_dir = "{work}/migrate"\n[database]\nurl = "{pg.url(db)}"\n')
            subprocess.run([a.bin, "--config", cfg, "migrate"], check=True, capture_output=True)
        pg.psql("inv_full", "CREATE EXTENSION pg_stat_statements")
        pg.psql("inv_full", f"""INSERT INTO vps_servers (id, host, port, source)
            SELECT format('bench-%s', g), format('vps-%s.bench.invalid', g), 22, 'admin'
            FROM generate_series(1, {a.servers}) g; ANALYZE vps_servers""")

        starts, cpus, rss_empty, rss_full = [], [], [], []
        for r in range(a.rounds):
            _, empty, _ = one_node(a, pg, work, f"empty-{r}", "inv_empty", 0)
            start, full, cpu = one_node(a, pg, work, f"full-{r}", "inv_full", a.servers)
            starts.append(start)
            cpus.append(cpu)
            rss_empty.append(empty)
            rss_full.append(full)
            per = (full - empty) / a.servers
            print(f"round {r + 1}: start {start:.3f} s ({cpu:.2f} s CPU) with {a.servers} servers; RSS {empty / 2**20:.1f} MiB "
                  f"empty, {full / 2**20:.1f} MiB full: {per:.0f} bytes per VPS actor", file=sys.stderr, flush=True)

        nodes = [Node(a.bin, work, f"cluster-{i}", pg.url("inv_full"), a.cache) for i in range(3)]
        three = [round(n.wait_reconciled(), 3) for n in nodes]
        three_cpu = [round(n.cpu_s, 2) for n in nodes]
        for n in nodes:
            if n.servers != (a.servers, a.servers):
                sys.exit(f"{n.dir}: reconciled {n.servers}")
        print(f"three nodes: start {three} s ({three_cpu} s CPU); idle window of {a.window} s ...", file=sys.stderr, flush=True)
        load = reconcile_load(pg, "inv_full", a.window)

        start_s = statistics.median(starts)
        per_actor = (statistics.median(rss_full) - statistics.median(rss_empty)) / a.servers
        doc = {"bench": "fleet", "servers": a.servers, "start_s": round(start_s, 3),
               "kb_per_vps_actor": round(per_actor / 1024, 2), "three_nodes_start_s": three,
               "start_cpu_s": round(statistics.median(cpus), 3), "three_nodes_start_cpu_s": three_cpu,
               **load, "rounds": a.rounds, "cache": a.cache,
               "rss_empty_mib": round(statistics.median(rss_empty) / 2**20, 1),
               "rss_full_mib": round(statistics.median(rss_full) / 2**20, 1),
               "target_start_s": START_TARGET_S, "target_kb_per_vps_actor": KB_TARGET}
        doc["meets_target"] = start_s < START_TARGET_S and per_actor / 1024 < KB_TARGET
        print(json.dumps(doc), flush=True)
        return 0 if doc["meets_target"] else 1
    finally:
        for n in nodes:
            n.stop()
        if pg:
            pg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the nodes, PostgreSQL and the temp dir are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
