"""The rotation policy as a pure function of probe facts: roles, timelines, lag, rotation."""

from __future__ import annotations

from dataclasses import replace

from gridlink.routing.policy import (
    PRIMARY,
    REPLICA,
    SECOND_PRIMARY,
    UNREACHABLE,
    PrimarySighting,
    ServerProbe,
    decide,
    why_out,
)
from gridlink.routing.probes import ProbeFacts

NOW = 1000.0


def primary_facts(lsn: int, *, timeline: int = 1) -> ProbeFacts:
    return ProbeFacts(
        in_recovery=False,
        timeline=timeline,
        current_lsn=lsn,
        receive_lsn=None,
        replay_lsn=None,
        seconds_since_replayed_commit=None,
        asked_at=NOW,
        answered_at=NOW,
    )


def replica_facts(
    replay: int, *, timeline: int = 1, since_commit: float | None = 0.1
) -> ProbeFacts:
    return ProbeFacts(
        in_recovery=True,
        timeline=timeline,
        current_lsn=None,
        receive_lsn=replay,
        replay_lsn=replay,
        seconds_since_replayed_commit=since_commit,
        asked_at=NOW,
        answered_at=NOW,
    )


def server(name: str, facts: ProbeFacts | None, *, was_in: bool = True) -> ServerProbe:
    return ServerProbe(name, f"{name}:5432", facts, was_in)


def roles(servers: list[ServerProbe]) -> dict[str, tuple[str, bool]]:
    decision = decide(servers, history=(), max_lag_seconds=5.0)
    return {s.name: (s.role, s.in_rotation) for s in decision.servers}


def test_roles_come_from_what_each_server_answers_not_from_the_configuration() -> None:
    before = [server("db1", primary_facts(900)), server("db2", replica_facts(900))]
    after = [
        server("db1", replica_facts(950, timeline=2)),
        server("db2", primary_facts(950, timeline=2)),
    ]

    assert roles(before) == {"db1": (PRIMARY, False), "db2": (REPLICA, True)}
    # After a failover the promoted server stops serving reads; the old primary,
    # rejoined as a replica, starts.
    assert roles(after) == {"db1": (REPLICA, True), "db2": (PRIMARY, False)}


def test_of_two_servers_out_of_recovery_the_newer_timeline_is_the_primary() -> None:
    decision = decide(
        [
            server("db1", primary_facts(5000, timeline=1)),  # the old primary, cut off, not fenced
            server("db2", primary_facts(1000, timeline=2)),
        ],
        history=(),
        max_lag_seconds=5.0,
    )

    assert decision.primary is not None
    assert decision.primary.name == "db2"
    assert [(s.role, s.in_rotation) for s in decision.servers] == [
        (SECOND_PRIMARY, False),
        (PRIMARY, False),
    ]
    assert "not the primary" in why_out(decision.servers[0], decision.primary_status, 5.0)


def test_a_replica_still_on_the_old_timeline_serves_no_reads() -> None:
    decision = decide(
        [
            server("db1", primary_facts(2000, timeline=3)),
            server("db2", replica_facts(2000, timeline=2)),
        ],
        history=(),
        max_lag_seconds=5.0,
    )

    replica = decision.servers[1]
    assert (replica.role, replica.in_rotation, replica.lag_seconds) == (REPLICA, False, 0.0)
    assert why_out(replica, decision.primary_status, 5.0) == "on timeline 2, the primary on 3"


def test_an_unreachable_server_has_no_role_and_no_reads() -> None:
    assert roles([server("db1", primary_facts(10)), server("db2", None)])["db2"] == (
        UNREACHABLE,
        False,
    )


def test_with_no_primary_answering_replicas_keep_serving_by_their_own_lag() -> None:
    assert roles([server("db1", None), server("db2", replica_facts(10))]) == {
        "db1": (UNREACHABLE, False),
        "db2": (REPLICA, True),
    }


def test_with_the_primary_gone_a_replica_caught_up_with_its_last_sighting_keeps_serving() -> None:
    # The primary was last seen at 200, 2 s ago, then vanished (killed, cut off).
    history = (
        PrimarySighting(lsn=100, asked_at=NOW - 10.0),
        PrimarySighting(lsn=200, asked_at=NOW - 2.0),
    )
    # Both replicas received part of a record the stream never finished (receive > replay),
    # and no commit has been replayed for a long time: the primary is gone.
    caught_up = replace(replica_facts(200, since_commit=60.0), receive_lsn=210)
    behind = replace(replica_facts(100, since_commit=60.0), receive_lsn=110)

    decision = decide(
        [server("db1", None), server("db2", caught_up), server("db3", behind)],
        history=history,
        max_lag_seconds=5.0,
    )

    by_name = {status.name: status for status in decision.servers}
    assert by_name["db2"].lag_seconds == 0.0  # frozen at the last sighting, not 2 s and growing
    assert by_name["db2"].in_rotation
    assert by_name["db3"].lag_seconds == 8.0  # 8 s behind when the primary was last seen
    assert not by_name["db3"].in_rotation


def test_lag_against_the_primary_decides_rotation_with_hysteresis() -> None:
    history = (PrimarySighting(lsn=100, asked_at=NOW - 4.0),)
    behind = replica_facts(150, since_commit=30.0)  # replayed what the primary had 4 s ago
    primary = server("db1", primary_facts(200))

    staying = decide(
        [primary, server("db2", behind, was_in=True)], history=history, max_lag_seconds=5.0
    )
    rejoining = decide(
        [primary, server("db2", behind, was_in=False)], history=history, max_lag_seconds=5.0
    )

    assert staying.servers[1].lag_seconds == 4.0
    assert staying.servers[1].lag_bytes == 50
    assert staying.servers[1].in_rotation  # under the bound
    assert not rejoining.servers[1].in_rotation  # not yet under half of it


def test_the_primary_reports_its_own_position_and_no_lag() -> None:
    decision = decide(
        [server("db1", primary_facts(0x3000148, timeline=4))], history=(), max_lag_seconds=5.0
    )

    status = decision.primary_status
    assert status is not None
    assert (status.lsn, status.timeline, status.lag_seconds) == ("0/3000148", 4, 0.0)
