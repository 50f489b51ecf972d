"""``make bench``: seed a cluster of its own, measure reads, throughput and writes, write a table.

Run from the project root as ``python -m bench.bench`` (``make bench``). It
starts the bench cluster (primary 25432, replica 25433, Redis 26379, data in
``var/bench``; ``GRIDLINK_BENCH_PG_PORT`` and ``GRIDLINK_BENCH_REDIS_PORT``
move it, so two checkouts can run it side by side), seeds two datasets into
two databases of it (1,000,000 and 10,000 links; ``GRIDLINK_BENCH_USERS``
sets the large one's users, 100 links each, for a quicker run on a small
machine: the report says which size it measured), and measures:

- profile reads in process through ``falcon.testing.TestClient`` (as the seed
  project's Django test client did), from the cache and from the replica,
  with the SQL statements each read sent;
- profile reads through gunicorn with ``wrk`` (requests/s, p50/p99, share
  answered from the cache, worker CPU per answer): Gridlink in the steady
  state as deployed (Redis flushed, one pass of anonymous reads, no
  ``--warm``, each process's near cache at its default size) and with its
  near cache off (every read through Redis), and in the steady state
  while another user writes 5 and 50 times a second
  (``bench/live_writer.py``), beside a Falcon app doing one Redis ``HMGET``
  and one answering a constant body of the same size, under the same
  gunicorn configuration, in the same run, with what Redis answered per
  read (commands, ``HMGET``s, bytes); a hot set of profiles with each
  process's near cache on and off; each app beside its yardstick, served at
  once and read in turns (``measure_group``); then the targets;
- where a cached read's CPU goes, in a process of its own
  (``bench/hit_profile.py``);
- write latency: create a link, rename a grid (each rebuilds the profile
  document and writes it through to the cache).

Progress goes to stderr; the table to stdout and ``bench/results.md``.
``--tune`` measures throughput under a few gunicorn configurations instead and
writes ``bench/tuning.md``. Timings are a benchmark's, never a test's.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon.testing
import redis
from sqlalchemy import text

from bench.live_writer import LiveWriter
from gridlink.app import create_app
from gridlink.cache.positions import applied_key
from gridlink.cache.stream import ChangeRelay
from gridlink.ops.migrate import migrate
from gridlink.ops.seed import SeedPlan, SeedResult, seed, warm_profiles
from gridlink.project import PROJECT_ROOT, VAR
from gridlink.services import Services
from gridlink.settings import Settings
from infra import cluster
from infra.diagnostics import count_queries, wait_for_replica
from infra.processes import free_port
from infra.serving import GUNICORN_CONF, ApiServer, environment_for, serve

BENCH_ROOT = VAR / "bench"
# The wrk script and the constant body: beside the cluster, which owns its directory.
WORK_DIR = VAR / "bench-work"
RESULTS = Path(__file__).with_name("results.md")
TUNING = Path(__file__).with_name("tuning.md")
PG_PORT = int(os.environ.get("GRIDLINK_BENCH_PG_PORT", "25432"))
REDIS_PORT = int(os.environ.get("GRIDLINK_BENCH_REDIS_PORT", "26379"))
LARGE = SeedPlan(users=int(os.environ.get("GRIDLINK_BENCH_USERS", "10000")), grids=10, links=10)
SMALL = SeedPlan(users=100, grids=10, links=10)
SOURCE = "X-Gridlink-Read-Source"
PASSWORD = "bench password"  # noqa: S105 - the seeded test users' password, not a secret
READS = 2000
# The hot set: profiles every read is drawn from in the near-cache rows (about 3 MB).
HOT_PROFILES = 100
WRITES = 200
WRK_CONNECTIONS = 32
WRK_ROUNDS = 4
# Each app of a group is read for TURNS turns of TURN_SECONDS, the apps in turn
# (measure_group): as long in all as one 10 s run, and every app's turns spread
# over the same stretch of time as its yardstick's. Every other cycle runs in the
# reverse order, so no app always comes first.
TURNS = 5
TURN_SECONDS = 2
WARM_UP_SECONDS = 3
WRK_TIMEOUT = "10s"
# Every measured server, whatever its app: each worker listens on a socket of its
# own and the kernel spreads wrk's connections across them by hash. With the one
# socket gunicorn shares by default, whichever worker wakes first takes most of a
# run's 32 long-lived connections (per-worker CPU 0/959/0/538 ticks in one run):
# one process then holds most of the load on its one interpreter lock, and single
# rounds moved between 0.4 and 1.4 of their yardstick, by chance, not by app.
MEASURED_OPTIONS = ("--reuse-port",)
# The yardsticks (bench/constant_app.py), as gunicorn loads them.
REDIS_APP = "bench.constant_app:get_redis_app()"
CONSTANT_APP = "bench.constant_app:get_app()"
# The seed project's Django design in the same setup, as issue 11 reports it (176-242 req/s).
DJANGO_REQUESTS_PER_SECOND = 210
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
        # Every read through Redis, unless an app below turns the near cache on.
        near_cache_bytes=0,
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
    # The seed's documents reach Redis through the change relay: relay them now, so
    # each measurement starts from the cache it flushes or warms, not a relay catching up.
    ChangeRelay(settings.database_url, services.cache).drain()
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
    ticks = cpu_ticks(postmaster, with_reaped=True)
    # A child that exited meanwhile counts 0 here: the postmaster's reaped time has it.
    ticks += sum(cpu_ticks(int(child)) for child in children)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int, *, with_reaped: bool = False) -> int:
    """Return the CPU ticks of ``pid`` (and of its reaped children if asked); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    # utime, stime, then cutime, cstime (fields 14-17 of proc(5)).
    return sum(int(value) for value in fields[11 : 15 if with_reaped else 13])


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
    settings: Settings,
    options: Sequence[str],
    app: str | None = None,
    environment: Mapping[str, str] | None = None,
    workers: int = (os.cpu_count() or 2) * 2,  # as infra/gunicorn.conf.py says
) -> Iterator[ApiServer]:
    port = free_port()
    server = serve(
        settings,
        bind=f"127.0.0.1:{port}",
        workers=workers,
        environment=environment_for(settings, **(environment or {})),
        app=app,
        options=options,
        pid_file=WORK_DIR / f"gunicorn-{port}.pid",  # the writers' server runs beside
        log=Path(os.devnull),  # a log line per request would be measured too
    )
    server.start(log)
    try:
        yield server
    finally:
        server.stop(log)


