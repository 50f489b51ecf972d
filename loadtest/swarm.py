"""``make swarm``: locust distributed on staging's load generator, against its load balancer.

Steps, each announced on stdout:

1. ``gridlink staging up --seed SWARM_SEED_USERS`` (idempotent: a running
   staging is only checked, a seeded one is not seeded again);
2. ``SWARM_DELAY`` (e.g. ``1ms``) as ``tc netem`` delay on every host's link,
   or no added delay when it is empty;
3. a locust master and ``SWARM_WORKERS`` workers in the load-generator host's
   namespace, from its rendered ``locust-master.conf`` and
   ``locust-worker.conf``: ``SWARM_USERS`` users, ``SWARM_SPAWN_RATE`` per
   second, for ``SWARM_RUN_TIME``, headless, with the HTML and CSV reports
   under ``var/staging/reports/``;
4. the figures: requests, failures, p50/p95/p99 of all requests, and the
   database statements (round trips) per request, counted on every database
   host with pg_stat_statements, less what the idle deployment runs anyway
   (health checks, probes: counted for a few seconds before the swarm).

It exits with the master's status: 1 when a request failed or the p95 is
over ``LOADTEST_P95_MS`` (the locustfile decides, as in ``make loadtest``).
Staging keeps running (``gridlink staging down`` stops it).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ClusterError
from infra.seeding import Seeded
from infra.staging import driver, faults, render, statements
from infra.staging.inventory import LOAD_GENERATOR, STAGING, Inventory
from infra.staging.paths import Paths
from infra.staging.secrets import Secrets
from loadtest.run import LOCUST, LOCUSTFILE, LoadTestError, locust_environment, positive_int

MASTER_EXTRA_SECONDS = 120  # locust's own start and stop around the run time
IDLE_SECONDS = 5.0  # how long the idle deployment's own statements are counted


@dataclass(frozen=True)
class SwarmFigures:
    """What a swarm measured, from the master's CSV and the databases' counters."""

    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statements: Mapping[str, int]

    def per_request(self, kind: str) -> float:
        return self.statements.get(kind, 0) / max(1, self.requests)

    def summary(self) -> str:
        round_trips = ", ".join(
            f"{kind} {self.per_request(kind):.2f}"
            for kind in ("statements", "transaction control", "pings")
        )
        return (
            f"{self.requests:,} requests, {self.failures} failed; all requests p50 "
            f"{self.p50_ms:g} ms, p95 {self.p95_ms:g} ms, p99 {self.p99_ms:g} ms; "
            f"database round trips per request: {round_trips} "
            "(health checks and router probes at the idle rate taken off)"
        )


@dataclass(frozen=True)
class SwarmPlan:
    users: int
    spawn_rate: int
    run_time: str
    workers: int
    delay: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SwarmPlan:
        return cls(
            users=positive_int(environ, "SWARM_USERS", 50),
            spawn_rate=positive_int(environ, "SWARM_SPAWN_RATE", 10),
            run_time=environ.get("SWARM_RUN_TIME", "60s"),
            workers=positive_int(environ, "SWARM_WORKERS", 1),
            delay=environ.get("SWARM_DELAY") or None,
        )


def say(message: str) -> None:
    print(f"swarm: {message}", flush=True)


def reports_dir(paths: Paths) -> Path:
    return paths.root / "reports"


def set_delay(inventory: Inventory, delay: str | None) -> None:
    """Put ``delay`` on every host's link, or take every added delay away."""
    for host in inventory.hosts:
        if delay is None:
            faults.remove_latency(host)
        else:
            faults.add_latency(host, delay)


