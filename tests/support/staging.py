"""Whether staging can run here: root, `ip netns`, and no other staging up on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from infra.seeding import Seeded
from infra.staging import driver, network
from infra.staging.inventory import BRIDGE
from infra.staging.services import Paths


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
        driver.down(paths, purge=True, progress=lambda _line: None)
