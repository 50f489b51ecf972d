"""``make loadtest``: a load-test cluster, seeded once, gunicorn, then locust for a bounded time.

Steps, each announced on stdout:

1. start the load-test cluster (``infra/cluster.py``: primary 27432, replica
   27433, Redis 28379, data under ``var/loadtest/cluster``) and migrate it;
2. seed it (``gridlink seed --warm``) unless an earlier run did: the seeded users'
   count and password are kept in ``var/loadtest/seeded.json``;
3. make ``test_user_0`` an administrator (for the ``Admin`` users);
4. serve the API with ``gridlink serve`` on 127.0.0.1:27480 (log in
   ``var/loadtest/gunicorn.log``);
5. run ``loadtest/locustfile.py`` headless (LOADTEST_USERS users,
   LOADTEST_SPAWN_RATE per second, for LOADTEST_RUN_TIME), writing the HTML and
   CSV reports under ``var/loadtest/reports/``;
6. stop the server (the cluster keeps running for the next run) and exit
   with locust's status.

``python -m loadtest.run --down [--purge]`` stops the load-test cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy import create_engine, select

from gridlink.cli import PROJECT_ROOT, migrate
from gridlink.models import User
from gridlink.settings import Settings
from infra import cluster

LOCUSTFILE = PROJECT_ROOT / "loadtest" / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")
GRIDLINK = Path(sys.executable).with_name("gridlink")
LOADTEST_DIR = PROJECT_ROOT / "var" / "loadtest"
REPORTS_DIR = LOADTEST_DIR / "reports"
SEED_STATE = LOADTEST_DIR / "seeded.json"
SERVER_LOG = LOADTEST_DIR / "gunicorn.log"
STOP_HINT = ".venv/bin/python -m loadtest.run --down"
SERVER_PORT = 27480
SERVER_START_SECONDS = 60.0
SERVER_STOP_SECONDS = 20.0
ADMIN_USERNAME = "test_user_0"
# A modest dataset: seeded in seconds, yet profiles of a realistic size
# (4 grids of 5 links) and more users than the run can read twice.
SEED_USERS = 10_000
SEED_GRIDS = 4
SEED_LINKS = 5


class LoadTestError(Exception):
    """Report a load-test set-up problem in a sentence the user can act on."""


def say(message: str) -> None:
    print(f"loadtest: {message}", flush=True)


def loadtest_cluster() -> cluster.ClusterLayout:
    return cluster.ClusterLayout(
        root=cluster.reachable_root(LOADTEST_DIR / "cluster"),
        pg_port=27432,
        redis_port=28379,
        replicas=1,
    )


def cluster_settings(layout: cluster.ClusterLayout) -> Settings:
    return Settings(
        database_url=layout.database_url,
        replica_urls=layout.replica_urls,
        redis_url=layout.redis_url,
    )


def settings_environment(settings: Settings) -> dict[str, str]:
    """Return the ``GRIDLINK_*`` variables that point a server at ``settings``' cluster."""
    return {
        "GRIDLINK_DATABASE_URL": settings.database_url,
        "GRIDLINK_REPLICA_URLS": ",".join(settings.replica_urls),
        "GRIDLINK_REDIS_URL": settings.redis_url,
        # Every simulated editor signs up from this machine's one address.
        "GRIDLINK_SIGNUPS_PER_ADDRESS": "1000000",
        "GRIDLINK_SIGNUPS_PER_MINUTE": "1000000",
    }


