"""Seed a deployment once with `gridlink seed` and remember the seeded users' password.

`make loadtest` and staging both need seeded users whose password locust
knows; the count and password are kept in a small JSON file beside the
deployment's data, so a second run finds them instead of seeding again.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import create_engine, select

from gridlink.models import User
from gridlink.settings import Settings
from infra.errors import ClusterError, Progress
from infra.files import write_private
from infra.serving import environment_for

GRIDLINK = Path(sys.executable).with_name("gridlink")
ADMIN_USERNAME = "test_user_0"


@dataclass(frozen=True)
class Seeded:
    """The seeded users: test_user_0 .. test_user_<users - 1>, all with one password."""

    users: int
    password: str


def user_exists(settings: Settings, username: str) -> bool:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            found = connection.scalar(select(User.id).where(User.username == username))
    finally:
        engine.dispose()
    return found is not None


def seed_command(shape: tuple[int, int, int]) -> list[str]:
    """Return the ``gridlink seed`` command line for ``shape``, cache warmed.

    The password goes to its standard input, never onto the command line.
    """
    users, grids, links = shape
    return [
        str(GRIDLINK),
        "seed",
        f"--users={users}",
        f"--grids={grids}",
        f"--links={links}",
        "--warm",
        "--password-file=-",
    ]


def ensure_seeded(
    settings: Settings, state_file: Path, shape: tuple[int, int, int], progress: Progress
) -> Seeded:
    """Seed users x grids x links (cache warmed) unless ``state_file`` says it is done."""
    users, grids, links = shape
    if state_file.exists():
        state = json.loads(state_file.read_text())
        seeded = Seeded(int(state["users"]), str(state["password"]))
        if user_exists(settings, f"test_user_{seeded.users - 1}"):
            progress(f"{seeded.users:,} seeded users are there already")
            return seeded
    if user_exists(settings, "test_user_0"):
        raise ClusterError(
            f"The database has seeded users but {state_file} does not say their password; "
            "start afresh (purge the deployment's data)."
        )
    seeded = Seeded(users, secrets.token_urlsafe(12))
    progress(f"seeding {users:,} users x {grids} grids x {links} links, cache warmed")
    result = subprocess.run(
        seed_command((users, grids, links)),
        input=seeded.password + "\n",
        text=True,
        env=environment_for(settings),
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"`gridlink seed` failed with status {result.returncode}.")
    write_private(state_file, json.dumps({"users": seeded.users, "password": seeded.password}))
    make_admin(settings, ADMIN_USERNAME)
    return seeded


def make_admin(settings: Settings, username: str) -> None:
    """Make ``username`` an administrator (the locust admins poll the replica view)."""
    from gridlink.commands.accounts import set_admin
    from gridlink.commands.unit_of_work import run_command
    from gridlink.services import Services

    with Services.connected(settings) as services:
        run_command(services, partial(set_admin, username=username, is_admin=True))
