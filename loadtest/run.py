"""``make loadtest``: a load-test cluster, seeded once, gunicorn, then locust for a bounded time.

Steps, each announced on stdout:

1. start the load-test cluster (``infra/cluster.py``: primary 27432, replica
   27433, Redis 28379, data under ``var/loadtest/cluster``) and migrate it;
2. seed it (``gridlink seed --warm``) unless an earlier run did: the seeded users'
   count and password are kept in ``var/loadtest/seeded.json``;
3. make ``test_user_0`` an administrator (for the ``Admin`` users);
4. serve the API (``infra.serving``, as ``gridlink serve``) on 127.0.0.1:27480 (log in
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
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gridlink.ops.migrate import migrate
from gridlink.project import PROJECT_ROOT, VAR
from gridlink.settings import Settings
from infra import cluster
from infra.seeding import ensure_seeded
from infra.serving import serve

LOCUSTFILE = PROJECT_ROOT / "loadtest" / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")
LOADTEST_DIR = VAR / "loadtest"
REPORTS_DIR = LOADTEST_DIR / "reports"
SEED_STATE = LOADTEST_DIR / "seeded.json"
SERVER_LOG = LOADTEST_DIR / "gunicorn.log"
STOP_HINT = ".venv/bin/python -m loadtest.run --down"
SERVER_PORT = 27480
SERVER_START_SECONDS = 60.0
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
    seeded = ensure_seeded(settings, SEED_STATE, (SEED_USERS, SEED_GRIDS, SEED_LINKS), say)
    profile_users, password = seeded.users, seeded.password
    address = f"127.0.0.1:{SERVER_PORT}"
    say(f"starting gunicorn on {address} (log: {SERVER_LOG})")
    if cluster.port_answers(SERVER_PORT):
        raise LoadTestError(f"Port {SERVER_PORT} is taken; stop what listens there first.")
    server = serve(settings, bind=address, pid_file=LOADTEST_DIR / "gunicorn.pid", log=SERVER_LOG)
    server.start(say, SERVER_START_SECONDS)
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
        server.stop(say)
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
