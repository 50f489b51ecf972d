"""What each server of a cluster is doing: running, replication state and lag, as a table.

The database servers are asked the replica router's own probe
(``gridlink.routing.probes``), and their lag follows ``gridlink.routing.lag``'s rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, replace

import psycopg2

from gridlink.ops.text_table import align_rows
from gridlink.routing.lag import replica_lag_bytes, replica_lag_seconds
from gridlink.routing.probes import ProbeFacts, probe_with_cursor
from infra import postgres
from infra.postgres import PgServer


@dataclass(frozen=True)
class ServerProcessStatus:
    """Describe one server process the cluster drivers started, as `status` found it.

    Not ``gridlink.routing.policy.ServerStatus``, the router's view over the
    network: here the role is the one the layout gave the server, and the
    facts come from its pid file and ``pg_stat_replication``.
    """

    name: str
    role: str  # "primary" | "replica" | "redis" | ...
    port: int
    running: bool
    pid: int | None
    state: str | None = None  # replicas: "streaming", "catchup", "stopped", ...
    lag_bytes: int | None = None
    lag_seconds: float | None = None


@dataclass(frozen=True)
class PrimaryFacts:
    """Hold what the primary says about its WAL position and its standbys."""

    current_lsn: int
    states: dict[str, str]  # application_name -> pg_stat_replication.state


def replica_facts(replica: PgServer) -> ProbeFacts | None:
    """Ask a running replica how far it has received and replayed; None if it cannot say."""
    if postgres.pid(replica) is None:
        return None
    try:
        with (
            closing(postgres.connect_to(replica)) as connection,
            connection.cursor() as cursor,
        ):
            return probe_with_cursor(cursor)
    except psycopg2.Error:
        return None


def primary_facts(primary: PgServer) -> PrimaryFacts | None:
    """Ask the primary for its WAL position and its standbys' states; None if it cannot say."""
    try:
        with (
            closing(postgres.connect_to(primary)) as connection,
            connection.cursor() as cursor,
        ):
            facts = probe_with_cursor(cursor)
            cursor.execute("SELECT application_name, state FROM pg_stat_replication")
            states = {str(name): str(state) for name, state in cursor.fetchall()}
    except psycopg2.Error:
        return None
    if facts.current_lsn is None:  # in recovery: it is no primary, whatever its name
        return None
    return PrimaryFacts(facts.current_lsn, states)


def replica_status(
    replica: PgServer, facts: ProbeFacts | None, primary: PrimaryFacts | None
) -> ServerProcessStatus:
    """Turn what a replica and the primary said into the replica's row."""
    pid = postgres.pid(replica)
    base = ServerProcessStatus(replica.name, "replica", replica.port, pid is not None, pid)
    if pid is None:
        return replace(base, state="stopped" if replica.initialised else "absent")
    if facts is None:
        return replace(base, state="unreachable")
    if not facts.in_recovery:
        return replace(base, state="promoted", lag_bytes=0, lag_seconds=0.0)
    state = primary.states.get(replica.name, "disconnected") if primary else "disconnected"
    primary_lsn = None if primary is None else primary.current_lsn
    return replace(
        base,
        state=state,
        lag_bytes=replica_lag_bytes(primary_lsn=primary_lsn, replay_lsn=facts.replay_lsn),
        lag_seconds=replica_lag_seconds(
            replay_lsn=facts.replay_lsn,
            receive_lsn=facts.receive_lsn,
            primary_lsn=primary_lsn,
            seconds_since_replayed_commit=facts.seconds_since_replayed_commit,
        ),
    )


def database_rows(primary: PgServer, replicas: Sequence[PgServer]) -> list[ServerProcessStatus]:
    """Report the primary and each replica, asking the replicas first.

    The primary's current LSN is then never older than a replica's replay LSN,
    so the byte lag cannot come out negative.
    """
    facts = {replica.name: replica_facts(replica) for replica in replicas}
    primary_pid = postgres.pid(primary)
    current = primary_facts(primary) if primary_pid is not None else None
    running = primary_pid is not None
    rows = [ServerProcessStatus(primary.name, "primary", primary.port, running, primary_pid)]
    return rows + [replica_status(r, facts[r.name], current) for r in replicas]


def format_status(statuses: list[ServerProcessStatus]) -> str:
    """Render statuses as an aligned text table, one server per line."""
    header = ("NAME", "ROLE", "PORT", "RUNNING", "PID", "STATE", "LAG BYTES", "LAG SECONDS")
    rows = [header] + [
        (
            s.name,
            s.role,
            str(s.port),
            "yes" if s.running else "no",
            _dash(s.pid),
            _dash(s.state),
            _dash(s.lag_bytes),
            "-" if s.lag_seconds is None else f"{s.lag_seconds:.1f}",
        )
        for s in statuses
    ]
    return "\n".join(align_rows(rows))


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
