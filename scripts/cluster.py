#!/usr/bin/env python3
"""Figures for several replicas on one PostgreSQL table (issue 3), side by side in one run.

    python3 scripts/cluster.py [--rows 20000] [--binary target/release/session-reaper]

Measures: throughput of 1 and of 3 replicas (concurrency 64 each, no effective rate limit),
the API rate the stand-in sees with 3 replicas sharing a budget of 100/s, and how long the
other replicas take to finish a kill -9'd replica's rows. Loopback only; every wait is bounded.
Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and the release binary.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

KEY = "cluster-bench-key"


def psql(db, sql):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__standin/stats", timeout=5) as r:
        return json.load(r)


class Bench:
    def __init__(self, binary):
        self.binary = os.path.abspath(binary)
        self.port = free_port()
        self.standin = subprocess.Popen([self.binary, "stand-in", "--listen", f"127.0.0.1:{self.port}",
                                         "--apikey", KEY], stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                stats(self.port)
                break
            except OSError:
                time.sleep(0.05)

    def fresh_db(self, rows, due_in_s=0):
        name = "reaper_cluster_" + uuid.uuid4().hex[:12]
        psql("postgres", f"CREATE DATABASE {name}")
        url = f"postgres://postgres@127.0.0.1:5432/{name}"
        subprocess.run([self.binary, "migrate"], env=self.env(url), check=True, capture_output=True)
        psql(name, "INSERT INTO reaper_sessions (session_id, delete_after) "
                   f"SELECT 'c' || md5(random()::text || g), now() + interval '{due_in_s} seconds' "
                   f"FROM generate_series(1, {rows}) g")
        return name, url

    def env(self, url, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_REAPER_")}
        env.update({
            "SESSION_REAPER_DATABASE__URL": url,
            "SESSION_REAPER_API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "SESSION_REAPER_API__APIKEY": KEY,
            "SESSION_REAPER_WORKER__CONCURRENCY": "64",
            "SESSION_REAPER_WORKER__RATE_PER_SECOND": "1000000",
            "SESSION_REAPER_WORKER__BURST": "1000",
            "SESSION_REAPER_WORKER__BATCH_SIZE": "128",
            "SESSION_REAPER_LOG__LEVEL": "warn",
        })
        env.update({f"SESSION_REAPER_{k}": str(v) for k, v in extra.items()})
        return env

    def spawn(self, env, *args):
        return subprocess.Popen([self.binary, "run", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def throughput(self, replicas, rows):
        name, url = self.fresh_db(rows)
        start = time.monotonic()
        procs = [self.spawn(self.env(url), "--once") for _ in range(replicas)]
        for p in procs:
            p.wait(timeout=600)
        wall = time.monotonic() - start
        left = int(psql(name, "SELECT count(*) FROM reaper_sessions WHERE state <> 'deleted'"))
        psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")
        return wall, rows / wall, left

    def shared_budget(self, seconds=20, budget=100, burst=10):
        # Rows come due after every replica has announced itself.
        name, url = self.fresh_db(budget * (seconds + 10), due_in_s=4)
        before = stats(self.port)["per_second"]
        env = self.env(url, WORKER__RATE_PER_SECOND=budget, WORKER__BURST=burst, WORKER__LEASE="6s")
        procs = [self.spawn(env) for _ in range(3)]
        time.sleep(4 + seconds)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        seen = stats(self.port)["per_second"][len(before):]
        busy = [n for n in seen if n > 0][1:-1]  # drop the partial first and last seconds
        psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")
        return busy

    def takeover(self, lease_s=4):
        # A slow API keeps requests in flight when replica A dies.
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{self.port}/__standin/faults", data=b'{"latency_ms": 60000}',
            headers={"content-type": "application/json"}), timeout=5)
        name, url = self.fresh_db(200)
        env = self.env(url, WORKER__LEASE=f"{lease_s}s", API__TIMEOUT="120s", WORKER__CONCURRENCY=200)
        a = self.spawn(env)
        deadline = time.monotonic() + 30
        while int(psql(name, "SELECT count(*) FROM reaper_sessions WHERE lease_owner IS NOT NULL")) < 200:
            assert time.monotonic() < deadline, "replica A never leased the rows"
            time.sleep(0.1)
        others = [self.spawn(env) for _ in range(2)]
        a.kill()
        killed = time.monotonic()
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{self.port}/__standin/faults", data=b'{}',
            headers={"content-type": "application/json"}), timeout=5)
        while int(psql(name, "SELECT count(*) FROM reaper_sessions WHERE state <> 'deleted'")) > 0:
            assert time.monotonic() < killed + 60, "the rows were never taken over"
            time.sleep(0.05)
        took = time.monotonic() - killed
        taken = int(psql(name, "SELECT count(*) FROM reaper_sessions WHERE taken_over_from IS NOT NULL"))
        for p in others:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")
        return took, taken, lease_s

    def close(self):
        self.standin.terminate()
        self.standin.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--binary", default="target/release/session-reaper")
    args = parser.parse_args()
    bench = Bench(args.binary)
    try:
        one = bench.throughput(1, args.rows)
        three = bench.throughput(3, args.rows)
        busy = bench.shared_budget()
        took, taken, lease = bench.takeover()
    finally:
        bench.close()
    mean = sum(busy) / max(len(busy), 1)
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| 1 replica, {args.rows} rows, concurrency 64 | {one[0]:.2f} s, {one[1]:.0f} sessions/s, {one[2]} left |")
    print(f"| 3 replicas, {args.rows} rows, concurrency 64 each | {three[0]:.2f} s, {three[1]:.0f} sessions/s, {three[2]} left |")
    print(f"| 3 replicas, budget 100/s + burst 10, 20 s | mean {mean:.1f}/s, max {max(busy, default=0)}/s in one second, seconds: {busy} |")
    print(f"| kill -9 of 1 of 3 replicas holding 200 rows, lease {lease} s | others finished its rows {took:.2f} s after the kill ({taken} rows taken over) |")
    ok = one[2] == 0 and three[2] == 0 and max(busy, default=0) <= 110 and took <= 2 * lease + 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