class Swarm:
    """One distributed locust run on the load-generator host: a master and its workers."""

    def __init__(self, paths: Paths, plan: SwarmPlan, seeded: Seeded, inventory: Inventory):
        self.paths = paths
        self.inventory = inventory
        self.host = inventory.one(LOAD_GENERATOR)
        reports = reports_dir(paths)
        reports.mkdir(parents=True, exist_ok=True)
        for old in reports.glob("swarm*"):
            old.unlink()
        swarm = render.Swarm(
            plan.users, plan.spawn_rate, plan.run_time, plan.workers, LOCUSTFILE, reports
        )
        etc = paths.etc(self.host)
        etc.mkdir(parents=True, exist_ok=True)
        self.master_config = etc / "locust-master.conf"
        self.master_config.write_text(render.locust_master_conf(inventory, self.host, swarm))
        self.worker_config = etc / "locust-worker.conf"
        self.worker_config.write_text(render.locust_worker_conf(self.host, swarm))
        # https to the load balancer, verified against the staging CA (requests reads it here).
        self.environment = locust_environment(
            seeded.users,
            seeded.password,
            REQUESTS_CA_BUNDLE=str(Secrets(paths.secrets).ca_certificate),
        )
        self.log = paths.data(self.host) / "locust.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.run_time = plan.run_time
        self.worker_count = plan.workers
        self.processes: list[subprocess.Popen[bytes]] = []
        self.idle: Counter[str] = Counter()  # statements the idle deployment ran
        self.started = 0.0

    def start(self) -> None:
        """Count the idle deployment's statements, then start the master and the workers."""
        statements.ensure_extension(self.inventory)
        statements.reset(self.inventory)
        time.sleep(IDLE_SECONDS)
        self.idle = statements.count(self.inventory)
        statements.reset(self.inventory)
        self.started = time.monotonic()
        with self.log.open("ab") as log:
            for config in [self.master_config] + [self.worker_config] * self.worker_count:
                command = ["ip", "netns", "exec", self.host.netns]
                command += [str(LOCUST), "--config", str(config)]
                self.processes.append(
                    subprocess.Popen(
                        command, env=self.environment, stdout=log, stderr=subprocess.STDOUT
                    )
                )

    def wait(self) -> tuple[int, SwarmFigures]:
        """Wait for the master; return its exit status and the figures."""
        master, *workers = self.processes
        try:
            status = master.wait(timeout=run_time_seconds(self.run_time) + MASTER_EXTRA_SECONDS)
        finally:
            self.stop()
        for worker in workers:
            worker.wait(timeout=30)
        return status, self.figures()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def figures(self) -> SwarmFigures:
        with (reports_dir(self.paths) / "swarm_stats.csv").open() as stats:
            total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
        return SwarmFigures(
            requests=int(total["Request Count"]),
            failures=int(total["Failure Count"]),
            p50_ms=float(total["50%"]),
            p95_ms=float(total["95%"]),
            p99_ms=float(total["99%"]),
            statements=dict(self._statements_of_the_load()),
        )

    def _statements_of_the_load(self) -> Counter[str]:
        """Return the statements counted since the start, less the idle rate over that time."""
        counted = statements.count(self.inventory)
        scale = (time.monotonic() - self.started) / IDLE_SECONDS
        return Counter(
            {
                kind: max(0, calls - round(self.idle[kind] * scale))
                for kind, calls in counted.items()
            }
        )


def run_time_seconds(run_time: str) -> int:
    """Turn locust's run time ('90s', '5m', '1h30m') into seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in run_time.strip():
        if char.isdigit():
            number += char
        elif char in units and number:
            total, number = total + int(number) * units[char], ""
        else:
            raise LoadTestError(
                f"SWARM_RUN_TIME must look like 90s, 5m or 1h30m (got {run_time!r})."
            )
    return total + int(number or 0)


def run_swarm(environ: Mapping[str, str]) -> int:
    plan = SwarmPlan.from_env(environ)
    seed_users = positive_int(environ, "SWARM_SEED_USERS", 10_000)
    paths = driver.default_paths()
    say("bringing staging up (idempotent)")
    seeded = driver.up(paths, seed_users=seed_users, progress=say)
    assert seeded is not None  # asked to seed
    set_delay(STAGING, plan.delay)
    say(f"added delay on every link: {plan.delay or 'none'}")
    swarm = Swarm(paths, plan, seeded, STAGING)
    say(
        f"locust on {swarm.host.name}: master + {plan.workers} worker(s), {plan.users} users "
        f"for {plan.run_time} against {STAGING.load_balancer_url} (log: {swarm.log})"
    )
    swarm.start()
    status, figures = swarm.wait()
    say(figures.summary())
    say(f"reports: {reports_dir(paths)}/swarm.html and swarm_*.csv")
    say(f"locust exited with {status}; staging keeps running (`gridlink staging down` stops it)")
    return status


def main() -> int:
    try:
        return run_swarm(os.environ)
    except (ClusterError, LoadTestError) as problem:
        print(f"swarm: {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
