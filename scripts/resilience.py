#!/usr/bin/env python3
"""Long-running resilience suite for session-reaper (issue 5).

Drives the real binary against its own stand-in API (a separate process on 127.0.0.1) and a real
database (a SQLite file; PostgreSQL on 127.0.0.1:5432 when reachable), injects faults, and checks
that no row is lost, no session is deleted twice beyond what a crash can explain, the rate limit
and every Retry-After are honoured, and errors are reported clearly. Prints a Markdown table.

    python3 scripts/resilience.py [--quick] [--only NAME[,NAME]] [--skip-postgres]
                                  [--allow-pg-restart] [--binary PATH] [--seed N] [--keep]

Scenarios (--only accepts these names, or the groups api, kill9, db):
    api-faults      5xx, HTML 502, 1861, hangs past the timeout, resets, 429 bursts (SQLite)
    quota-key       quota spent then restored; apikey rejected then corrected; 429 storm (SQLite)
    kill9-sqlite    kill -9 at five random points of a 20,000-row run, then a final run
    kill9-postgres  the same on PostgreSQL
    db-lock         another writer holds the SQLite file (10 s, then 15 s: past the busy timeout)
    disk-full       the SQLite file on a full tmpfs, then space freed (needs mount privilege)
    pg-terminate    pg_terminate_backend on the daemon's connections, three times
    pg-restart      restart of the PostgreSQL server mid-run (only with --allow-pg-restart: it
                    disturbs every other user of the server)

Exit status: 0 only if every scenario that ran passed; 1 otherwise; 2 on bad usage.
Python 3.11 standard library only; PostgreSQL through the `psql` CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APIKEY = "resilience-key-0123456789"
PG_HOST, PG_USER = "127.0.0.1", "postgres"
STATES = ("pending", "retrying", "deleted", "gone", "failed", "invalid")
# Never let a proxy setting send stand-in traffic off the machine.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Daemon settings shared by every scenario (each may override some).
BASE_SETTINGS = {
    "API__TIMEOUT": "1s",
    "API__CONNECT_TIMEOUT": "1s",
    "WORKER__CONCURRENCY": "16",
    "WORKER__RATE_PER_SECOND": "100",
    "WORKER__BURST": "20",
    "WORKER__LEASE": "3s",
    "WORKER__POLL_INTERVAL": "200ms",
    "RETRY__BASE_DELAY": "100ms",
    "RETRY__MAX_DELAY": "2s",
    "RETRY__MAX_ATTEMPTS": "100",
    "RETRY__QUOTA_PAUSE": "3s",
    "RETRY__KEY_PAUSE": "3s",
    "SHUTDOWN__GRACE": "5s",
    "LOG__LEVEL": "info",
    "LOG__SUMMARY_INTERVAL": "5s",
}


# ---------------------------------------------------------------------------------------------
# Small helpers


def say(scenario: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {scenario}: {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.25, abort=None):
    """Polls `predicate` until it returns a truthy value or `timeout` passes (or `abort()` is
    truthy). Returns the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline or (abort is not None and abort()):
            return value
        time.sleep(interval)


def clean_env() -> dict[str, str]:
    """The inherited environment without session-reaper settings, proxies or RUST_LOG."""
    drop = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "rust_log")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSION_REAPER_") and k.lower() not in drop
    }


def http(method: str, url: str, body=None, timeout: float = 5.0):
    """(status, parsed JSON or text). Raises OSError when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with HTTP.open(request, timeout=timeout) as response:
            raw = response.read()
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, raw.decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def sleep_watching(seconds: float, daemon: "Daemon | None" = None) -> bool:
    """Sleeps in small steps; False as soon as `daemon` has exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if daemon is not None and not daemon.alive():
            return False
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return daemon is None or daemon.alive()


# ---------------------------------------------------------------------------------------------
# Processes


class Context:
    def __init__(self, args, binary: Path, workdir: Path):
        self.args = args
        self.binary = binary
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.processes: list[subprocess.Popen] = []
        self.cleanups: list = []  # callables run at exit, last first

    def spawn(self, argv, log_name: str, env=None, stdin=None) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / log_name
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                [str(self.binary), *argv],
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT if log_name.endswith(".out.log") else handle,
                env=env if env is not None else clean_env(),
            )
        self.processes.append(proc)
        return proc, log

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass


class StandIn:
    """The stand-in API as its own process. Counters survive a restart (summed)."""

    def __init__(self, ctx: Context, name: str, faults: dict | None = None, apikey: str = APIKEY):
        self.ctx = ctx
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.carry = {"requests": 0, "off_contract": 0, "deleted_twice": 0, "inside_retry_after": 0,
                      "max_per_second": 0, "per_second": [], "sessions": 0}
        self.instances = 0
        self.proc = None
        self.start(apikey, faults)

    def start(self, apikey: str, faults: dict | None = None) -> None:
        argv = ["stand-in", "--listen", f"127.0.0.1:{self.port}", "--apikey", apikey]
        if faults:
            argv += ["--faults", json.dumps(faults)]
        self.instances += 1
        self.proc, self.log = self.ctx.spawn(argv, f"{self.name}.standin.out.log")
        if not wait_for(self._live_stats, 15, 0.1, abort=lambda: self.proc.poll() is not None):
            raise RuntimeError(f"the stand-in did not come up on {self.base_url}; see {self.log}")

    def _live_stats(self):
        try:
            status, body = http("GET", f"{self.base_url}/__standin/stats", timeout=5)
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def stats(self) -> dict:
        live = self._live_stats() or {}
        out = dict(self.carry)
        for key in ("requests", "off_contract", "deleted_twice", "inside_retry_after", "sessions"):
            out[key] = self.carry[key] + int(live.get(key, 0))
        out["max_per_second"] = max(self.carry["max_per_second"], int(live.get("max_per_second", 0)))
        out["per_second"] = self.carry["per_second"] + list(live.get("per_second", []))
        return out

    def set_faults(self, faults: dict) -> tuple[bool, str]:
        """POST /__standin/faults (the whole set: fields left out go back to their defaults)."""
        try:
            status, body = http("POST", f"{self.base_url}/__standin/faults", faults)
        except OSError as e:
            return False, f"no answer: {e}"
        return 200 <= status < 300, f"HTTP {status} {body if body else ''}".strip()

    def restart(self, apikey: str, faults: dict | None = None) -> None:
        self.carry = self.stats()
        self.stop()
        self.start(apikey, faults)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Daemon:
    """One `session-reaper run` process, its stderr in a file."""

    def __init__(self, ctx: Context, name: str, env: dict, argv=("run",)):
        self.name = name
        self.proc, self.log = ctx.spawn(list(argv), f"{name}.stderr.log", env=env)
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def offset(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM; the exit code, or None if it had to be killed."""
        if not self.alive():
            return self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def lines(self, start: int = 0, end: int | None = None) -> list[dict]:
        """Parsed JSON log lines between two byte offsets (non-JSON lines as {'raw': text})."""
        with open(self.log, "rb") as handle:
            handle.seek(start)
            data = handle.read() if end is None else handle.read(max(0, end - start))
        out = []
        for raw in data.decode(errors="replace").splitlines():
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = json.loads(raw)
                out.append(line if isinstance(line, dict) else {"raw": raw})
            except ValueError:
                out.append({"raw": raw})
        return out

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def problems(lines: list[dict]) -> list[dict]:
    """ERROR and WARN lines (and anything that is not JSON)."""
    return [l for l in lines if "raw" in l or l.get("level") in ("ERROR", "WARN")]


def describe(line: dict) -> str:
    if "raw" in line:
        return line["raw"][:300]
    fields = line.get("fields", {})
    message = fields.get("message", "")
    error = fields.get("error")
    return f"{line.get('level')} {message}" + (f" (error: {error})" if error else "")


def mentions_database(line: dict) -> bool:
    """Whether a line says the database is the problem (sqlx's own slow-statement warning shows
    the SQL, which is clear enough)."""
    return "database" in json.dumps(line).lower() or str(line.get("target", "")).startswith("sqlx")


def distinct(lines: list[dict], limit: int = 6) -> list[str]:
    seen: dict[str, int] = {}
    for line in lines:
        text = describe(line)
        seen[text] = seen.get(text, 0) + 1
    return [f"{n}x {text}" for text, n in list(seen.items())[:limit]]


def log_has(daemon: Daemon, level: str, needle: str, start: int = 0) -> bool:
    return any(
        l.get("level") == level and needle in l.get("fields", {}).get("message", "")
        for l in daemon.lines(start)
    )


# ---------------------------------------------------------------------------------------------
# Databases


def psql(sql: str, db: str = "postgres", timeout: float = 60) -> str:
    env = clean_env()
    env["PGCONNECT_TIMEOUT"] = "5"
    done = subprocess.run(
        ["psql", "-h", PG_HOST, "-U", PG_USER, "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql: {done.stderr.strip()}")
    return done.stdout


def postgres_reachable() -> tuple[bool, str]:
    if shutil.which("psql") is None:
        return False, "psql is not installed"
    try:
        psql("SELECT 1", timeout=15)
        return True, ""
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return False, str(e).strip()


class SqliteDb:
    backend = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self.url = f"sqlite://{path}"

    def rows(self, sql: str) -> list[tuple]:
        sql = sql.replace("{now}", str(int(time.time() * 1000)))
        con = sqlite3.connect(str(self.path), timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def drop(self) -> None:
        pass


class PostgresDb:
    backend = "postgres"

    def __init__(self, ctx: Context):
        self.name = f"reaper_faults_{ctx.rng.getrandbits(48):012x}"
        psql(f"CREATE DATABASE {self.name}")
        self.url = f"postgres://{PG_USER}@{PG_HOST}:5432/{self.name}"
        self.dropped = False
        ctx.cleanups.append(self.drop)

    def rows(self, sql: str) -> list[tuple]:
        out = psql(sql.replace("{now}", "now()"), db=self.name)
        return [tuple(line.split("|")) for line in out.splitlines() if line != ""]

    def drop(self) -> None:
        if not self.dropped:
            try:
                psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
                self.dropped = True
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"warning: could not drop database {self.name}: {e}", flush=True)


def scalar(db, sql: str) -> int:
    rows = db.rows(sql)
    return int(rows[0][0]) if rows and rows[0][0] not in (None, "") else 0


def counts(db, where: str = "TRUE") -> dict[str, int]:
    out = {state: 0 for state in STATES}
    for state, n in db.rows(f"SELECT state, COUNT(*) FROM reaper_sessions WHERE {where} GROUP BY state"):
        out[state] = int(n)
    return out


def open_rows(db, where: str = "TRUE") -> int:
    return scalar(db, f"SELECT COUNT(*) FROM reaper_sessions WHERE state IN ('pending','retrying') AND {where}")


def touched(db, where: str) -> int:
    """Rows that are no longer untouched: state, attempts or an attempt time changed."""
    return scalar(db, f"SELECT COUNT(*) FROM reaper_sessions WHERE ({where}) AND "
                      "(state <> 'pending' OR attempts <> 0 OR last_attempt_at IS NOT NULL)")


def attempts_histogram(db, where: str = "TRUE") -> dict[int, int]:
    return {int(a): int(n) for a, n in
            db.rows(f"SELECT attempts, COUNT(*) FROM reaper_sessions WHERE {where} GROUP BY attempts ORDER BY attempts")}


def leases_left(db) -> tuple[int, int]:
    """(rows with lease_expires_at in the future, rows with any lease_owner)."""
    future = scalar(db, "SELECT COUNT(*) FROM reaper_sessions WHERE lease_expires_at > {now}")
    owned = scalar(db, "SELECT COUNT(*) FROM reaper_sessions WHERE lease_owner IS NOT NULL")
    return future, owned


def daemon_env(db_url: str, base_url: str, **overrides) -> dict[str, str]:
    env = clean_env()
    settings = dict(BASE_SETTINGS)
    settings.update({k.upper(): str(v) for k, v in overrides.items()})
    for key, value in settings.items():
        env[f"SESSION_REAPER_{key}"] = value
    env["SESSION_REAPER_DATABASE__URL"] = db_url
    env["SESSION_REAPER_API__BASE_URL"] = base_url
    env["SESSION_REAPER_API__APIKEY"] = APIKEY
    return env


def enqueue(ctx: Context, db, ids: list[str]) -> None:
    env = daemon_env(db.url, "http://127.0.0.1:9")
    done = subprocess.run([str(ctx.binary), "enqueue"], input="\n".join(ids) + "\n", text=True,
                          capture_output=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"enqueue failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def status_json(ctx: Context, db) -> dict:
    env = daemon_env(db.url, "http://127.0.0.1:9")
    done = subprocess.run([str(ctx.binary), "status", "--json"], capture_output=True, text=True,
                          env=env, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"status failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------------
# Results


class Result:
    def __init__(self, name: str, fault: str):
        self.name = name
        self.fault = fault
        self.runs = 0
        self.rows = 0
        self.lost: int | str = "-"
        self.duplicates: int | str = "-"
        self.max_rate = "-"
        self.verdict = "pass"
        self.failures: list[str] = []
        self.details: list[str] = []
        self.skipped: str | None = None

    def note(self, text: str) -> None:
        self.details.append(text)
        say(self.name, text)

    def check(self, ok: bool, text: str) -> bool:
        self.note(("ok:   " if ok else "FAIL: ") + text)
        if not ok:
            self.failures.append(text)
        return ok

    def skip(self, why: str) -> "Result":
        self.skipped = why
        self.note(why)
        return self

    @property
    def result(self) -> str:
        if self.skipped:
            return self.skipped
        return "pass" if not self.failures else f"FAIL ({len(self.failures)})"

    @property
    def passed(self) -> bool:
        return self.skipped is not None or not self.failures


def rate_check(res: Result, stats: dict, rate: int, burst: int, restarts_allowed: bool = False) -> None:
    limit = rate + burst
    seen = stats["max_per_second"]
    if restarts_allowed:
        # A killed process's last second and its successor's first burst can share one second.
        allowed = rate + 2 * burst
        res.max_rate = f"{seen} (≤{limit}; {allowed} across a restart)"
        res.check(seen <= allowed, f"busiest second {seen} requests; limit {rate}+{burst} per process, "
                                   f"{allowed} when a restart falls inside that second")
    else:
        res.max_rate = f"{seen} (≤{limit})"
        res.check(seen <= limit, f"busiest second {seen} requests; rate_per_second + burst = {limit}")


def finish_daemon(res: Result, daemon: Daemon, grace_s: float = 5) -> None:
    was_alive = daemon.alive()
    res.check(was_alive, f"daemon {daemon.name} still running before SIGTERM"
              + ("" if was_alive else f" (it exited with {daemon.proc.returncode}; see {daemon.log})"))
    t0 = time.monotonic()
    code = daemon.terminate(timeout=grace_s + 20)
    if was_alive:
        res.check(code == 0, f"SIGTERM: exit code {code}" if code is not None else
                  f"SIGTERM: still running {time.monotonic() - t0:.0f} s later (shutdown.grace {grace_s:g} s); "
                  f"killed with SIGKILL")


def wait_done(db, daemon: Daemon, timeout: float, where: str = "TRUE", stall: float = 60) -> bool:
    """Waits until no open row is left. Gives up after `timeout`, when the daemon exits, or when
    the number of open rows has not moved for `stall` seconds."""
    last = {"open": None, "since": time.monotonic()}

    def stalled() -> bool:
        return not daemon.alive() or time.monotonic() - last["since"] > stall

    def done() -> bool:
        left = open_rows(db, where)
        if left != last["open"]:
            last["open"], last["since"] = left, time.monotonic()
        return left == 0

    return bool(wait_for(done, timeout, 0.5, abort=stalled))


def final_lease_check(res: Result, db) -> None:
    future, owned = leases_left(db)
    res.check(future == 0 and owned == 0,
              f"after shutdown: {future} rows with lease_expires_at in the future, {owned} with a lease_owner")


# ---------------------------------------------------------------------------------------------
# Scenario 1: API faults


def scenario_api_faults(ctx: Context) -> Result:
    res = Result("api-faults", "5xx, HTML 502, 1861, hangs > timeout, resets, 429 bursts (SQLite)")
    quick = ctx.args.quick
    n = 600 if quick else 3000
    rate, burst, concurrency = 100, 20, 16
    mix = {"latency_ms": 20, "error_5xx_percent": 5, "html_502_percent": 5, "busy_1861_percent": 5,
           "hang_percent": 2, "hang_ms": 3000, "reset_percent": 5}
    storm = dict(mix, limit_429_percent=25, retry_after_s=2)
    limited = 10 if quick else 20
    ids = []
    for i in range(n):
        if i % 10 == 3:
            ids.append(f"flaky2-{i:06d}")
        elif i % 10 == 6:
            ids.append(f"busy2-{i:06d}")
        elif i % 50 == 9:
            ids.append(f"gone-{i:06d}")
        elif i % 50 == 19:
            ids.append(f"expired-{i:06d}")
        elif i % (n // limited) == 1:
            ids.append(f"limited1-{i:06d}")
        else:
            ids.append(f"ok-{i:06d}")
    res.rows = n
    db = SqliteDb(ctx.workdir / "api-faults.db")
    enqueue(ctx, db, ids)
    api = StandIn(ctx, "api-faults", mix)
    env = daemon_env(db.url, api.base_url, worker__rate_per_second=rate, worker__burst=burst,
                     worker__concurrency=concurrency)
    daemon = Daemon(ctx, "api-faults", env)
    res.runs = 1
    res.note(f"{n} rows ({limited} limited1-, {n // 10} flaky2-, {n // 10} busy2-, gone-/expired- 4%); "
             f"faults {json.dumps(mix)}; api.timeout 1s; rate {rate}/s burst {burst}")
    storms = 0
    next_storm = time.monotonic() + 4
    deadline = time.monotonic() + (90 if quick else 240)
    while time.monotonic() < deadline and daemon.alive():
        if open_rows(db) == 0:
            break
        if storms < 3 and time.monotonic() >= next_storm:
            ok, answer = api.set_faults(storm)
            if not ok:
                res.check(False, f"could not start a 429 storm: {answer}")
                break
            sleep_watching(3, daemon)
            api.set_faults(mix)
            storms += 1
            next_storm = time.monotonic() + 8
            continue
        time.sleep(0.5)
    res.note(f"429 storms (25% of requests answer 429 Retry-After: 2 for 3 s): {storms}")
    stats = api.stats()
    finish_daemon(res, daemon)
    expect_gone = "(session_id LIKE 'gone-%' OR session_id LIKE 'expired-%')"
    bad_deleted = scalar(db, f"SELECT COUNT(*) FROM reaper_sessions WHERE NOT {expect_gone} AND state <> 'deleted'")
    bad_gone = scalar(db, f"SELECT COUNT(*) FROM reaper_sessions WHERE {expect_gone} AND state <> 'gone'")
    total = scalar(db, "SELECT COUNT(*) FROM reaper_sessions")
    res.lost = bad_deleted + bad_gone + (n - total)
    res.duplicates = stats["deleted_twice"]
    c = counts(db)
    res.check(res.lost == 0, f"every row final as expected: {c} ({bad_deleted} not deleted, {bad_gone} gone- not gone, "
                             f"{n - total} missing)")
    res.check(stats["inside_retry_after"] == 0, f"requests inside a Retry-After window: {stats['inside_retry_after']}")
    res.check(stats["deleted_twice"] == 0, f"sessions requested again after a successful delete: {stats['deleted_twice']}")
    res.check(stats["off_contract"] == 0, f"off-contract requests: {stats['off_contract']}")
    rate_check(res, stats, rate, burst)
    hist = attempts_histogram(db)
    res.note(f"{stats['requests']} requests for {n} rows; attempts per row {hist}")
    final_lease_check(res, db)
    api.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 2: quota, apikey, 429 storm: pauses that charge nothing


def scenario_quota_key(ctx: Context) -> Result:
    res = Result("quota-key", "quota spent/restored; key rejected/corrected; 429 storm (SQLite)")
    quick = ctx.args.quick
    per_phase = 100 if quick else 300
    rate, burst, concurrency, pause = 100, 20, 16, 3.0
    hold = 7.0
    base = {"latency_ms": 10}
    db = SqliteDb(ctx.workdir / "quota-key.db")
    api = StandIn(ctx, "quota-key", base)
    env = daemon_env(db.url, api.base_url, worker__rate_per_second=rate, worker__burst=burst,
                     worker__concurrency=concurrency, retry__quota_pause=f"{pause:g}s",
                     retry__key_pause=f"{pause:g}s")
    enqueue(ctx, db, ["warmup-0"])
    daemon = Daemon(ctx, "quota-key", env)
    res.runs = 1
    if not wait_done(db, daemon, 30):
        res.check(False, "the daemon did not delete a warm-up row within 30 s")
        finish_daemon(res, daemon)
        return res
    allowed_requests = concurrency + math.ceil(hold / pause) + 1
    phases_run, not_run = [], []

    def phase(name: str, prefix: str, fault: dict, restore, log_check) -> None:
        """Switch the fault on, enqueue fresh rows, check they stay untouched, switch it off,
        check they all end deleted with exactly one charged attempt."""
        ids = [f"{prefix}-{i:05d}" for i in range(per_phase)]
        where = f"session_id LIKE '{prefix}-%'"
        before = api.stats()
        offset = daemon.offset()
        ok, answer = api.set_faults(fault) if fault is not None else (True, "")
        if not ok:
            if answer.startswith("HTTP 4"):
                not_run.append(name)
                res.note(f"{name}: not run: stand-in lacks switch ({answer})")
            else:
                res.check(False, f"{name}: could not set the fault: {answer}")
            return
        enqueue(ctx, db, ids)
        res.rows += per_phase
        alive = sleep_watching(hold, daemon)
        during = api.stats()
        sent = during["requests"] - before["requests"]
        moved = touched(db, where)
        res.check(alive and moved == 0,
                  f"{name}: {per_phase} rows untouched after {hold:g} s of fault (state pending, attempts 0): "
                  f"{per_phase - moved}/{per_phase}")
        if name != "429 storm":
            res.check(sent <= allowed_requests,
                      f"{name}: {sent} requests during the fault (≤ concurrency {concurrency} + one probe "
                      f"per {pause:g} s pause = {allowed_requests})")
        else:
            res.note(f"{name}: {sent} requests during the fault (each answered 429 Retry-After: 2)")
        log_check(offset)
        recovered_at = time.monotonic()
        restore()
        done = wait_done(db, daemon, 60 if quick else 90, where)
        took = time.monotonic() - recovered_at
        c = counts(db, where)
        hist = attempts_histogram(db, where)
        res.check(done and c["deleted"] == per_phase,
                  f"{name}: after the fault ended, {c['deleted']}/{per_phase} deleted in {took:.1f} s ({c})")
        res.check(set(hist) == {1}, f"{name}: attempts charged per row {hist} (expected exactly 1 each)")
        phases_run.append(name)

    # Quota (1845): needs POST /__standin/faults {"quota_spent": true}.
    def quota_log(offset):
        res.check(log_has(daemon, "WARN", "quota", offset), "quota: a WARN line says the API quota is spent")

    phase("quota", "quota", dict(base, quota_spent=True), lambda: api.set_faults(base), quota_log)

    # Rejected key (1846), then corrected. Prefer the HTTP switch; else restart the stand-in.
    rotated = "rotated-key-9876543210"

    def key_log(offset):
        res.check(log_has(daemon, "ERROR", "rejected the apikey", offset),
                  "key: an ERROR line says the API rejected the apikey")
        res.check(APIKEY not in daemon.text(), "key: the apikey never appears in the daemon's log "
                                               "(the stand-in echoes it in its 1846 message)")

    ok, answer = api.set_faults(dict(base, apikey=APIKEY))  # does the switch exist? (changes nothing)
    if ok:
        phase("key", "key", dict(base, apikey=rotated), lambda: api.set_faults(dict(base, apikey=APIKEY)), key_log)
    else:
        res.note(f"key: POST apikey refused ({answer}); restarting the stand-in with another --apikey instead")

        def restore_key():
            api.restart(APIKEY, base)

        def rotate_and_phase():
            api.restart(rotated, base)
            phase("key", "key", None, restore_key, key_log)

        rotate_and_phase()

    # 429 storm: every request answers 429 Retry-After: 2.
    def storm_log(offset):
        stats = api.stats()
        res.check(stats["inside_retry_after"] == 0,
                  f"429 storm: requests inside a Retry-After window: {stats['inside_retry_after']}")

    phase("429 storm", "storm", dict(base, limit_429_percent=100, retry_after_s=2), lambda: api.set_faults(base),
          storm_log)

    stats = api.stats()
    finish_daemon(res, daemon)
    res.runs = 1
    res.lost = open_rows(db) + scalar(db, "SELECT COUNT(*) FROM reaper_sessions WHERE state NOT IN ('deleted','pending','retrying')")
    res.duplicates = stats["deleted_twice"]
    res.check(stats["deleted_twice"] == 0, f"sessions requested again after a successful delete: {stats['deleted_twice']}")
    res.check(stats["inside_retry_after"] == 0, f"requests inside a Retry-After window: {stats['inside_retry_after']}")
    rate_check(res, stats, rate, burst)
    final_lease_check(res, db)
    res.note(f"phases run: {', '.join(phases_run) or 'none'}" + (f"; not run: {', '.join(not_run)}" if not_run else ""))
    if not_run:
        res.fault += f" [not run: {', '.join(not_run)}: stand-in lacks switch]"
    api.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 3: kill -9 at random points, then restart, five times over


def scenario_kill9(ctx: Context, backend: str) -> Result:
    res = Result(f"kill9-{backend}", f"kill -9 at 5 random points, restart ({'SQLite' if backend == 'sqlite' else 'PostgreSQL'})")
    quick = ctx.args.quick
    n = 2000 if quick else 20000
    rate, burst, concurrency, latency = (200, 20, 32, 50) if quick else (400, 40, 32, 50)
    kills = 5
    db = SqliteDb(ctx.workdir / "kill9.db") if backend == "sqlite" else PostgresDb(ctx)
    ids = [f"k9-{i:06d}" for i in range(n)]
    enqueue(ctx, db, ids)
    res.rows = n
    api = StandIn(ctx, res.name, {"latency_ms": latency})
    env = daemon_env(db.url, api.base_url, worker__rate_per_second=rate, worker__burst=burst,
                     worker__concurrency=concurrency)
    expected = n / rate
    res.note(f"{n} rows, rate {rate}/s burst {burst}, concurrency {concurrency}, stand-in latency {latency} ms, "
             f"lease 3 s; about {expected:.0f} s of work")
    # Kill points: five random fractions of the run, by ids the API has seen.
    targets = sorted(ctx.rng.uniform(0.03, 0.85) for _ in range(kills))
    held: dict[str, int] = {}  # session id -> the last kill that caught it leased and open
    held_counts = []
    for k, target in enumerate(targets, start=1):
        daemon = Daemon(ctx, f"{res.name}-run{k}", env)
        res.runs += 1
        before = api.stats()["requests"]
        wait_for(lambda: api.stats()["requests"] > before, 20, 0.05, abort=lambda: not daemon.alive())
        wait_for(lambda: api.stats()["sessions"] >= target * n, expected * 2 + 30, 0.05,
                 abort=lambda: not daemon.alive())
        alive = sleep_watching(ctx.rng.uniform(0.0, 0.3), daemon)
        if not alive:
            res.check(False, f"run {k}: the daemon exited by itself ({daemon.proc.returncode}) before the kill")
            break
        pid = daemon.proc.pid
        daemon.kill9()
        time.sleep(latency / 1000 + 0.5)  # let the stand-in finish requests that were in flight
        stats = api.stats()
        final = scalar(db, "SELECT COUNT(*) FROM reaper_sessions WHERE state IN ('deleted','gone')")
        # Rows the dead process held: leased to it and still open. Its requests in flight, rows
        # waiting for the rate limiter, and answers not yet written back are all among them.
        ids_held = [r[0] for r in db.rows(
            f"SELECT session_id FROM reaper_sessions WHERE lease_owner LIKE '{pid}-%' "
            "AND state IN ('pending','retrying')")]
        for session_id in ids_held:
            held[session_id] = k
        held_counts.append(len(ids_held))
        res.note(f"kill {k} at {target:.0%} of the ids: {final}/{n} rows final, API saw {stats['sessions']} ids, "
                 f"the dead process held {len(ids_held)} open rows; duplicates so far {stats['deleted_twice']}")
    daemon = Daemon(ctx, f"{res.name}-final", env)
    res.runs += 1
    done = wait_done(db, daemon, expected * 3 + 60)
    res.check(done, f"final run finished every open row (open left: {open_rows(db)})")
    stats = api.stats()
    finish_daemon(res, daemon)
    c = counts(db)
    total = scalar(db, "SELECT COUNT(*) FROM reaper_sessions")
    res.lost = n - c["deleted"] - c["gone"]
    res.duplicates = stats["deleted_twice"]
    res.check(total == n and res.lost == 0, f"no row lost: {c} of {total} rows")
    res.check(c["gone"] == stats["deleted_twice"],
              f"rows 'gone' ({c['gone']}) are exactly the re-requested ones (API answered 1833 to "
              f"{stats['deleted_twice']} repeats after a kill lost their first outcome)")
    res.check(stats["sessions"] == n, f"the API saw every id: {stats['sessions']}/{n}")
    # What a kill can turn into repeated requests: answers in the workers, the partial batch that
    # waits for company (about COMPANY = 32 outcomes at the pace, src/worker/writer.rs) and the
    # batches being written (one writer on SQLite, two on PostgreSQL).
    writers = 1 if backend == "sqlite" else 2
    per_kill_bound = concurrency + (writers + 1) * 32
    allowed = kills * per_kill_bound
    gone_ids = {r[0] for r in db.rows("SELECT session_id FROM reaper_sessions WHERE state = 'gone'")}
    per_kill = [sum(1 for i in gone_ids if held.get(i) == k) for k in range(1, len(held_counts) + 1)]
    unexplained = sorted(i for i in gone_ids if i not in held)
    res.check(stats["deleted_twice"] <= allowed and all(d <= per_kill_bound for d in per_kill),
              f"duplicates {stats['deleted_twice']} ≤ {kills} kills × (concurrency {concurrency} + "
              f"{writers + 1} batches of 32) = {allowed}, "
              f"each kill ≤ {per_kill_bound}: per kill {per_kill}; open rows held by the dead process per kill "
              f"{held_counts}")
    res.check(not unexplained, f"every re-requested row was held by a killed process "
                               f"({len(unexplained)} were not{': ' + ', '.join(unexplained[:5]) if unexplained else ''})")
    over = [h for h in held_counts if h > concurrency]
    if over:
        res.note(f"note: at {len(over)} kill(s) the dead process held more open rows than its pool ({over} > "
                 f"{concurrency}): claimed rows waiting, or answers waiting for the writer")
    final_lease_check(res, db)
    rate_check(res, stats, rate, burst, restarts_allowed=True)
    api.stop()
    db.drop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 4: database faults


def run_with_db_fault(ctx: Context, res: Result, db, n: int, rate: int, inject, prefix: str,
                      latency: int = 20, timeout: float = 180) -> None:
    """Seeds `n` rows, starts the daemon, calls `inject(daemon)` once some progress is made,
    waits for the rest, then checks nothing was lost, duplicated or reported unclearly."""
    ids = [f"{prefix}-{i:06d}" for i in range(n)]
    enqueue(ctx, db, ids)
    res.rows = n
    burst = 20
    api = StandIn(ctx, res.name, {"latency_ms": latency})
    env = daemon_env(db.url, api.base_url, worker__rate_per_second=rate, worker__burst=burst)
    daemon = first = Daemon(ctx, res.name, env)
    res.runs = 1
    progressed = wait_for(lambda: n - open_rows(db) >= n // 10, 60, 0.2, abort=lambda: not daemon.alive())
    if not progressed:
        res.check(False, f"no progress before the fault (daemon alive: {daemon.alive()})")
    else:
        inject(daemon)
    res.check(daemon.alive(), "daemon survived the fault")
    done = wait_done(db, daemon, timeout)
    res.check(done, f"every row final afterwards (open left: {open_rows(db)}"
                    + ("" if done else f"; no progress for 60 s, daemon alive: {daemon.alive()}") + ")")
    if not done:
        # Stuck for good, or only until restarted? A fresh process tells lost rows from stuck ones.
        finish_daemon(res, daemon)
        daemon = Daemon(ctx, f"{res.name}-recovery", env)
        res.runs += 1
        recovered = wait_done(db, daemon, timeout)
        res.note(f"recovery run (a fresh process, not a pass): {'finished every row' if recovered else 'stuck too'}"
                 f" (open left: {open_rows(db)})")
    stats = api.stats()
    finish_daemon(res, daemon)
    c = counts(db)
    res.lost = n - c["deleted"] - c["gone"]
    res.duplicates = stats["deleted_twice"]
    res.check(res.lost == 0, f"no row lost: {c}")
    why = ("the stuck first process had to be stopped and replaced; answers it held unwritten, if any, "
           "were requested again" if res.runs > 1
           else "no process died, so every answered request should have been recorded once")
    res.check(stats["deleted_twice"] == 0,
              f"sessions requested again after a successful delete: {stats['deleted_twice']} ({why})")
    takeovers = [l for l in first.lines() if "took over" in l.get("fields", {}).get("message", "")
                 or l.get("span", {}).get("taken_over") is True
                 or l.get("fields", {}).get("taken_over") is True]
    res.check(not takeovers, f"no row taken over, no 'another worker took over' warning: only one daemon runs "
                             f"({len(takeovers)} log lines say otherwise"
                             + (f", e.g. {describe(takeovers[0])}" if takeovers else "") + ")")
    rate_check(res, stats, rate, burst)
    final_lease_check(res, db)
    res.note(f"{stats['requests']} requests for {n} rows; attempts per row {attempts_histogram(db)}")
    api.stop()


def check_fault_logs(res: Result, daemon: Daemon, start: int, end: int, label: str, require: bool) -> None:
    lines = problems(daemon.lines(start, end))
    # Lines that report an error: ERROR, or WARN with an error field (or not JSON at all).
    reports = [l for l in lines if "raw" in l or l.get("level") == "ERROR" or "error" in l.get("fields", {})]
    unclear = [l for l in reports if not mentions_database(l)]
    if lines:
        res.note(f"{label}: WARN/ERROR lines: " + " | ".join(distinct(lines)))
    if require:
        res.check(len(lines) > 0 and any(mentions_database(l) for l in lines),
                  f"{label}: stderr reports the database problem ({len(lines)} WARN/ERROR lines)")
    res.check(not unclear, f"{label}: every error line names the database ({len(unclear)} do not"
                           + (f": {distinct(unclear, 3)}" if unclear else "") + ")")


def scenario_db_lock(ctx: Context) -> Result:
    res = Result("db-lock", "another writer holds the SQLite file 10 s, then 15 s")
    n = 600 if ctx.args.quick else 1500
    db = SqliteDb(ctx.workdir / "db-lock.db")

    def hold(daemon: Daemon, seconds: float, require: bool) -> None:
        con = sqlite3.connect(str(db.path), timeout=30, isolation_level=None)
        try:
            start = daemon.offset()
            con.execute("BEGIN EXCLUSIVE")
            t0 = time.monotonic()
            done_before = n - open_rows(db)
            alive = sleep_watching(seconds, daemon)
            done_during = n - open_rows(db)
            con.execute("COMMIT")
            res.note(f"held BEGIN EXCLUSIVE for {time.monotonic() - t0:.1f} s; rows final before {done_before}, "
                     f"at release {done_during}; daemon alive: {alive}")
        finally:
            con.close()
        sleep_watching(3, daemon)
        check_fault_logs(res, daemon, start, daemon.offset(), f"{seconds:g} s lock", require)

    def inject(daemon: Daemon) -> None:
        hold(daemon, 10, require=False)  # at the 10 s busy timeout: waiting silently is fine
        hold(daemon, 15, require=True)  # past it: the daemon must say what is wrong
        res.check(log_has(daemon, "INFO", "back"), "an INFO line says the database is back")

    run_with_db_fault(ctx, res, db, n, 50, inject, "lock")
    return res


def scenario_disk_full(ctx: Context) -> Result:
    res = Result("disk-full", "SQLite file on a full tmpfs, then space freed")
    n = 400 if ctx.args.quick else 1000
    mount = ctx.workdir / "tmpfs"
    mount.mkdir(exist_ok=True)
    # 32 MiB, not 2: a WAL grows to ~4 MiB before its first checkpoint, so a 2 MiB disk would be
    # full for good with no filler at all, and nothing could be freed to test the recovery.
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return res.skip(f"not possible here: mount -t tmpfs refused ({done.stderr.strip() or done.returncode})")

    def unmount():
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=30)

    ctx.cleanups.append(unmount)
    db = SqliteDb(mount / "reaper.db")
    filler = mount / "filler"

    def inject(daemon: Daemon) -> None:
        start = daemon.offset()
        written = 0
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (256 * 1024, 4096, 512, 1):
                block = b"\0" * chunk
                while written < 64 * 1024 * 1024:
                    try:
                        wrote = os.write(fd, block)
                    except OSError:
                        break
                    written += wrote
                    if wrote < chunk:
                        break
        finally:
            os.close(fd)
        usage = shutil.disk_usage(mount)
        before = n - open_rows(db)
        res.note(f"filled the tmpfs: {written // 1024} KiB filler, {usage.free} bytes free; {before} rows final")
        alive = sleep_watching(10, daemon)
        during = n - open_rows(db)
        filler.unlink()
        res.note(f"freed the filler after 10 s; rows final meanwhile: {during - before}; daemon alive: {alive}")
        sleep_watching(3, daemon)
        lines = problems(daemon.lines(start))
        full = [l for l in lines if "full" in json.dumps(l).lower()]
        if during > before and not full:
            res.note("note: the daemon kept writing on the full disk (SQLite reused space in its WAL), "
                     "so the fault may not have bitten")
        check_fault_logs(res, daemon, start, daemon.offset(), "disk full", require=during == before)

    try:
        run_with_db_fault(ctx, res, db, n, 100, inject, "full")
    finally:
        if filler.exists():
            filler.unlink()
    return res


def scenario_pg_terminate(ctx: Context) -> Result:
    res = Result("pg-terminate", "pg_terminate_backend on the daemon's connections, 3 times")
    n = 600 if ctx.args.quick else 1500
    db = PostgresDb(ctx)

    def inject(daemon: Daemon) -> None:
        start = daemon.offset()
        for i in range(3):
            out = psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       f"WHERE datname = '{db.name}' AND pid <> pg_backend_pid()")
            res.note(f"terminated {out.strip()} backend(s) (round {i + 1})")
            sleep_watching(2, daemon)
        sleep_watching(2, daemon)
        check_fault_logs(res, daemon, start, daemon.offset(), "terminated connections", require=False)

    try:
        run_with_db_fault(ctx, res, db, n, 100, inject, "term")
    finally:
        db.drop()
    return res


def scenario_pg_restart(ctx: Context) -> Result:
    res = Result("pg-restart", "PostgreSQL server restarted mid-run")
    if not ctx.args.allow_pg_restart:
        return res.skip("not run: needs --allow-pg-restart (restarts the shared server)")
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters or shutil.which("pg_ctlcluster") is None:
        return res.skip("not possible here: no pg_ctlcluster / /etc/postgresql")
    version = clusters[-1]
    n = 600 if ctx.args.quick else 1500
    db = PostgresDb(ctx)

    def inject(daemon: Daemon) -> None:
        start = daemon.offset()
        t0 = time.monotonic()
        done = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                              capture_output=True, text=True, timeout=120)
        res.check(done.returncode == 0, f"pg_ctlcluster {version} main restart: exit {done.returncode} "
                                        f"{done.stderr.strip()[:200]} ({time.monotonic() - t0:.1f} s)")
        wait_for(lambda: postgres_reachable()[0], 60, 1)
        sleep_watching(3, daemon)
        check_fault_logs(res, daemon, start, daemon.offset(), "server restart", require=False)

    try:
        run_with_db_fault(ctx, res, db, n, 100, inject, "restart")
    finally:
        wait_for(lambda: postgres_reachable()[0], 60, 1)
        db.drop()
    return res


# ---------------------------------------------------------------------------------------------
# Main


SCENARIOS = [
    ("api-faults", "api", False, scenario_api_faults),
    ("quota-key", "api", False, scenario_quota_key),
    ("kill9-sqlite", "kill9", False, lambda ctx: scenario_kill9(ctx, "sqlite")),
    ("kill9-postgres", "kill9", True, lambda ctx: scenario_kill9(ctx, "postgres")),
    ("db-lock", "db", False, scenario_db_lock),
    ("disk-full", "db", False, scenario_disk_full),
    ("pg-terminate", "db", True, scenario_pg_terminate),
    ("pg-restart", "db", True, scenario_pg_restart),  # last: it disturbs the shared server
]


def find_binary(args) -> Path:
    binary = Path(args.binary)
    if not binary.is_absolute():
        binary = (REPO / binary) if not binary.exists() else binary.resolve()
    if binary.exists():
        return binary
    default = REPO / "target" / "release" / "session-reaper"
    if binary == default:
        print(f"{binary} is missing: running cargo build --release", flush=True)
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True, timeout=3600)
        if binary.exists():
            return binary
    raise SystemExit(f"error: no session-reaper binary at {binary}")


def table(results: list[Result]) -> str:
    head = ["scenario", "fault", "runs", "rows", "lost", "duplicates", "max rate/s (limit)", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.name, r.fault, str(r.runs), str(r.rows), str(r.lost), str(r.duplicates), r.max_rate, r.result]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--binary", default="target/release/session-reaper",
                        help="session-reaper binary (default: target/release/session-reaper, built if missing)")
    parser.add_argument("--quick", action="store_true", help="smaller row counts (a few minutes)")
    parser.add_argument("--only", help="comma-separated scenario names or groups (api, kill9, db)")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite scenarios only")
    parser.add_argument("--allow-pg-restart", action="store_true",
                        help="run pg-restart: restarts the PostgreSQL server, disturbing its other users")
    parser.add_argument("--seed", type=int, default=None, help="random seed (kill points); printed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    wanted = None
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        known = {name for name, *_ in SCENARIOS} | {group for _, group, *_ in SCENARIOS}
        unknown = wanted - known
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")

    binary = find_binary(args)
    workdir = Path(tempfile.mkdtemp(prefix="reaper-resilience-"))
    ctx = Context(args, binary, workdir)
    print(f"session-reaper resilience suite: binary {binary}, work dir {workdir}, seed {args.seed}"
          f"{', quick' if args.quick else ''}", flush=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    pg_ok, pg_why = (False, "--skip-postgres") if args.skip_postgres else postgres_reachable()
    results: list[Result] = []
    started = time.monotonic()
    interrupted = False
    try:
        for name, group, needs_pg, run in SCENARIOS:
            if wanted is not None and name not in wanted and group not in wanted:
                continue
            t0 = time.monotonic()
            if needs_pg and not pg_ok:
                res = Result(name, "PostgreSQL")
                res.skip(f"not run: PostgreSQL unavailable ({pg_why})")
            else:
                say(name, "starting")
                try:
                    res = run(ctx)
                except Exception as e:  # a broken scenario must not hide the others
                    res = Result(name, "(scenario crashed)")
                    res.check(False, f"the scenario itself failed: {type(e).__name__}: {e}")
            res.note(f"{time.monotonic() - t0:.0f} s")
            results.append(res)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping processes and cleaning up", flush=True)
    finally:
        ctx.stop_all()
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception as e:
                print(f"warning: cleanup failed: {e}", flush=True)

    print("\n## Details\n")
    for r in results:
        print(f"### {r.name}: {r.result}")
        for d in r.details:
            print(f"- {d}")
        print()
    print(f"## Summary (seed {args.seed}, {time.monotonic() - started:.0f} s{', quick' if args.quick else ''})\n")
    print(table(results))
    ok = bool(results) and not interrupted and all(r.passed for r in results)
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\nlogs and databases kept in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
