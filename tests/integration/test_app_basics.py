"""The app's ground rules: health, readiness, and one error body for every error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import falcon
import falcon.testing
from sqlalchemy import Engine, event

from gridlink.resources.health import ReadinessCheck, Ready
from gridlink.services import Services
from tests.support.queries import count_queries, count_redis_round_trips
from tests.support.relay import wait_for_stream
from tests.support.waiting import wait_for


def test_healthz_answers_ok(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}


def test_readyz_names_every_dependency_as_ok(
    client: falcon.testing.TestClient, services: Services
) -> None:
    # A test before this one may have stopped the primary or Redis: the relay
    # reconnects within a second or so, and only then holds a position again.
    wait_for_stream(services)
    # An answer is up to a second old: the one given before the relay was back may come first.
    wait_for(
        lambda: client.simulate_get("/readyz").json["status"] == "ok", 5, "readiness to catch up"
    )
    result = client.simulate_get("/readyz")
    assert result.status_code == 200
    assert result.json["checks"] == {
        "primary": "ok",
        "replica1": "ok",
        "redis": "ok",
        "change_stream": "ok",
    }
    assert result.json["status"] == "ok"


class FixedClock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def count_checkouts(*engines: Engine) -> Iterator[list[Engine]]:
    """Record each connection taken from the engines' pools inside the block."""
    taken: list[Engine] = []
    listeners = [(engine, lambda *args, engine=engine: taken.append(engine)) for engine in engines]
    for engine, listener in listeners:
        event.listen(engine.pool, "checkout", listener)
    try:
        yield taken
    finally:
        for engine, listener in listeners:
            event.remove(engine.pool, "checkout", listener)


def readyz_client(readiness: ReadinessCheck) -> falcon.testing.TestClient:
    app = falcon.App()
    app.add_route("/readyz", Ready(readiness))
    return falcon.testing.TestClient(app)


def test_readiness_is_measured_at_most_once_a_second_however_often_it_is_asked(
    services: Services,
) -> None:
    clock = FixedClock()
    readyz = readyz_client(ReadinessCheck(services, clock=clock))
    engines = (services.primary, *services.replicas)
    with (
        count_queries(*engines) as first_queries,
        count_checkouts(*engines) as first_checkouts,
        count_redis_round_trips() as first_redis,
    ):
        first = readyz.simulate_get("/readyz")
    # One measurement: a connection to every database, and Redis.
    assert set(first_checkouts) == set(engines)
    assert first_queries.count >= len(engines)
    assert first_redis

    with (
        count_queries(*engines) as queries,
        count_checkouts(*engines) as checkouts,
        count_redis_round_trips() as redis_calls,
    ):
        for _ in range(200):
            clock.now += 0.0049  # 200 calls within the second
            answer = readyz.simulate_get("/readyz")
            assert (answer.status_code, answer.json) == (first.status_code, first.json)
        assert (queries.count, checkouts, redis_calls) == (0, [], [])
        clock.now = 1001.0  # a second after the first measurement: measured again, once
        for _ in range(10):
            readyz.simulate_get("/readyz")
    assert queries.count == first_queries.count
    assert sorted(map(id, checkouts)) == sorted(map(id, first_checkouts))
    assert len(redis_calls) == len(first_redis)


def test_callers_at_once_share_one_measurement(services: Services) -> None:
    readiness = ReadinessCheck(services, clock=FixedClock())
    callers = 16
    together = threading.Barrier(callers)

    def ask(_: int) -> object:
        together.wait()
        return readiness.current()

    with count_checkouts(services.primary) as checkouts, ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(ask, range(callers)))
    assert all(answer is answers[0] for answer in answers)
    # One measurement takes the primary twice: its own check, and the change stream's.
    assert len(checkouts) == 2


def test_unknown_route_is_a_404_in_the_error_format(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/api/nothing-here/")
    assert result.status_code == 404
    assert result.json == {"error": {"type": "not_found", "message": "Not found."}}


def test_wrong_method_is_a_405_in_the_error_format(client: falcon.testing.TestClient) -> None:
    result = client.simulate_delete("/healthz")
    assert result.status_code == 405
    assert result.json["error"]["type"] == "method_not_allowed"


def test_request_id_is_echoed_or_made(client: falcon.testing.TestClient) -> None:
    given = client.simulate_get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = client.simulate_get("/healthz")
    assert len(made.headers["X-Request-Id"]) == 32


def test_body_over_64_kib_is_refused_before_reading(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post(
        "/api/auth/signup/",
        body=b"{" + b" " * (64 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert result.status_code == 413
    assert result.json["error"]["type"] == "payload_too_large"
