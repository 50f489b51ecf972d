"""Wait for a state with a deadline (never a fixed sleep): a replica caught up, a reload applied."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from gridlink.lsn import current_position, parse_lsn
from gridlink.services import Services


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, fail past ``timeout``."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"{what}: not after {elapsed:.1f} s"
        time.sleep(0.05)
    return time.monotonic() - started


def wait_for_replica(services: Services, timeout: float = 15) -> None:
    """Wait until replica1 has replayed everything the primary has now, and the router knows."""
    with services.primary.connect() as connection:
        target = current_position(connection)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with services.replicas[0].connect() as connection:
                replayed: str | None = connection.execute(
                    text("SELECT pg_last_wal_replay_lsn()::text")
                ).scalar_one()
            if replayed is not None and parse_lsn(replayed) >= target.lsn:
                services.router.refresh()
                chosen = services.router.choose(target)
                if chosen is not None and chosen.name == "replica1":
                    return
        except OperationalError:  # the replica may still be starting
            services.router.refresh()
        time.sleep(0.1)
    raise AssertionError("replica1 did not catch up in time")


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
