"""``make flood``: cached profile reads while 200 connections flood sign-up, then login.

On a cluster of its own (ports ``FLOOD_PORT_BASE`` .. + 40, default 17470),
against ``gridlink serve`` as an operator runs it, ``wrk`` measures the
cached read of one profile by other clients three times:

1. alone (the baseline);
2. while 200 connections send sign-ups with fresh usernames for 30 s;
3. while 200 connections send logins with wrong passwords for 30 s.

It prints one table (and writes it to ``bench/flood.md``): the readers'
requests per second, p50 and p99 (and p99 against the baseline: the target
is within 2x), what the flood's requests were answered, and the server's
resident memory (every gunicorn process together), largest seen.

``--unthrottled`` repeats the floods with the sign-up and login limits
lifted, so only the cap on concurrent hashes stands between the flood and
the CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.bench import ensure_wrk
from gridlink.ops.migrate import migrate
from gridlink.project import PROJECT_ROOT, VAR
from gridlink.settings import MailBackend, Settings
from infra import cluster
from infra.http_client import api_request
from infra.processes import wait_until
from infra.serving import http_status, serve

PORT_BASE = int(os.environ.get("FLOOD_PORT_BASE", "17470"))
PG_PORT, REDIS_PORT, HTTP_PORT = PORT_BASE, PORT_BASE + 10, PORT_BASE + 20
FLOOD_ROOT = VAR / f"flood-{PORT_BASE}"
RESULTS = Path(__file__).with_name("flood.md")
FLOOD_CONNECTIONS = 200
FLOOD_SECONDS = int(os.environ.get("FLOOD_SECONDS", "30"))
READER_CONNECTIONS = 8
BASELINE_SECONDS = 15
UNLIMITED = 100_000_000

# Counts the flood's answers by status; ``done`` prints them for this script to read.
_COUNTING = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do io.write(string.format("status %d %d\\n", status, count)) end
end
"""


def flood_script(path: str, name_prefix: str, body_format: str) -> str:
    """A wrk script POSTing ``body_format`` (``%s``: a fresh name) to ``path``; counts answers."""
    return (
        _COUNTING
        + f"""
local sent = 0
request = function()
  sent = sent + 1
  local name = string.format("{name_prefix}_%x_%d", math.random(0, 0x3fffffff), sent)
  local body = string.format('{body_format}', name, name)
  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, body)
end
"""
    )


SIGN_UP_FLOOD = flood_script(
    "/api/auth/signup/",
    "fl",
    '{"username": "%s", "email": "%s@example.com", "password": "flood password"}',
)
# string.format ignores the second name here.
LOGIN_FLOOD = flood_script(
    "/api/auth/login/", "nobody", '{"username": "%s", "password": "a wrong guess"}'
)


def log(message: str) -> None:
    print(f"flood: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ReaderRun:
    rate: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class FloodRun:
    rate: float
    statuses: Counter[int]


@dataclass(frozen=True)
class Row:
    label: str
    reader: ReaderRun
    flood: FloodRun | None
    rss_mib: float


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> tuple[float, float | None, float | None, Counter[int]]:
    """Requests/s, p50 and p99 (ms, with --latency) and the statuses a script printed."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise RuntimeError(f"wrk said: {output}")
    percentiles = {
        share: _milliseconds(value, unit)
        for share, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    }
    statuses = Counter(
        {int(code): int(count) for code, count in re.findall(r"^status (\d+) (\d+)$", output, re.M)}
    )
    return float(rate.group(1)), percentiles.get("50"), percentiles.get("99"), statuses


def wrk_command(wrk: str, connections: int, seconds: int, script: Path, latency: bool) -> list[str]:
    threads = "-t2" if connections > 2 else "-t1"
    return [
        wrk,
        threads,
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        *(["--latency"] if latency else []),
        "-s",
        str(script),
        f"http://127.0.0.1:{HTTP_PORT}",
    ]


def server_rss_mib(master: int) -> float:
    """Resident memory of the gunicorn master and its workers together, in MiB."""
    pids = [master]
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        pids += [int(pid) for pid in children]
    except FileNotFoundError:
        return 0.0
    total_kib = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total_kib += int(found.group(1)) if found else 0
    return total_kib / 1024


@contextmanager
def rss_sampled(master: int) -> Iterator[list[float]]:
    """Sample the server's memory every 0.5 s during the block; the list holds the samples."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(server_rss_mib(master))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


@contextmanager
def gridlink_serve(settings: Settings) -> Iterator[int]:
    """Serve the API on ``HTTP_PORT`` as ``gridlink serve`` does; yield the master's pid once
    it is ready."""
    server = serve(
        settings.replace(mail_backend=MailBackend("file", directory=FLOOD_ROOT / "mail")),
        bind=f"127.0.0.1:{HTTP_PORT}",
        pid_file=FLOOD_ROOT / "gunicorn.pid",
        log=FLOOD_ROOT / "gunicorn.log",
    )
    server.start(log)
    try:
        address = server.address
        if not wait_until(lambda: http_status(address, "/readyz") == 200, 60):
            raise RuntimeError("gridlink serve did not become ready")
        master = server.pid()
        assert master is not None
        yield master
    finally:
        server.stop(log)


def profile_owner(address: str) -> str:
    """Sign up the user whose profile the readers read, and read it once (cached)."""
    username = f"reader_{os.getpid()}_{int(time.time())}"
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": "a flood reader password",
    }
    signed_up = api_request(address, "POST", "/api/auth/signup/", body)
    if signed_up.status != 201:
        raise RuntimeError(f"sign-up for the read profile answered {signed_up.status}")
    for _ in range(50):  # until it is served from the cache
        read = api_request(address, "GET", f"/api/users/{username}/")
        if read.headers.get("X-Gridlink-Read-Source") == "cache":
            return username
        time.sleep(0.1)
    raise RuntimeError("the profile never came from the cache")