@dataclass(frozen=True)
class Throughput:
    """What one wrk run measured: rate, latency, where answers came from, worker CPU."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    from_cache: int
    from_elsewhere: int
    # Requests wrk gave up on (no answer in WRK_TIMEOUT): reported, not hidden.
    timeouts: int
    # CPU seconds the gunicorn workers spent per answer: steadier than the
    # rate on a shared machine, whose neighbours take cores at random.
    worker_cpu_us: float
    # What Redis answered during the run (every client's: the relay's and a live
    # writer's too), per answer: commands processed, bytes sent.
    redis_commands: float = 0.0
    redis_bytes: float = 0.0
    # Of those, HMGETs (profile reads from Redis) and PINGs (near caches) per answer.
    redis_hmgets: float = 0.0
    redis_pings: float = 0.0
    # The rate another user's writes kept during the run (0: none).
    writes_per_second: float = 0.0

    @property
    def hit_ratio(self) -> float:
        return self.from_cache / max(1, self.from_cache + self.from_elsewhere)


def median_throughput(runs: Sequence[Throughput]) -> Throughput:
    """The median of each figure over ``runs`` (interleaved rounds of one app)."""
    return Throughput(
        statistics.median(run.requests_per_second for run in runs),
        statistics.median(run.p50_ms for run in runs),
        statistics.median(run.p99_ms for run in runs),
        sum(run.from_cache for run in runs),
        sum(run.from_elsewhere for run in runs),
        sum(run.timeouts for run in runs),
        statistics.median(run.worker_cpu_us for run in runs),
        statistics.median(run.redis_commands for run in runs),
        statistics.median(run.redis_bytes for run in runs),
        statistics.median(run.redis_hmgets for run in runs),
        statistics.median(run.redis_pings for run in runs),
        statistics.median(run.writes_per_second for run in runs),
    )


@dataclass(frozen=True)
class Rounds:
    """Every app's ``wrk`` runs, round by round: ``runs[app][round]``."""

    runs: list[list[Throughput]]

    def medians(self) -> list[Throughput]:
        return [median_throughput(runs) for runs in self.runs]

    def ratios(self, app: int, yardstick: int) -> list[float]:
        """``app``'s requests/s over ``yardstick``'s, round by round.

        Within a group the two were read in turns over the same stretch of time
        (``measure_group``), so a neighbour that slows the shared machine slows
        both: a ratio within a round is steadier than one of medians taken
        minutes apart. Apps of two groups ran minutes apart at most.
        """
        return [
            run.requests_per_second / other.requests_per_second
            for run, other in zip(self.runs[app], self.runs[yardstick], strict=True)
        ]

    def ratio(self, app: int, yardstick: int) -> float:
        """The median of ``ratios``."""
        return statistics.median(self.ratios(app, yardstick))

    def spread(self, app: int, yardstick: int) -> str:
        """The lowest and highest of ``ratios``, for the report."""
        ratios = self.ratios(app, yardstick)
        return f"{min(ratios):.2f}-{max(ratios):.2f}"


