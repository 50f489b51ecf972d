"""Run the change relay in a test process, as `gridlink serve`'s master runs it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from gridlink.cache import ProfileCache
from gridlink.cache.positions import applied_key
from gridlink.cache.stream import ChangeRelay
from gridlink.services import Services
from gridlink.settings import Settings
from tests.support.faults import redis_client
from tests.support.waiting import wait_for


@contextmanager
def relay_running(settings: Settings) -> Iterator[ChangeRelay]:
    """Run a change relay (a thread with its own Redis client) until the block ends.

    One relay works at a time: this one may wait while another holds the stream.
    """
    cache = ProfileCache(settings.redis_url, write_mark_ttl=10)
    relay = ChangeRelay(settings.database_url, cache)
    stopping = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stopping,), name="test-relay", daemon=True)
    thread.start()
    try:
        # This relay, or one a test's gunicorn master runs (this one then waits to
        # take over), has made its first loop.
        wait_for(
            lambda: cache.client.get(applied_key(cache.keyspace())) is not None,
            15,
            "a change relay's first position",
        )
        yield relay
    finally:
        stopping.set()
        thread.join(10)
        cache.close()


def applied_position(services: Services) -> bytes | None:
    """Read the stream's position with a client of the test's own (no cool-off)."""
    with redis_client(services.settings) as client:
        raw: bytes | None = client.get(applied_key(services.cache.keyspace()))  # type: ignore[assignment]
    return raw


def pending_changes(services: Services) -> int:
    with services.primary.connect() as connection:
        count: int = connection.execute(text("SELECT count(*) FROM profile_changes")).scalar_one()
    return count


def wait_for_stream(services: Services) -> None:
    """Wait until the relay has drained every change and holds a position in Redis.

    A test that stopped the primary or Redis leaves the relay a moment to
    reconnect: wait for this before asserting that the stream is healthy.
    """
    wait_for(
        lambda: pending_changes(services) == 0 and applied_position(services) is not None,
        15,
        "the relay drains the change stream",
    )
