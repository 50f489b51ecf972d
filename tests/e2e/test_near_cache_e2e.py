"""A write reaches every server process's memory within 100 ms of its answer (API.md 2, 3).

Two gunicorn servers of one worker each share the session cluster. Each
answers a profile from its own memory (its reads cost Redis no ``HMGET``);
then a write through one of them. From 100 ms after the write's answer, no
anonymous read from either server shows the old version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from gridlink.cache.near import CURRENT_SECONDS
from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.faults import cached_version, redis_client
from tests.support.servers import api_request, call, serving, sign_up_at
from tests.support.waiting import wait_for

READS_AFTER_THE_BOUND = 5


@pytest.fixture(scope="module")
def servers(settings: Settings, relay: Any) -> Iterator[list[str]]:
    """Two gunicorn servers with one worker each, for the module."""
    with serving(settings, count=2) as started:
        yield [server.address for server in started]


def hmget_calls(settings: Settings) -> int:
    with redis_client(settings) as client:
        stats: dict[str, Any] = client.info("commandstats")
    calls: int = stats.get("cmdstat_hmget", {}).get("calls", 0)
    return calls


def version_read(address: str, username: str) -> int:
    reply = api_request(address, "GET", f"/api/users/{username}/")
    assert reply.status == 200, reply
    return int(str(reply.headers["ETag"]).strip('"'))


def answers_from_memory(settings: Settings, address: str, username: str) -> bool:
    """Read three times; tell whether none of the reads asked Redis for the profile."""
    before = hmget_calls(settings)
    for _ in range(3):
        version_read(address, username)
    return hmget_calls(settings) == before


def test_a_read_100_ms_after_a_writes_answer_never_shows_the_old_version_in_any_process(
    settings: Settings, servers: list[str]
) -> None:
    writer_server = servers[0]
    username = random_username("near")
    token = sign_up_at(writer_server, username)
    status, grid = call(writer_server, "POST", "/api/grids/", {"title": "Before"}, token)
    assert status == 201, grid
    old = cached_version(settings, username)
    for address in servers:
        wait_for(
            partial(answers_from_memory, settings, address, username),
            15,
            f"{address} answers the profile from its memory",
        )
        assert version_read(address, username) == old

    status, renamed = call(
        writer_server, "PATCH", f"/api/grids/{grid['slug']}/", {"title": "After"}, token
    )
    answered = time.monotonic()
    assert status == 200, renamed
    new = cached_version(settings, username)
    assert new is not None
    assert old is not None
    assert new > old

    after_the_bound: dict[str, list[int]] = {address: [] for address in servers}
    while min(len(versions) for versions in after_the_bound.values()) < READS_AFTER_THE_BOUND:
        for address in servers:
            started = time.monotonic()
            version = version_read(address, username)
            if started - answered >= CURRENT_SECONDS:
                after_the_bound[address].append(version)
    assert after_the_bound == {
        address: [new] * len(after_the_bound[address]) for address in servers
    }