def measure(
    wrk: str,
    master: int,
    reader_script: Path,
    label: str,
    flood_script: Path | None,
) -> Row:
    seconds = FLOOD_SECONDS if flood_script is not None else BASELINE_SECONDS
    log(f"{label}: {seconds} s ...")
    with rss_sampled(master) as samples:
        flood = (
            subprocess.Popen(
                wrk_command(wrk, FLOOD_CONNECTIONS, seconds, flood_script, latency=False),
                stdout=subprocess.PIPE,
                text=True,
            )
            if flood_script is not None
            else None
        )
        time.sleep(1 if flood is not None else 0)  # readers meet a flood already running
        reader = subprocess.run(
            wrk_command(
                wrk, READER_CONNECTIONS, seconds - 2 if flood else seconds, reader_script, True
            ),
            capture_output=True,
            text=True,
            check=True,
        )
        flood_output = flood.communicate()[0] if flood is not None else None
    rate, p50, p99, _ = parse_wrk(reader.stdout)
    flood_run = None
    if flood_output is not None:
        flood_rate, _, _, statuses = parse_wrk(flood_output)
        flood_run = FloodRun(flood_rate, statuses)
    row = Row(label, ReaderRun(rate, p50 or 0.0, p99 or 0.0), flood_run, max(samples, default=0.0))
    log(
        f"{label}: readers {rate:.0f} req/s, p99 {row.reader.p99_ms:.1f} ms, "
        f"rss {row.rss_mib:.0f} MiB"
    )
    return row


def table(rows: list[Row], baseline: ReaderRun) -> str:
    lines = [
        "| run | readers req/s | reader p50 | reader p99 | p99 / baseline "
        "| flood req/s | flood answers | server RSS (max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        flood = row.flood
        answers = (
            ", ".join(f"{status}: {count}" for status, count in sorted(flood.statuses.items()))
            if flood
            else "-"
        )
        lines.append(
            f"| {row.label} | {row.reader.rate:,.0f} | {row.reader.p50_ms:.2f} ms "
            f"| {row.reader.p99_ms:.2f} ms | {row.reader.p99_ms / baseline.p99_ms:.2f}x "
            f"| {f'{flood.rate:,.0f}' if flood else '-'} | {answers} | {row.rss_mib:.0f} MiB |"
        )
    return "\n".join(lines)


def run_floods(wrk: str, settings: Settings, scripts: Mapping[str, Path], label: str) -> list[Row]:
    with gridlink_serve(settings) as master:
        address = f"127.0.0.1:{HTTP_PORT}"
        username = profile_owner(address)
        reader_script = FLOOD_ROOT / "reader.lua"
        reader_script.write_text(f'wrk.path = "/api/users/{username}/"\n')
        rows = [measure(wrk, master, reader_script, f"{label}: readers alone", None)]
        for name, script in scripts.items():
            rows.append(measure(wrk, master, reader_script, f"{label}: {name}", script))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument(
        "--unthrottled", action="store_true", help="also flood with sign-up/login limits lifted"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster running afterwards")
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    load_before = os.getloadavg()[0]
    layout = cluster.ClusterLayout(
        root=cluster.reachable_root(FLOOD_ROOT / "cluster"),
        pg_port=PG_PORT,
        redis_port=REDIS_PORT,
        replicas=1,
    )
    log(f"cluster on ports {PG_PORT}, {PG_PORT + 1} and {REDIS_PORT}")
    cluster.up(layout, progress=log)
    try:
        migrate(layout.database_url)
        settings = Settings(
            database_url=layout.database_url,
            replica_urls=layout.replica_urls,
            redis_url=layout.redis_url,
        )
        FLOOD_ROOT.mkdir(parents=True, exist_ok=True)
        scripts: dict[str, Path] = {}
        for name, source in [
            ("200 connections signing up", SIGN_UP_FLOOD),
            ("200 connections with wrong logins", LOGIN_FLOOD),
        ]:
            script = FLOOD_ROOT / f"{len(scripts)}.lua"
            script.write_text(source)
            scripts[name] = script
        rows = run_floods(wrk, settings, scripts, "default limits")
        if args.unthrottled:
            unthrottled = settings.replace(
                signups_per_address=UNLIMITED,
                signups_per_minute=UNLIMITED,
                login_failures_per_address=UNLIMITED,
                login_failures_per_client=UNLIMITED,
                login_failures_per_account=UNLIMITED,
            )
            rows += run_floods(wrk, unthrottled, scripts, "limits lifted")
    finally:
        if not args.keep:
            cluster.down(layout, purge=True, progress=log)
    baseline = rows[0].reader
    report = table(rows, baseline)
    print(report)
    # Other work on the machine moves every figure: say how busy it was.
    load = (
        f"load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print(load)
    RESULTS.write_text(
        "# Flood benchmark (`make flood`)\n\n"
        f"{os.cpu_count()} cores; `gridlink serve` with its defaults; readers: wrk "
        f"-c{READER_CONNECTIONS} on one cached profile; flood: wrk -c{FLOOD_CONNECTIONS} "
        f"for {FLOOD_SECONDS} s; {load}.\n\n{report}\n"
    )
    log(f"wrote {RESULTS.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
