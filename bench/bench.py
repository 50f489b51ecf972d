"""``make bench``: seed a cluster of its own, measure reads, throughput and writes, write a table.

Run from the project root as ``python -m bench.bench`` (``make bench``). It
starts the bench cluster (primary 25432, replica 25433, Redis 26379, data in
``var/bench``; ``GRIDLINK_BENCH_PG_PORT`` and ``GRIDLINK_BENCH_REDIS_PORT``
move it, so two checkouts can run it side by side), seeds two datasets into
two databases of it (1,000,000 and 10,000 links), and measures:

- profile reads in process through ``falcon.testing.TestClient`` (as the seed
  project's Django test client did), from the cache and from the replica,
  with the SQL statements each read sent;
- cached profile reads per second through gunicorn with ``wrk``, beside a
  Falcon app that answers a constant body of the same size under the same
  gunicorn configuration, in the same run;
- write latency: create a link, rename a grid (each rebuilds the profile
  document and writes it through to the cache).

Progress goes to stderr; the table to stdout and ``bench/results.md``.
``--tune`` measures throughput under a few gunicorn configurations instead and
writes ``bench/tuning.md``. Timings are a benchmark's, never a test's.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon.testing
from sqlalchemy import text

from gridlink.app import create_app
from gridlink.cli import GUNICORN_CONF, PROJECT_ROOT, migrate
from gridlink.seed import SeedPlan, SeedResult, seed, warm_profiles
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from tests.conftest import count_queries, wait_for_replica
from tests.servers import Server, server_environment, start_server

BENCH_ROOT = PROJECT_ROOT / "var" / "bench"
# The wrk script and the constant body: beside the cluster, which owns its directory.
WORK_DIR = PROJECT_ROOT / "var" / "bench-work"
RESULTS = Path(__file__).with_name("results.md")
TUNING = Path(__file__).with_name("tuning.md")
PG_PORT = int(os.environ.get("GRIDLINK_BENCH_PG_PORT", "25432"))
REDIS_PORT = int(os.environ.get("GRIDLINK_BENCH_REDIS_PORT", "26379"))
LARGE = SeedPlan(users=10_000, grids=10, links=10)
SMALL = SeedPlan(users=100, grids=10, links=10)
SOURCE = "X-Gridlink-Read-Source"
PASSWORD = "bench password"  # noqa: S105 - the seeded test users' password, not a secret
READS = 2000
WRITES = 200
WRK_SECONDS = 10
WRK_CONNECTIONS = 32
WRK_ROUNDS = 2
# gunicorn option sets that --tune compares (infra/gunicorn.conf.py is the baseline).
TUNINGS: dict[str, tuple[str, ...]] = {
    "infra/gunicorn.conf.py as it is": (),
    "half the workers": ("--workers", str(os.cpu_count() or 2)),
    "twice the workers": ("--workers", str((os.cpu_count() or 2) * 4)),
    "4 threads per worker": ("--threads", "4"),
    "keep-alive 75 s": ("--keep-alive", "75"),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Dataset:
    """One seeded database of the bench cluster, with its services and in-process client."""

    name: str
    settings: Settings
    services: Services
    client: falcon.testing.TestClient
    seeded: SeedResult
    user_ids: list[int]
    # CPU seconds the seed took: this process (making the rows), the primary's processes.
    seed_cpu: tuple[float, float]

    def usernames(self, count: int, rng: random.Random) -> list[str]:
        numbers = range(self.seeded.first, self.seeded.last + 1)
        return [self.seeded.username(n) for n in rng.sample(numbers, min(count, len(numbers)))]


@dataclass(frozen=True)
class Latency:
    """Per-request times (seconds) and what the requests sent and came from."""

    times: list[float]
    queries: int
    sources: Counter[str]

    def percentile(self, share: float) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def row(self, label: str) -> str:
        """One table row: label, requests, p50, p99, SQL statements per request."""
        return (
            f"| {label} | {len(self.times)} | {self.percentile(0.5) * 1000:.2f} ms "
            f"| {self.percentile(0.99) * 1000:.2f} ms | {self.queries / len(self.times):g} |"
        )

    def row_with_sources(self, label: str) -> str:
        """The row and a last cell saying where the answers came from."""
        sources = ", ".join(f"{name} {count}" for name, count in sorted(self.sources.items()))
        return f"{self.row(label)} {sources} |"


def layout(database: str) -> cluster.ClusterLayout:
    return cluster.ClusterLayout(
        root=cluster.reachable_root(BENCH_ROOT),
        pg_port=PG_PORT,
        redis_port=REDIS_PORT,
        database=database,
    )


def prepare(name: str, database: str, redis_db: int, plan: SeedPlan) -> Dataset:
    """Start the cluster, empty and migrate ``database``, seed it; wait for the replica."""
    built = layout(database)
    cluster.up(built, progress=log)
    migrate(built.database_url)
    settings = Settings(
        database_url=built.database_url,
        replica_urls=built.replica_urls,
        redis_url=f"redis://127.0.0.1:{REDIS_PORT}/{redis_db}",
    )
    services = Services.connect(settings)
    with services.primary.begin() as connection:
        connection.execute(text("TRUNCATE users CASCADE"))
    services.redis.flushdb()
    log(f"{name}: seeding {plan.total_links:,} links")
    server_cpu, client_cpu = primary_cpu_seconds(built), time.process_time()
    seeded = seed(services, plan, password=PASSWORD)
    seed_cpu = (time.process_time() - client_cpu, primary_cpu_seconds(built) - server_cpu)
    with services.primary.connect() as connection:
        user_ids: list[int] = list(
            connection.execute(
                text("SELECT id FROM users WHERE username LIKE 'test\\_user\\_%' ORDER BY id")
            ).scalars()
        )
    wait_for_replica(services, timeout=120)
    client = falcon.testing.TestClient(create_app(settings, services))
    return Dataset(name, settings, services, client, seeded, user_ids, seed_cpu)


def primary_cpu_seconds(built: cluster.ClusterLayout) -> float:
    """Sum the CPU time of the primary's postmaster, its live children and those it reaped.

    Wall time on a shared machine says more about the neighbours than about
    the seed; CPU time says what the seed itself cost.
    """
    root = cluster.reachable_root(BENCH_ROOT)
    postmaster = int((root / "primary" / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    ticks = 0
    for pid, with_reaped in [(postmaster, True), *((int(child), False) for child in children)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # exited meanwhile: the postmaster's reaped time has it
        # utime, stime, then cutime, cstime (fields 14-17 of proc(5)).
        ticks += sum(int(value) for value in fields[11 : 15 if with_reaped else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def engines(dataset: Dataset) -> list[Any]:
    return [dataset.services.primary, *dataset.services.replicas]


def time_requests(
    dataset: Dataset, requests: Sequence[tuple[str, str, dict[str, Any]]], expected: int
) -> Latency:
    """Send ``(method, path, options)`` requests in process; time each one."""
    times: list[float] = []
    sources: Counter[str] = Counter()
    with count_queries(*engines(dataset)) as counted:
        for method, path, options in requests:
            started = time.perf_counter()
            answer = dataset.client.simulate_request(method, path, **options)
            times.append(time.perf_counter() - started)
            if answer.status_code != expected:
                raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
            sources[answer.headers.get(SOURCE, "none")] += 1
    return Latency(times, counted.count, sources)


def profile_reads(dataset: Dataset, usernames: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    return [("GET", f"/api/users/{name}/", {}) for name in usernames]


def read_latencies(dataset: Dataset, rng: random.Random) -> tuple[Latency, Latency]:
    """Time profile reads from the cache, then from the replica (each read a miss)."""
    sample = dataset.usernames(READS, rng)
    warm_profiles(dataset.services, dataset.user_ids)
    cached = time_requests(dataset, profile_reads(dataset, sample * (READS // len(sample))), 200)
    # Misses: a read fills the cache for a second, so each round of distinct
    # users starts from an empty cache.
    await_replica_in_rotation(dataset)
    replica_times: list[Latency] = []
    while sum(len(part.times) for part in replica_times) < READS:
        dataset.services.redis.flushdb()
        replica_times.append(time_requests(dataset, profile_reads(dataset, sample), 200))
    return cached, Latency(
        [t for part in replica_times for t in part.times],
        sum(part.queries for part in replica_times),
        sum((part.sources for part in replica_times), Counter()),
    )


def await_replica_in_rotation(dataset: Dataset, timeout: float = 30) -> None:
    """Read until the router sends anonymous reads to the replica (it probes once a second)."""
    probe = dataset.usernames(1, random.Random(0))[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset.services.redis.flushdb()
        answer = dataset.client.simulate_get(f"/api/users/{probe}/")
        if answer.headers.get(SOURCE) == "replica":
            return
        time.sleep(0.2)
    raise RuntimeError("the replica never came into rotation")


def write_latencies(dataset: Dataset, rng: random.Random) -> tuple[Latency, Latency]:
    """Time link creation and grid renames by seeded users (each rebuilds a profile)."""
    writers = dataset.usernames(20, rng)
    creates: list[tuple[str, str, dict[str, Any]]] = []
    renames: list[tuple[str, str, dict[str, Any]]] = []
    for writer in writers:
        login = dataset.client.simulate_post(
            "/api/auth/login/", json={"username": writer, "password": PASSWORD}
        )
        headers = {"Authorization": f"Token {login.json['token']}"}
        grids = dataset.client.simulate_get("/api/grids/", headers=headers).json["data"]
        for index in range(WRITES // len(writers)):
            slug = grids[index % len(grids)]["slug"]
            link = {"grid": slug, "title": f"Bench {index}", "url": "https://example.com/bench"}
            creates.append(("POST", "/api/links/", {"json": link, "headers": headers}))
            rename = {"title": f"Renamed {index}"}
            renames.append(("PATCH", f"/api/grids/{slug}/", {"json": rename, "headers": headers}))
    return time_requests(dataset, creates, 201), time_requests(dataset, renames, 200)


# --- throughput through gunicorn -------------------------------------------------------


def ensure_wrk() -> str:
    """Return wrk's path, installing the Debian package when it is missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench: wrk is missing: apt-get install wrk")
    log("installing wrk (apt-get install wrk)")
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL
    )
    return shutil.which("wrk") or "wrk"


