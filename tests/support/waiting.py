"""Wait for a state with a deadline (never a fixed sleep): a replica caught up, a reload applied."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from infra.diagnostics import wait_for_replica

__all__ = ["setting_on", "wait_for", "wait_for_replica", "wait_for_setting"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, fail past ``timeout``."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"{what}: not after {elapsed:.1f} s"
        time.sleep(0.05)
    return time.monotonic() - started


def setting_on(url: str, setting: str) -> str | None:
    """Return ``setting`` as a new session on the server at ``url`` sees it (None: no answer)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as connection:
            shown: str = connection.execute(
                text("SELECT current_setting(:setting)"), {"setting": setting}
            ).scalar_one()
    except OperationalError:  # the server may be starting
        return None
    finally:
        engine.dispose()
    return shown


def wait_for_setting(url: str, setting: str, value: str, timeout: float = 15) -> None:
    """Wait until the server at ``url`` shows ``setting`` at ``value``: its reload is done."""
    wait_for(lambda: setting_on(url, setting) == value, timeout, f"{setting} = {value!r} at {url}")