def redis_counters(client: redis.Redis) -> tuple[int, int, int, int]:
    """Return Redis's commands processed, bytes sent, HMGETs and PINGs so far (``INFO``)."""
    stats: dict[str, Any] = client.info("stats")
    commands: dict[str, Any] = client.info("commandstats")
    return (
        int(stats["total_commands_processed"]),
        int(stats["total_net_output_bytes"]),
        int(commands.get("cmdstat_hmget", {}).get("calls", 0)),
        int(commands.get("cmdstat_ping", {}).get("calls", 0)),
    )


def run_wrk(
    wrk: str,
    server: ApiServer,
    script: Path,
    redis_client: redis.Redis,
    seconds: int = TURN_SECONDS,
) -> Throughput:
    """Run wrk against ``server`` (refuse any error answer) and say what it measured."""
    workers_before = sum(cpu_ticks(pid) for pid in server.worker_pids())
    commands_before, bytes_before, hmgets_before, pings_before = redis_counters(redis_client)
    done = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{WRK_CONNECTIONS}",
            f"-d{seconds}s",
            f"--timeout={WRK_TIMEOUT}",
            "-s",
            str(script),
            f"http://{server.address}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    workers_ticks = sum(cpu_ticks(pid) for pid in server.worker_pids()) - workers_before
    commands_after, bytes_after, hmgets_after, pings_after = redis_counters(redis_client)
    cpu_seconds = workers_ticks / os.sysconf("SC_CLK_TCK")
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", done.stdout
    )
    connect, read, write, timeouts = (int(n) for n in socket.groups()) if socket else (0,) * 4
    failed = re.search(r"Non-2xx or 3xx responses: \d+", done.stdout)
    if failed or connect or read or write:
        raise RuntimeError(f"wrk saw errors: {done.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    counted = re.search(r"bench: p50=(\d+) p99=(\d+) cache=(\d+) elsewhere=(\d+)", done.stdout)
    if rate is None or counted is None:
        raise RuntimeError(f"wrk said: {done.stdout}")
    p50, p99, cache, elsewhere = (int(figure) for figure in counted.groups())
    answers = max(1, cache + elsewhere)
    return Throughput(
        float(rate.group(1)),
        p50 / 1000,
        p99 / 1000,
        cache,
        elsewhere,
        timeouts,
        cpu_seconds / answers * 1e6,
        # The two INFOs are two commands and their answers: left in, they are noise.
        (commands_after - commands_before) / answers,
        (bytes_after - bytes_before) / answers,
        (hmgets_after - hmgets_before) / answers,
        (pings_after - pings_before) / answers,
    )


def wrk_script(seeded: SeedResult, hot: bool = False) -> Path:
    """A wrk script: a random seeded user's profile per request; counts where answers came from.

    ``hot``: drawn from the first ``HOT_PROFILES`` users only.
    """
    last = min(seeded.last, seeded.first + HOT_PROFILES - 1) if hot else seeded.last
    script = WORK_DIR / ("hot-profiles.lua" if hot else "profiles.lua")
    script.write_text(
        f"""math.randomseed(os.time())
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) cache = 0; elsewhere = 0 end
function request()
  local number = math.random({seeded.first}, {last})
  return wrk.format("GET", "/api/users/test_user_" .. number .. "/")
end
function response(status, headers, body)
  local source = headers["x-gridlink-read-source"] or headers["{SOURCE}"]
  if source == "cache" then cache = cache + 1 else elsewhere = elsewhere + 1 end
end
function done(summary, latency, requests)
  local c, e = 0, 0
  for _, thread in ipairs(threads) do
    c = c + thread:get("cache")
    e = e + thread:get("elsewhere")
  end
  io.write(string.format("bench: p50=%d p99=%d cache=%d elsewhere=%d\\n",
    latency:percentile(50), latency:percentile(99), c, e))
end
"""
    )
    return script


def await_stream_position(dataset: Dataset, timeout: float = 15) -> None:
    """Wait until a change relay has set the stream's applied position in Redis."""
    cache = dataset.services.cache
    if not cluster.wait_until(
        lambda: cache.client.exists(applied_key(cache.keyspace())) == 1, timeout
    ):
        raise SystemExit(f"no change relay set the stream's position within {timeout:.0f} s")


def read_every_profile(dataset: Dataset, server: ApiServer, connections: int = 8) -> None:
    """Read each seeded profile once through ``server``, anonymously, as a cold start would."""
    usernames = [
        dataset.seeded.username(n) for n in range(dataset.seeded.first, dataset.seeded.last + 1)
    ]
    shares = [usernames[index::connections] for index in range(connections)]

    def read(share: list[str]) -> int:
        connection = http.client.HTTPConnection(server.address, timeout=30)
        try:
            for username in share:
                connection.request("GET", f"/api/users/{username}/")
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"warm-up read of {username}: {answer.status}")
        finally:
            connection.close()
        return len(share)

    log(f"warm-up pass: reading {len(usernames):,} profiles once")
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(read, shares))


