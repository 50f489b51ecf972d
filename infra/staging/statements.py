"""Count the statements staging's databases ran (pg_stat_statements): round trips per request.

psycopg2 sends one statement per round trip, BEGIN and COMMIT included, so
the statements counted on every database host over a swarm, divided by the
requests locust made, is the database round trips a request costs. The
replica router's probes and the monitoring queries are counted apart: they
run on a timer, whatever the load.
"""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from typing import Any

from infra import postgres
from infra.staging import access, patroni
from infra.staging.inventory import DATABASE, POSTGRES_PORT, Inventory

_TIMER_QUERIES = ("pg_current_wal_lsn", "pg_is_in_recovery", "pg_stat_replication")


def ensure_extension(inventory: Inventory) -> None:
    """Create pg_stat_statements in the application database (replicas follow the primary).

    On Patroni's leader, wherever it is now (after `make chaos`, seldom the bootstrap host).
    """
    leader = patroni.leader(inventory) or inventory.primary
    with _connect(leader.address) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset(inventory: Inventory) -> None:
    """Forget what every database host has counted so far."""
    for host in inventory.databases:
        with _connect(host.address) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_statements_reset()")


def count(inventory: Inventory) -> Counter[str]:
    """Return the statements every database host ran since the reset, by kind."""
    kinds: Counter[str] = Counter()
    for host in inventory.databases:
        with _connect(host.address) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.query, s.calls FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                (DATABASE,),
            )
            for query, calls in cursor.fetchall():
                kinds[kind_of(str(query))] += int(calls)
    return kinds


def kind_of(query: str) -> str:
    """Sort a normalised statement into what it is there for."""
    text = query.strip().lower()
    if any(name in text for name in _TIMER_QUERIES):
        return "probes"
    if text == "select $1":
        return "pings"  # the pool's pre-ping at each checkout, and /readyz
    if text.split(" ", 1)[0] in ("begin", "commit", "rollback"):
        return "transaction control"
    return "statements"


def _connect(address: str) -> closing[Any]:
    """As the superuser (it alone may reset the counts), over verified TLS."""
    return closing(postgres.connect(address, POSTGRES_PORT, DATABASE, access.libpq_options()))