@contextmanager
def gunicorn(
    settings: Settings, options: Sequence[str], app: str | None = None, **environment: str
) -> Iterator[Server]:
    server = start_server(
        settings,
        workers=(os.cpu_count() or 2) * 2,  # as infra/gunicorn.conf.py says
        environment=server_environment(settings, **environment),
        app=app,
        options=options,
    )
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()


def run_wrk(wrk: str, server: Server, script: Path) -> float:
    """Run wrk against ``server``; return requests per second (refuse any error answer)."""
    done = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{WRK_CONNECTIONS}",
            f"-d{WRK_SECONDS}s",
            "-s",
            str(script),
            f"http://{server.address}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", done.stdout)
    if errors:
        raise RuntimeError(f"wrk saw errors: {errors.group(0)}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if rate is None:
        raise RuntimeError(f"wrk said: {done.stdout}")
    return float(rate.group(1))


def wrk_script(seeded: SeedResult) -> Path:
    """A wrk script that asks for a random seeded user's profile on every request."""
    script = WORK_DIR / "profiles.lua"
    script.write_text(
        "math.randomseed(os.time())\n"
        "request = function()\n"
        f'  return wrk.format("GET", "/api/users/test_user_" .. '
        f'math.random({seeded.first}, {seeded.last}) .. "/")\n'
        "end\n"
    )
    return script


# The apps ``throughput`` compares: (label, WSGI app for gunicorn or None for Gridlink).
APPS = (
    ("Gridlink `GET /api/users/<name>/`", None),
    ("Falcon app doing one Redis `HMGET` of the same entry", "bench.constant_app:get_redis_app()"),
    ("Falcon app answering a constant body of the same size", "bench.constant_app:get_app()"),
)


def throughput(dataset: Dataset, options: Sequence[str]) -> list[float]:
    """Return each of ``APPS``' requests per second: medians of interleaved rounds."""
    wrk = ensure_wrk()
    script = wrk_script(dataset.seeded)
    warm_profiles(dataset.services, dataset.user_ids)
    body = WORK_DIR / "constant-body.json"
    first = dataset.seeded.username(dataset.seeded.first)
    body.write_bytes(dataset.client.simulate_get(f"/api/users/{first}/").content)
    rates: list[list[float]] = [[] for _ in APPS]
    for round_ in range(WRK_ROUNDS):
        log(f"wrk round {round_ + 1}/{WRK_ROUNDS} ({' '.join(options) or 'default options'})")
        for (_label, app), measured in zip(APPS, rates, strict=True):
            with gunicorn(dataset.settings, options, app, BENCH_CONSTANT_BODY=str(body)) as server:
                measured.append(run_wrk(wrk, server, script))
    return [statistics.median(measured) for measured in rates]


# --- the report ---------------------------------------------------------------------------


def gunicorn_summary() -> str:
    """Say which worker class, how many workers and threads the configuration sets."""
    config: dict[str, Any] = {}
    exec(GUNICORN_CONF.read_text(), config)  # noqa: S102 - the project's own configuration
    worker = str(config["worker_class"]).rpartition(".")[2]
    return f"{config['workers']} {worker} workers x {config['threads']} threads"


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min; "
        f"the machine is shared), Python {platform.python_version()}"
    )


