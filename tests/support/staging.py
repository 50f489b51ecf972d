"""Whether staging can run here: root, `ip netns`, and no other staging up on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gridlink.project import VAR
from infra.seeding import Seeded
from infra.staging import driver, network
from infra.staging.inventory import BRIDGE
from infra.staging.paths import Paths


def why_not_staging() -> str | None:
    if os.geteuid() != 0:
        return "staging needs root (network namespaces)"
    if (
        shutil.which("ip") is None
        or subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).returncode
    ):
        return "staging needs `ip netns` (iproute2)"
    if network.namespaces() or network.link_exists(BRIDGE):
        return "a staging is already up on this machine; `gridlink staging down` first"
    return None


@contextmanager
def staging_up(paths: Paths, seed_users: int) -> Iterator[Seeded]:
    """Bring staging up, seeded, for a module; take it down and purge it, pass or fail."""
    reason = why_not_staging()
    if reason is not None:
        pytest.skip(reason)
    try:
        seeded = driver.up(paths, seed_users=seed_users, progress=lambda _line: None)
        assert seeded is not None
        yield seeded
    finally:
        driver.down(paths, purge=False, progress=lambda _line: None)
        keep_logs(paths)
        driver.down(paths, purge=True, progress=lambda _line: None)


def keep_logs(paths: Paths) -> Path:
    """Copy every host's logs out of a staging about to be purged; return where they went.

    Into ``var/test-logs/<staging root's name>/<host>/``, replacing the last
    run's: after a failing run (in CI too), what Patroni, etcd, PostgreSQL and
    the API hosts said is still there to read.
    """
    kept = VAR / "test-logs" / paths.root.name
    shutil.rmtree(kept, ignore_errors=True)
    for log in sorted((paths.root / "hosts").glob("*/*.log")):
        target = kept / log.parent.name / log.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    return kept