def locust_command(
    host: str,
    *,
    users: int,
    spawn_rate: float,
    run_time: str,
    csv_prefix: Path,
    html: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Return the command that runs the locustfile headless against ``host`` for ``run_time``."""
    command = [
        str(LOCUST),
        "--locustfile",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        run_time,
        "--csv",
        str(csv_prefix),
        # Editors get time to delete what they created when the run ends.
        "--stop-timeout",
        "10",
    ]
    if html is not None:
        command += ["--html", str(html)]
    return [*command, *extra]


def locust_environment(profile_users: int, seeded_password: str, **extra: str) -> dict[str, str]:
    """Return the environment for locust: the seeded users to read and log in as."""
    return {
        **os.environ,
        "LOADTEST_PROFILE_USERS": str(profile_users),
        "LOADTEST_SEEDED_PASSWORD": seeded_password,
        **extra,
    }


def user_exists(settings: Settings, username: str) -> bool:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            found = connection.scalar(select(User.id).where(User.username == username))
    finally:
        engine.dispose()
    return found is not None


def ensure_seeded(settings: Settings) -> tuple[int, str]:
    """Seed the load-test cluster unless an earlier run did; return the user count and password."""
    if SEED_STATE.exists():
        state = json.loads(SEED_STATE.read_text())
        users, password = int(state["users"]), str(state["password"])
        if user_exists(settings, f"test_user_{users - 1}"):
            say(f"{users:,} seeded users are there already")
            return users, password
    if user_exists(settings, "test_user_0"):
        raise LoadTestError(
            f"The load-test cluster has seeded users but {SEED_STATE} does not say their "
            "password; start afresh with `.venv/bin/python -m loadtest.run --down --purge`."
        )
    password = secrets.token_urlsafe(12)
    counts = {"--users": SEED_USERS, "--grids": SEED_GRIDS, "--links": SEED_LINKS}
    say(f"seeding {SEED_USERS:,} users x {SEED_GRIDS} grids x {SEED_LINKS} links, cache warmed")
    command = [str(GRIDLINK), "seed", *(f"{o}={c}" for o, c in counts.items())]
    seeded = subprocess.run(
        [*command, "--warm", "--password", password],
        env={**os.environ, **settings_environment(settings)},
        check=False,
    )
    if seeded.returncode != 0:
        raise LoadTestError(f"`gridlink seed` failed with status {seeded.returncode}.")
    SEED_STATE.write_text(json.dumps({"users": SEED_USERS, "password": password}))
    return SEED_USERS, password


def make_admin(settings: Settings, username: str) -> None:
    from functools import partial

    from gridlink.commands.accounts import set_admin
    from gridlink.commands.unit_of_work import run_command
    from gridlink.services import Services

    services = Services.connect(settings)
    try:
        run_command(services, partial(set_admin, username=username, is_admin=True))
    finally:
        services.close()


def healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start_server(settings: Settings, address: str) -> subprocess.Popen[bytes]:
    """Run ``gridlink serve`` on ``address`` and wait until it answers /healthz."""
    port = int(address.rsplit(":", 1)[1])
    if cluster.port_answers(port):
        raise LoadTestError(f"Port {port} is taken; stop what listens there first.")
    with SERVER_LOG.open("ab") as log:
        server = subprocess.Popen(
            [str(GRIDLINK), "serve", "--bind", address],
            cwd=PROJECT_ROOT,
            env={**os.environ, **settings_environment(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    cluster.wait_until(lambda: server.poll() is not None or healthy(address), SERVER_START_SECONDS)
    if server.poll() is not None or not healthy(address):
        stop_server(server)
        raise LoadTestError(f"gunicorn did not start on {address}; see {SERVER_LOG}.")
    return server


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=SERVER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise LoadTestError(f"{name} must be a whole number of at least 1 (got {raw!r}).")
    return int(raw)


def run_load_test(environ: Mapping[str, str]) -> int:
    users = positive_int(environ, "LOADTEST_USERS", 50)
    spawn_rate = positive_int(environ, "LOADTEST_SPAWN_RATE", 10)
    run_time = environ.get("LOADTEST_RUN_TIME", "60s")
    layout = loadtest_cluster()
    settings = cluster_settings(layout)
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    say(f"starting the load-test cluster in {layout.root}")
    print(cluster.format_status(cluster.up(layout, progress=say)), flush=True)
    migrate(settings.database_url)
    say("migrated")
    profile_users, password = ensure_seeded(settings)
    make_admin(settings, ADMIN_USERNAME)
    address = f"127.0.0.1:{SERVER_PORT}"
    say(f"starting gunicorn on {address} (log: {SERVER_LOG})")
    server = start_server(settings, address)
    try:
        command = locust_command(
            f"http://{address}",
            users=users,
            spawn_rate=spawn_rate,
            run_time=run_time,
            csv_prefix=REPORTS_DIR / "loadtest",
            html=REPORTS_DIR / "loadtest.html",
        )
        say(f"running locust: {users} users for {run_time}")
        status = subprocess.run(
            command, env=locust_environment(profile_users, password), check=False
        ).returncode
    finally:
        say("stopping gunicorn")
        stop_server(server)
    say(f"reports: {REPORTS_DIR}/loadtest.html and loadtest_*.csv")
    say(f"locust exited with {status}; the cluster keeps running (stop: {STOP_HINT})")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--down", action="store_true", help="stop the load-test cluster")
    parser.add_argument("--purge", action="store_true", help="with --down: delete its data too")
    args = parser.parse_args(argv)
    try:
        if args.down:
            cluster.down(loadtest_cluster(), purge=args.purge, progress=say)
            if args.purge:
                SEED_STATE.unlink(missing_ok=True)
            return 0
        return run_load_test(os.environ)
    except (cluster.ClusterError, LoadTestError) as problem:
        print(f"loadtest: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # locust has written its reports; the server was stopped on the way out


if __name__ == "__main__":
    sys.exit(main())