def report(
    large: Dataset,
    small: Dataset,
    reads: dict[str, tuple[Latency, Latency]],
    rates: list[float],
    writes: tuple[Latency, Latency],
) -> str:
    seed_phases = ", ".join(f"{n} {s:.1f} s" for n, s in large.seeded.phase_seconds.items())
    lines = [
        "# Gridlink benchmark (`make bench`)",
        "",
        f"Measured {machine()}.",
        "",
        "## Seed",
        "",
        f"`gridlink seed` of {large.seeded.users:,} users x {LARGE.grids} grids x "
        f"{LARGE.links} links ({large.seeded.links:,} links): **{large.seeded.seconds:.1f} s** "
        f"({seed_phases}); CPU: {large.seed_cpu[0]:.1f} s in Python (rows, the password hash), "
        f"{large.seed_cpu[1]:.1f} s in the primary's processes.",
        "",
        "## Profile reads in process (`falcon.testing.TestClient`)",
        "",
        "| read | requests | p50 | p99 | SQL statements per read | answered from |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        "| seed project (Django test client, 1,000,000 links, as reported) | | < 30 ms | "
        "| 3 | database |",
    ]
    for dataset in (large, small):
        cached, replica = reads[dataset.name]
        lines.append(cached.row_with_sources(f"{dataset.name}, cache"))
        lines.append(replica.row_with_sources(f"{dataset.name}, replica (cache miss)"))
    ours, constant = rates[0], rates[-1]
    lines += [
        "",
        "## Cached profile reads through gunicorn (`wrk`)",
        "",
        f"gunicorn with `infra/gunicorn.conf.py` ({gunicorn_summary()}), `wrk -t2 "
        f"-c{WRK_CONNECTIONS} -d{WRK_SECONDS}s`, a random one of "
        f"{large.seeded.users:,} cached profiles per request "
        f"({len(WORK_DIR.joinpath('constant-body.json').read_bytes()):,}-byte body); "
        f"median of {WRK_ROUNDS} interleaved rounds.",
        "",
        "| app | requests/s | Gridlink's share |",
        "| --- | ---: | ---: |",
        *(
            f"| {label} | {rate:,.0f} | {ours / rate:.2f} |"
            for (label, _app), rate in zip(APPS, rates, strict=True)
        ),
        "",
        f"**Gridlink / constant-body app: {ours / constant:.2f}.**",
        "",
        "## Writes in process (each rebuilds the profile and writes it through to the cache)",
        "",
        "| write | requests | p50 | p99 | SQL statements per write |",
        "| --- | ---: | ---: | ---: | ---: |",
        writes[0].row(f"{large.name}, create link"),
        writes[1].row(f"{large.name}, rename grid"),
        "",
    ]
    return "\n".join(lines)