@dataclass(frozen=True)
class App:
    """One app that ``throughput`` measures, and the group it is measured in."""

    label: str
    wsgi_app: str | None  # None: Gridlink itself
    # The apps of one group are served at once and measured in turns (``measure_group``).
    group: str
    # Another user's writes a second, through a Gridlink server of their own, from
    # before the group's pass (or warm-up) to its last turn (0: an idle system).
    writes_per_second: int = 0
    # Each process's near cache at its default size (else off: every read asks Redis).
    near_cache: bool = False
    # Reads drawn from the first HOT_PROFILES profiles only.
    hot: bool = False
    # This app's server makes the group's pass: after a FLUSHALL, one anonymous read of
    # every profile through it (the steady state of a cache that keeps what it reads);
    # the other apps of the group read what the pass stored. In a group without one,
    # every profile is stored in Redis first (``warm_profiles``).
    makes_the_pass: bool = False


# Each of Gridlink's rows is in a group with its yardstick (the one-``HMGET`` app under
# the same writes, or the constant-body app).
APPS = (
    App(
        "Gridlink, steady state (Redis flushed, one pass of reads), near cache on",
        None,
        "idle",
        near_cache=True,
        makes_the_pass=True,
    ),
    App("Falcon app doing one Redis `HMGET` of the same entry", REDIS_APP, "idle"),
    App("Gridlink, every profile in Redis (the pass's), near cache off", None, "idle"),
    App(f"Gridlink, a hot set of {HOT_PROFILES} profiles, near cache off", None, "idle", hot=True),
    App(
        f"Gridlink, a hot set of {HOT_PROFILES} profiles, near cache on",
        None,
        "hot set",
        near_cache=True,
        hot=True,
    ),
    App("Falcon app answering a constant body of the same size", CONSTANT_APP, "hot set"),
    App(
        "Gridlink, steady state, near cache on, another user writing 5 times a second",
        None,
        "5 writes/s",
        5,
        near_cache=True,
        makes_the_pass=True,
    ),
    App(
        "Falcon app doing one Redis `HMGET`, another user writing 5 times a second",
        REDIS_APP,
        "5 writes/s",
        5,
    ),
    App(
        "Gridlink, steady state, near cache on, another user writing 50 times a second",
        None,
        "50 writes/s",
        50,
        near_cache=True,
        makes_the_pass=True,
    ),
    App(
        "Falcon app doing one Redis `HMGET`, another user writing 50 times a second",
        REDIS_APP,
        "50 writes/s",
        50,
    ),
)
(
    STEADY,
    ONE_HMGET,
    STORED,
    HOT_REDIS,
    HOT_NEAR,
    CONSTANT,
    WRITES_5,
    ONE_HMGET_5,
    WRITES_50,
    ONE_HMGET_50,
) = range(len(APPS))
# The writes a server of their own serves: one worker keeps 50 a second.
WRITER_WORKERS = 1


def yardstick(app: App) -> int:
    """The one-``HMGET`` app's row under the same writes as ``app``: its ratio's denominator."""
    return {0: ONE_HMGET, 5: ONE_HMGET_5, 50: ONE_HMGET_50}[app.writes_per_second]


def groups() -> dict[str, list[int]]:
    """The indexes of ``APPS`` in each group, in ``APPS``' order."""
    grouped: dict[str, list[int]] = {}
    for index, app in enumerate(APPS):
        grouped.setdefault(app.group, []).append(index)
    return grouped


