"""The locustfile, run headless for a few seconds against real gunicorn and the test cluster.

Each run is a real ``locust`` process (as ``make loadtest`` starts it) with a
handful of users. The users it reads and logs in as are seeded here by
``gridlink seed``'s code, numbered on from the session's other test users.
Runs that should pass get a generous p95 threshold: these tests check the
load test's mechanics, not the server's speed.
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gridlink.commands.accounts import set_admin
from gridlink.commands.unit_of_work import run_command
from gridlink.models import User
from gridlink.ops.seed import SeedPlan, SeedResult, seed
from gridlink.services import Services
from gridlink.settings import Settings
from infra.processes import free_port
from loadtest.run import LOCUST, LOCUSTFILE, locust_command, locust_environment
from tests.support.servers import call, serving

PROFILE = "/api/users/[username]/"
SEEDED_USERS = 3
RUN_SECONDS = 5
GENEROUS_P95_MS = "60000"


@dataclass(frozen=True)
class LocustRun:
    returncode: int
    output: str
    stats: dict[tuple[str, str], dict[str, str]]  # (method, name) -> the CSV row

    def requests(self, method: str, name: str) -> int:
        row = self.stats.get((method, name))
        return int(row["Request Count"]) if row else 0


@pytest.fixture(scope="module")
def address(settings: Settings) -> Iterator[str]:
    with serving(settings, workers=2) as started:
        yield started[0].address


@pytest.fixture(scope="module")
def seeded(services: Services) -> SeedResult:
    """Seed a few users with ``gridlink seed``'s own code: a grid of two links each."""
    plan = SeedPlan(users=SEEDED_USERS, grids=1, links=2)
    # Warmed, as make loadtest seeds: a replica still replaying the seed would answer 404.
    return seed(services, plan, warm=True, progress=None, rebuild_indexes=False)


def locust_variables(seeded: SeedResult, **environment: str) -> dict[str, str]:
    """Return locust's environment: the users seeded here; visitors and editors, no admins."""
    variables = {
        "LOADTEST_FIRST_PROFILE_USER": str(seeded.first),
        "LOADTEST_VISITOR_WEIGHT": "1",
        "LOADTEST_EDITOR_WEIGHT": "1",
        "LOADTEST_ADMIN_WEIGHT": "0",
        "LOADTEST_P95_MS": GENEROUS_P95_MS,
        **environment,
    }
    return locust_environment(SEEDED_USERS, seeded.password, **variables)


def run_locust(
    address: str,
    seeded: SeedResult,
    directory: Path,
    users: int = 4,
    extra: Sequence[str] = (),
    **environment: str,
) -> LocustRun:
    """Run the locustfile headless for a few seconds; return its status, output and CSV stats."""
    command = locust_command(
        f"http://{address}",
        users=users,
        spawn_rate=users,
        run_time=f"{RUN_SECONDS}s",
        csv_prefix=directory / "run",
        extra=extra,
    )
    finished = subprocess.run(
        command,
        env=locust_variables(seeded, **environment),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    with (directory / "run_stats.csv").open(newline="") as stats_file:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats_file)}
    return LocustRun(finished.returncode, finished.stdout + finished.stderr, stats)


def seeded_grids(address: str, seeded: SeedResult) -> list[list[str]]:
    """Return the slugs of each seeded user's grids, as their profiles show them."""
    grids = []
    for number in range(seeded.first, seeded.last + 1):
        status, profile = call(address, "GET", f"/api/users/{seeded.username(number)}/")
        assert status == 200, profile
        grids.append([grid["slug"] for grid in profile["grids"]])
    return grids


def test_a_short_run_passes_reads_profiles_and_cleans_up_after_its_editors(
    address, seeded, tmp_path
):
    grids_before = seeded_grids(address, seeded)
    run = run_locust(address, seeded, tmp_path)

    assert run.returncode == 0, run.output
    assert "load test passed" in run.output
    assert run.requests("GET", PROFILE) > 0
    for method, name in [
        ("POST", "/api/auth/login/"),
        ("POST", "/api/grids/"),
        ("GET", "/api/grids/[slug]/"),
        ("POST", "/api/links/"),
        ("DELETE", "/api/grids/[slug]/"),
    ]:
        assert run.requests(method, name) > 0, (method, name, run.output)
    assert int(run.stats[("", "Aggregated")]["Failure Count"]) == 0
    # Every grid the editors made is deleted again; the seeded ones are left alone.
    assert seeded_grids(address, seeded) == grids_before


def test_editors_without_the_seeded_password_sign_up_and_delete_their_accounts(
    address, seeded, tmp_path, services: Services
):
    def signed_up_editors() -> int:
        with services.primary.connect() as connection:
            pattern = User.username.op("~")("^lt_[0-9a-f]{16}$")
            return int(connection.scalar(select(func.count()).where(pattern)) or 0)

    before = signed_up_editors()
    run = run_locust(address, seeded, tmp_path, LOADTEST_SEEDED_PASSWORD="")

    assert run.returncode == 0, run.output
    assert run.requests("POST", "/api/auth/signup/") > 0
    assert run.requests("DELETE", "/api/users/me/") == run.requests("POST", "/api/auth/signup/")
    assert signed_up_editors() == before


def test_a_run_over_the_p95_threshold_fails(address, seeded, tmp_path):
    run = run_locust(address, seeded, tmp_path, LOADTEST_P95_MS="0")

    assert run.returncode == 1, run.output
    assert "over the 0 ms threshold" in run.output
    assert run.requests("GET", PROFILE) > 0


def test_a_run_with_failed_requests_fails(address, seeded, tmp_path):
    # Visitors read users far past the seeded ones: there are none, every read answers 404.
    run = run_locust(
        address,
        seeded,
        tmp_path,
        LOADTEST_FIRST_PROFILE_USER=str(seeded.last + 1_000_000),
        LOADTEST_EDITOR_WEIGHT="0",
    )

    assert run.returncode == 1, run.output
    assert "requests failed" in run.output
    assert int(run.stats[("GET", PROFILE)]["Failure Count"]) > 0


def test_a_distributed_run_is_judged_by_the_master_on_its_workers_requests(
    address, seeded, tmp_path
):
    port = free_port()
    worker_command = [str(LOCUST), "--locustfile", str(LOCUSTFILE), "--worker"]
    worker = subprocess.Popen(
        [*worker_command, "--master-port", str(port)],
        env=locust_variables(seeded),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        master = ["--master", "--expect-workers", "1", "--master-bind-port", str(port)]
        run = run_locust(address, seeded, tmp_path, extra=master, LOADTEST_P95_MS="0")
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
        worker.wait()

    # The worker made the requests; the master counted them and failed the run on the p95.
    assert run.requests("GET", PROFILE) > 0
    assert run.returncode == 1, run.output
    assert "over the 0 ms threshold" in run.output


def test_admins_poll_the_replica_page(address, seeded, tmp_path, services: Services):
    run_command(services, partial(set_admin, username=seeded.username(seeded.first), is_admin=True))

    run = run_locust(
        address,
        seeded,
        tmp_path,
        users=1,
        LOADTEST_VISITOR_WEIGHT="0",
        LOADTEST_EDITOR_WEIGHT="0",
        LOADTEST_ADMIN_WEIGHT="1",
        LOADTEST_ADMIN_USERNAME=seeded.username(seeded.first),
    )

    assert run.returncode == 0, run.output
    assert run.requests("GET", "/api/admin/replicas/") > 0