def tune(large: Dataset) -> str:
    lines = [
        "# Gunicorn tuning (`python -m bench.bench --tune`)",
        "",
        f"Measured {machine()}. Cached profile reads, `wrk -t2 -c{WRK_CONNECTIONS} "
        f"-d{WRK_SECONDS}s`, median of {WRK_ROUNDS} rounds per app.",
        "",
        "| gunicorn | " + " | ".join(label for label, _app in APPS) + " | ratio |",
        "| --- | " + "---: | " * len(APPS) + "---: |",
    ]
    for label, options in TUNINGS.items():
        rates = throughput(large, options)
        cells = " | ".join(f"{rate:,.0f}" for rate in rates)
        lines.append(f"| {label} | {cells} | {rates[0] / rates[-1]:.2f} |")
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="compare gunicorn configurations")
    parser.add_argument("--keep", action="store_true", help="leave the bench cluster running")
    args = parser.parse_args(argv)
    rng = random.Random(6)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    datasets: list[Dataset] = []
    try:
        large = prepare("1,000,000 links", "gridlink", 0, LARGE)
        datasets.append(large)
        if args.tune:
            table = tune(large)
            TUNING.write_text(table)
            print(table)
            return 0
        small = prepare("10,000 links", "gridlink_small", 1, SMALL)
        datasets.append(small)
        reads = {}
        for dataset in (large, small):
            log(f"{dataset.name}: profile reads")
            reads[dataset.name] = read_latencies(dataset, rng)
        rates = throughput(large, ())
        log("writes")
        writes = write_latencies(large, rng)
        table = report(large, small, reads, rates, writes)
        RESULTS.write_text(table)
        print(table)
    finally:
        for dataset in datasets:
            dataset.services.close()
        if not args.keep:
            cluster.down(layout("gridlink"), purge=True, progress=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