def sign_up_writer(dataset: Dataset) -> tuple[str, str]:
    """Sign up the live writer (a user ``wrk`` never reads), in process; return token and grid."""
    username = f"live_writer_{os.getpid()}"
    signed_up = dataset.client.simulate_post(
        "/api/auth/signup/",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    if signed_up.status_code != 201:
        raise RuntimeError(f"live writer sign-up: {signed_up.status_code} {signed_up.text[:200]}")
    token: str = signed_up.json["token"]
    grid = dataset.client.simulate_post(
        "/api/grids/", json={"title": "Live"}, headers={"Authorization": f"Token {token}"}
    )
    if grid.status_code != 201:
        raise RuntimeError(f"live writer grid: {grid.status_code} {grid.text[:200]}")
    slug: str = grid.json["slug"]
    return token, slug


@dataclass(frozen=True)
class Bench:
    """What every group's measurement needs: the dataset, wrk, its scripts, the writer."""

    dataset: Dataset
    wrk: str
    scripts: dict[bool, Path]  # by ``App.hot``
    body: Path  # the constant-body app's answer
    writer: tuple[str, str]  # the live writer's token and grid
    options: Sequence[str]


def throughput(dataset: Dataset, options: Sequence[str]) -> Rounds:
    """Measure each of ``APPS`` in ``WRK_ROUNDS`` rounds, each round every group in turn."""
    body = WORK_DIR / "constant-body.json"
    first = dataset.seeded.username(dataset.seeded.first)
    body.write_bytes(dataset.client.simulate_get(f"/api/users/{first}/").content)
    bench = Bench(
        dataset,
        ensure_wrk(),
        {hot: wrk_script(dataset.seeded, hot) for hot in (False, True)},
        body,
        sign_up_writer(dataset),
        options,
    )
    runs: list[list[Throughput]] = [[] for _ in APPS]
    for round_ in range(WRK_ROUNDS):
        log(f"wrk round {round_ + 1}/{WRK_ROUNDS} ({' '.join(options) or 'default options'})")
        for name, members in groups().items():
            log(f"  group: {name}")
            for index, run in zip(members, measure_group(bench, members), strict=True):
                runs[index].append(run)
                log(
                    f"    {run.requests_per_second:,.0f} requests/s, {run.worker_cpu_us:,.0f} us "
                    f"of worker CPU per answer, {run.hit_ratio:.1%} from the cache: "
                    f"{APPS[index].label}"
                )
    return Rounds(runs)


def measure_group(bench: Bench, members: list[int]) -> list[Throughput]:
    """Serve the apps ``members`` names at once; measure them in ``TURNS`` interleaved turns.

    Each app's server is its own, started fresh, and warmed by ``WARM_UP_SECONDS``
    of ``wrk`` (not counted). Then ``wrk`` reads through each in turn for
    ``TURN_SECONDS``, every other cycle in the reverse order: a neighbour that
    slows the shared machine for a while slows every app of the group alike,
    whose ratios are then of the apps, not of the moments they ran in.
    """
    apps = [APPS[index] for index in members]
    redis_client = bench.dataset.services.redis
    with ExitStack() as stack:
        servers = [stack.enter_context(app_server(bench, app)) for app in apps]
        redis_client.flushall()
        if any(app.makes_the_pass for app in apps):
            # The flush took the stream's position with it; fills are proved (and
            # stay) once a change relay has set it again (<= 0.5 s).
            await_stream_position(bench.dataset)
        else:
            warm_profiles(bench.dataset.services, bench.dataset.user_ids)
        rate = apps[0].writes_per_second
        writes_to = stack.enter_context(writers_server(bench.dataset, bench.options, rate))
        token, grid = bench.writer
        writer = stack.enter_context(live_writes(writes_to, token, grid, rate))
        for app, server in zip(apps, servers, strict=True):
            if app.makes_the_pass:
                read_every_profile(bench.dataset, server)
        for app, server in zip(apps, servers, strict=True):
            # Every worker booted (imports, pools) and served before the clock starts.
            run_wrk(bench.wrk, server, bench.scripts[app.hot], redis_client, WARM_UP_SECONDS)
        turns: list[list[Throughput]] = [[] for _ in apps]
        order = list(range(len(apps)))
        for cycle in range(TURNS):
            for position in order if cycle % 2 == 0 else reversed(order):
                app, server = apps[position], servers[position]
                script = bench.scripts[app.hot]
                turns[position].append(run_wrk(bench.wrk, server, script, redis_client))
    written = writer.writes_per_second if writer else 0.0  # the rate it kept, once stopped
    return [dataclasses.replace(combined(runs), writes_per_second=written) for runs in turns]


@contextmanager
def app_server(bench: Bench, app: App) -> Iterator[ApiServer]:
    """A gunicorn server of ``app``'s own, as measured (``MEASURED_OPTIONS``)."""
    environment = {"BENCH_CONSTANT_BODY": str(bench.body)}
    if app.near_cache:
        environment["GRIDLINK_NEAR_CACHE_BYTES"] = str(Settings().near_cache_bytes)
    options = (*MEASURED_OPTIONS, *bench.options)
    with gunicorn(bench.dataset.settings, options, app.wsgi_app, environment) as server:
        yield server


def combined(turns: Sequence[Throughput]) -> Throughput:
    """One app's turns as one run: sums, rates over the whole time, per-answer figures
    weighted by answers, latency percentiles the median of the turns'."""
    answers = [max(1, turn.from_cache + turn.from_elsewhere) for turn in turns]
    total = sum(answers)

    def per_answer(figure: Callable[[Throughput], float]) -> float:
        return sum(figure(turn) * count for turn, count in zip(turns, answers, strict=True)) / total

    return Throughput(
        statistics.mean(turn.requests_per_second for turn in turns),  # turns of equal length
        statistics.median(turn.p50_ms for turn in turns),
        statistics.median(turn.p99_ms for turn in turns),
        sum(turn.from_cache for turn in turns),
        sum(turn.from_elsewhere for turn in turns),
        sum(turn.timeouts for turn in turns),
        per_answer(lambda turn: turn.worker_cpu_us),
        per_answer(lambda turn: turn.redis_commands),
        per_answer(lambda turn: turn.redis_bytes),
        per_answer(lambda turn: turn.redis_hmgets),
        per_answer(lambda turn: turn.redis_pings),
    )


@contextmanager
def writers_server(
    dataset: Dataset, options: Sequence[str], writes_per_second: int
) -> Iterator[str | None]:
    """A Gridlink server of their own for a group's live writes (None: no writes).

    Every live-writer row, Gridlink's and the one-``HMGET`` app's, is read
    while the same writes go through one, so the writes cost both the same:
    the comparison is of the reads alone, under the same write load on the
    same machine.
    """
    if not writes_per_second:
        yield None
        return
    with gunicorn(dataset.settings, options, workers=WRITER_WORKERS) as server:
        yield server.address


@contextmanager
def live_writes(
    address: str | None, token: str, grid: str, per_second: int
) -> Iterator[LiveWriter | None]:
    """Run the live writer against the server at ``address`` for the block (None: 0 writes/s)."""
    if address is None:
        yield None
        return
    with LiveWriter(address, token, grid, per_second) as writer:
        yield writer


def hit_path_profile(dataset: Dataset) -> dict[str, Any]:
    """Run ``bench/hit_profile.py`` in a process of its own against the cached dataset."""
    warm_profiles(dataset.services, dataset.user_ids)
    log("hit path: CPU per request in process, and its profile")
    environment = environment_for(
        dataset.settings,
        BENCH_CONSTANT_BODY=str(WORK_DIR / "constant-body.json"),
        BENCH_FIRST_USER=str(dataset.seeded.first),
        BENCH_LAST_USER=str(dataset.seeded.last),
        BENCH_HOT_PROFILES=str(HOT_PROFILES),
    )
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # it makes a fresh one
    done = subprocess.run(
        [sys.executable, "-m", "bench.hit_profile"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, Any] = json.loads(done.stdout)
    return measured


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
    measured: Rounds,
    profile: dict[str, Any],
    writes: tuple[Latency, Latency],
) -> str:
    seed_phases = ", ".join(f"{n} {s:.1f} s" for n, s in large.seeded.phase_seconds.items())
    lines = [
        "# Gridlink benchmark (`make bench`)",
        "",
        f"Measured {machine()}.",
        "",
        f"Large dataset: {LARGE.users:,} users, {LARGE.total_links:,} links"
        + (
            f" (`GRIDLINK_BENCH_USERS={LARGE.users}`; `make bench` seeds 10,000 users, "
            "1,000,000 links, without it)."
            if "GRIDLINK_BENCH_USERS" in os.environ
            else "."
        ),
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
    lines += [
        "",
        *throughput_section(large, measured),
        "",
        *targets_section(large, reads[large.name][1], measured),
        "",
        *profile_section(profile),
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


def throughput_section(large: Dataset, measured: Rounds) -> list[str]:
    rates = measured.medians()
    body_bytes = len(WORK_DIR.joinpath("constant-body.json").read_bytes())
    return [
        "## Profile reads through gunicorn (`wrk`)",
        "",
        f"gunicorn with `infra/gunicorn.conf.py` ({gunicorn_summary()}) and "
        f"`{' '.join(MEASURED_OPTIONS)}` (each worker its own listening socket, so the kernel "
        "spreads the connections by a hash of their addresses: unevenly, but no worker is left "
        "without; with the one shared socket, the worker that wakes first takes most of them, "
        "and a round measured that chance more than the app), `wrk -t2 "
        f"-c{WRK_CONNECTIONS}`, a random one of {large.seeded.users:,} profiles per request "
        f"({body_bytes:,}-byte body). The apps are measured in groups "
        f"({', '.join(groups())}), each of Gridlink's rows in the group of its yardstick: the "
        "apps of a group are served at once, each by a fresh server of its own warmed by "
        f"{WARM_UP_SECONDS} s of `wrk` (not counted), then read in turns, {TURNS} turns of "
        f"`wrk -d{TURN_SECONDS}s` per app, the apps one after the other, every other cycle in "
        "the reverse order. So an app and its yardstick are measured over the same stretch "
        f"of time ({TURNS * TURN_SECONDS} s per app of a group), on a machine whose "
        "neighbours change its speed by the second: measured one after the other in runs of "
        "10 s, single rounds of the same code ranged from 0.74 to 1.10 of the yardstick. "
        f"{WRK_ROUNDS} rounds in one run, each measuring every group; each figure is the "
        "median over the rounds, each ratio the median of the ratios within a round. A group "
        "starts from `FLUSHALL`: with a steady-state row, once a change relay has set the "
        "stream's position again (the flush took it), one anonymous read of every profile "
        "through that row's server (it fills the cache), which the group's other apps read "
        "too; without one (the hot set's group), every profile stored first. In the "
        "live-writer groups another user (`bench/live_writer.py`, not one of the profiles "
        "read) renames a grid at a fixed rate from before the pass to the last turn, through "
        "a Gridlink server of its own (one worker): each write commits on the primary, is "
        "written through, and moves the change stream's applied position. The one-`HMGET` app "
        "is measured under the same writes, and each row's ratio to it is to its row with the "
        "same writes: the writes cost both the same two cores, so the ratio is of the reads "
        "alone. Worker CPU is what the measured server's gunicorn workers spent per answer "
        "(`/proc`). Redis commands (of them `HMGET`s and `PING`s) and bytes are `INFO` deltas "
        "over the app's turns (`total_commands_processed`, `cmdstat_hmget`, `cmdstat_ping`, "
        "`total_net_output_bytes`: every client's, the group's other servers' idle relays and "
        "near caches, the writer's included) per answer. The rows that say the near cache is "
        f"on run it at its default size ({Settings().near_cache_bytes // 2**20} MiB per "
        "process), as deployed: the steady states, and the hot set's row beside the "
        "constant-body app. The others run it off (`GRIDLINK_NEAR_CACHE_BYTES=0`: every read "
        "asks Redis), so that 'every profile in Redis' and the hot set's other row measure the "
        f"path through Redis alone; the hot-set rows read a random one of the first "
        f"{HOT_PROFILES} profiles.",
        "",
        "| app | writes/s | requests/s | p50 | p99 | from the cache | worker CPU per answer "
        "| Redis commands per answer (`HMGET`s; `PING`s) | Redis bytes sent per answer "
        f"| no answer in {WRK_TIMEOUT} | ÷ one-`HMGET` app (same writes) "
        "| ÷ constant-body app |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {app.label} | {run.writes_per_second:.1f} | {run.requests_per_second:,.0f} "
            f"| {run.p50_ms:.2f} ms | {run.p99_ms:.2f} ms | {run.hit_ratio:.1%} "
            f"| {run.worker_cpu_us:,.0f} us | {run.redis_commands:.3f} ({run.redis_hmgets:.3f}; "
            f"{run.redis_pings:.3f}) "
            f"| {run.redis_bytes:,.0f} | {run.timeouts} "
            f"| {measured.ratio(index, yardstick(app)):.2f} "
            f"| {measured.ratio(index, CONSTANT):.2f} |"
            for index, (app, run) in enumerate(zip(APPS, rates, strict=True))
        ),
    ]


def memory_hit_commands(run: Throughput) -> float:
    """Redis commands per answer from memory, but the HMGETs and the near caches' PINGs."""
    others = run.redis_commands - run.redis_hmgets - run.redis_pings
    return max(0.0, others) / max(1e-9, 1 - run.redis_hmgets)


def targets_section(large: Dataset, miss: Latency, measured: Rounds) -> list[str]:
    """Issues 11's and 21's targets beside what this run measured."""
    rates = measured.medians()

    def share(index: int) -> float:
        """Row ``index``'s requests/s over the one-HMGET app's under the same writes."""
        return measured.ratio(index, yardstick(APPS[index]))

    def shown(index: int, other: int) -> str:
        """The ratio of row ``index`` to row ``other``, its rounds' spread, and by worker CPU."""
        return (
            f"{measured.ratio(index, other):.2f} (rounds {measured.spread(index, other)}; "
            f"worker CPU {rates[other].worker_cpu_us / rates[index].worker_cpu_us:.2f})"
        )

    rows = []
    for index, name, same_writes in (
        (STEADY, "steady state", ""),
        (WRITES_5, "steady state, another user writing 5/s", ", the same writes"),
        (WRITES_50, "steady state, another user writing 50/s", ", the same writes"),
    ):
        run, ratio = rates[index], share(index)
        rows += [
            (f"hit ratio, {name}", f"{run.hit_ratio:.1%}", "≥ 99 %", run.hit_ratio >= 0.99),
            (
                f"{name} / one-`HMGET` app{same_writes}",
                shown(index, yardstick(APPS[index])),
                "≥ 0.9",
                ratio >= 0.9,
            ),
        ]
    steady = rates[STEADY]
    near, far = rates[HOT_NEAR], rates[HOT_REDIS]
    near_share = measured.ratio(HOT_NEAR, CONSTANT)
    rows += [
        (
            f"hot set of {HOT_PROFILES}, near cache on / constant-body app",
            shown(HOT_NEAR, CONSTANT),
            "≥ 0.8",
            near_share >= 0.8,
        ),
        (
            "hot set, near cache on: answers from memory (those that sent no `HMGET`); Redis "
            "commands per memory hit, besides the `HMGET`s of the other reads and the near "
            "caches' `PING`s (the relay's loop is all that is left)",
            f"{1 - near.redis_hmgets:.1%}; {memory_hit_commands(near):.4f}",
            "0 per memory hit",
            memory_hit_commands(near) < 0.01,
        ),
        (
            "Redis bytes sent per read, hot set: near cache off → on",
            f"{far.redis_bytes:,.0f} → {near.redis_bytes:,.0f}",
            "",
            near.redis_bytes < far.redis_bytes / 10,
        ),
        (
            "every profile in Redis, near cache off / one-`HMGET` app (the hit path alone)",
            shown(STORED, ONE_HMGET),
            "≥ 0.9",
            share(STORED) >= 0.9,
        ),
        (
            f"steady state / the seed's Django design ({DJANGO_REQUESTS_PER_SECOND} req/s "
            "as reported, 176-242)",
            f"{steady.requests_per_second / DJANGO_REQUESTS_PER_SECOND:.1f}x",
            "≥ 20x",
            steady.requests_per_second >= 20 * DJANGO_REQUESTS_PER_SECOND,
        ),
        (
            f"cache-miss p50 (in process, {large.name}, from the replica)",
            f"{miss.percentile(0.5) * 1000:.2f} ms",
            "≤ 2 ms",
            miss.percentile(0.5) <= 0.002,
        ),
    ]
    return [
        "## Targets (issues 11 and 21)",
        "",
        "| figure | measured | target | met |",
        "| --- | ---: | ---: | --- |",
        *(
            f"| {name} | {figure} | {target} | {'yes' if met else '**no**'} |"
            for name, figure, target, met in rows
        ),
    ]


def profile_section(profile: dict[str, Any]) -> list[str]:
    cpu: dict[str, float] = profile["cpu_us"]
    shares: dict[str, float] = profile["shares"]
    counted: dict[str, float] = profile["instructions"]
    return [
        "## Where a cached read's time goes (in process, `bench/hit_profile.py`)",
        "",
        "Each app called as gunicorn calls it, for random cached profiles, with the "
        "workers' metrics (prometheus multiprocess files) and a JSON log line written to "
        "/dev/null, each by the thread that takes them off the request's queue (its CPU is "
        "in the figures; cProfile's shares are of the request's own thread). Each CPU figure "
        f"is the median of {profile['rounds']} rounds of {profile['requests']:,} requests per "
        "app, every round measuring the apps in a shuffled order. Instructions are counted "
        f"by callgrind over {profile['counted']:,} requests per app, in a process of its own "
        "(less one that serves none): the same for the same code however busy the machine, "
        "they compare the apps without its noise. Neither includes gunicorn's own work for "
        "each request (parsing it, sending the answer: the same for every app, but for "
        "Gridlink's 5 more response headers), which `wrk`'s table above does.",
        "",
        "| app | CPU per request | instructions per request | one-HMGET app's ÷ this |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {label} | {spent:,.0f} us | {instructions(counted, label)} |"
            for label, spent in cpu.items()
        ),
        "",
        "Gridlink's request under cProfile (which inflates small calls):",
        "",
        "| part | share of the request |",
        "| --- | ---: |",
        *(f"| {label} | {share:.0%} |" for label, share in shares.items()),
    ]


def instructions(counted: dict[str, float], label: str) -> str:
    """Two cells: an app's instructions per request, and the one-``HMGET`` app's over them."""
    if label not in counted:
        return "valgrind not installed | "
    return f"{counted[label] / 1000:,.0f} k | {counted['one-HMGET app'] / counted[label]:.2f}"


def tune(large: Dataset) -> str:
    lines = [
        "# Gunicorn tuning (`python -m bench.bench --tune`)",
        "",
        f"Measured {machine()}. Profile reads, `wrk -t2 -c{WRK_CONNECTIONS}`, "
        f"{TURNS} turns of {TURN_SECONDS} s per app in each of {WRK_ROUNDS} rounds (as "
        "`make bench` measures them), requests/s, the median of the rounds; every server "
        f"with `{' '.join(MEASURED_OPTIONS)}` besides the options of its row.",
        "",
        "| gunicorn | " + " | ".join(app.label for app in APPS) + " | ratio |",
        "| --- | " + "---: | " * len(APPS) + "---: |",
    ]
    for label, options in TUNINGS.items():
        measured = throughput(large, options)
        cells = " | ".join(f"{run.requests_per_second:,.0f}" for run in measured.medians())
        lines.append(f"| {label} | {cells} | {measured.ratio(STEADY, CONSTANT):.2f} |")
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
        large = prepare(f"{LARGE.total_links:,} links", "gridlink", 0, LARGE)
        datasets.append(large)
        if args.tune:
            table = tune(large)
            TUNING.write_text(table)
            print(table)
            return 0
        small = prepare(f"{SMALL.total_links:,} links", "gridlink_small", 1, SMALL)
        datasets.append(small)
        reads = {}
        for dataset in (large, small):
            log(f"{dataset.name}: profile reads")
            reads[dataset.name] = read_latencies(dataset, rng)
        measured = throughput(large, ())
        profile = hit_path_profile(large)
        log("writes")
        writes = write_latencies(large, rng)
        table = report(large, small, reads, measured, profile, writes)
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
