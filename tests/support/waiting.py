"""Wait for a condition with a deadline (never a fixed sleep), and for a replica to catch up."""

from __future__ import annotations

import time
from collections.abc import Callable

from infra.diagnostics import wait_for_replica

__all__ = ["wait_for", "wait_for_replica"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, fail past ``timeout``."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"{what}: not after {elapsed:.1f} s"
        time.sleep(0.05)
    return time.monotonic() - started
