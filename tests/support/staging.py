"""Whether staging runs here, and bringing it up for a module: root, `ip netns`, nothing left up.

The staging and failover modules prove promises nothing else proves, so a
run that must prove them fails instead of skipping: a run as root (what CI
runs as) or with ``GRIDLINK_REQUIRE_STAGING=1`` (what `make test` sets). Only
a run that is neither skips, saying why. A staging left up on the machine
(its namespaces or its bridge) is torn down first, with a warning saying so.
"""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridlink.project import VAR
from infra.seeding import Seeded
from infra.staging import driver, network
from infra.staging.inventory import BRIDGE
from infra.staging.paths import Paths

REQUIRE_STAGING = "GRIDLINK_REQUIRE_STAGING"


class Verdict(enum.Enum):
    """What a staging module does on this machine."""

    RUN = "run"
    TEAR_DOWN_FIRST = "tear the leftover staging down, then run"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True)
class StagingDecision:
    verdict: Verdict
    reason: str = ""


class StagingLeftUp(UserWarning):
    """A staging was up before the module's own: it was torn down."""


def staging_required(environ: Mapping[str, str]) -> bool:
    """Tell whether ``GRIDLINK_REQUIRE_STAGING`` says staging must run ("1") or not ("0", unset)."""
    value = environ.get(REQUIRE_STAGING, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{REQUIRE_STAGING} must be 1 or 0, not {value!r}")
    return value == "1"


def decide(*, euid: int, has_netns: bool, leftover: bool, required: bool) -> StagingDecision:
    """Decide whether a staging module runs, tears a leftover staging down first, skips or fails.

    A missing prerequisite (root, `ip netns`) fails the module when the run
    is root or ``required``; it skips only a run that is neither.
    """
    missing = None
    if euid != 0:
        missing = "staging needs root (network namespaces)"
    elif not has_netns:
        missing = "staging needs `ip netns` (iproute2)"
    if missing is not None:
        if required:
            return StagingDecision(Verdict.FAIL, f"{missing}, and {REQUIRE_STAGING}=1 requires it")
        if euid == 0:
            return StagingDecision(Verdict.FAIL, f"{missing}, and a run as root requires it")
        return StagingDecision(Verdict.SKIP, missing)
    if leftover:
        return StagingDecision(
            Verdict.TEAR_DOWN_FIRST, "a staging was left up on this machine (namespaces or bridge)"
        )
    return StagingDecision(Verdict.RUN)


def _has_netns() -> bool:
    if shutil.which("ip") is None:
        return False
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    return listed.returncode == 0


def decide_here() -> StagingDecision:
    """Decide for this machine and this run (``decide`` on what is found here)."""
    euid = os.geteuid()
    has_netns = _has_netns()
    leftover = euid == 0 and has_netns and bool(network.namespaces() or network.link_exists(BRIDGE))
    return decide(
        euid=euid, has_netns=has_netns, leftover=leftover, required=staging_required(os.environ)
    )


@contextmanager
def staging_up(paths: Paths, seed_users: int) -> Iterator[Seeded]:
    """Bring staging up, seeded, for a module; take it down and purge it, pass or fail."""
    decision = decide_here()
    if decision.verdict is Verdict.SKIP:
        pytest.skip(decision.reason)
    if decision.verdict is Verdict.FAIL:
        pytest.fail(decision.reason, pytrace=False)
    if decision.verdict is Verdict.TEAR_DOWN_FIRST:
        driver.down(paths, purge=True, progress=lambda _line: None)
        warnings.warn(
            StagingLeftUp(f"{decision.reason}: tore it down (staging down --purge) first"),
            stacklevel=2,
        )
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
