"""A batch of answers is counted exactly as observing them one at a time would count them."""

from __future__ import annotations

from prometheus_client import generate_latest

from gridlink.web.metrics import Metrics

ROUTE = "/api/users/{username}"
# On a bucket's bound, between bounds, past the last finite one, and zero.
SECONDS = [0.001, 0.0012, 0.0025, 0.003, 0.0009, 0.0, 7.5, 20.0, 0.001, 0.04]


def counted(metrics: Metrics) -> bytes:
    """The exposition without the series' creation times, which differ by app."""
    lines = generate_latest(metrics.registry).splitlines(keepends=True)
    return b"".join(line for line in lines if b"_created{" not in line)


def test_a_batch_counts_like_one_observation_at_a_time() -> None:
    batched, one_by_one = Metrics(), Metrics()
    for index, seconds in enumerate(SECONDS):
        status = 200 if index % 3 else 404
        batched.observe_request(
            route=ROUTE,
            method="GET",
            status=status,
            duration_seconds=seconds,
            read_source="cache" if status == 200 else None,
        )
        labels = {"route": ROUTE, "method": "GET", "status": str(status)}
        one_by_one.requests.labels(**labels).inc()
        one_by_one.latency.labels(**labels).observe(seconds)
        if status == 200:
            one_by_one.reads.labels(source="cache").inc()
    for result in ("memory", "hit", "hit", "miss"):
        batched.observe_profile_lookup(result)
        one_by_one.profile_cache.labels(result=result).inc()
    batched.count_queued()
    try:
        exposed = counted(batched)
        assert exposed == counted(one_by_one)
        # The counts are there: not two empty registries alike.
        assert f'route="{ROUTE}",status="404"}} 4.0'.encode() in exposed
    finally:
        batched.close()
        one_by_one.close()
