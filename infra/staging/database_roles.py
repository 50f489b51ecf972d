"""Staging's database roles, each with the least it needs, and the rotation of the API's password.

Patroni makes its own three when it bootstraps the cluster (``postgres``, the
superuser; ``replicator``; ``rewind_user``, with only pg_rewind's grants).
``staging up`` then makes the application's, on the leader, as the superuser
over verified TLS:

- ``gridlink_owner`` owns the database and every object in it: migrations and
  seeding connect as it;
- ``gridlink_api`` (NOLOGIN) is what the API may do: read and write the rows
  of the tables (SELECT, INSERT, UPDATE, DELETE; USAGE on the sequences),
  for every table the owner makes (default privileges), and read the
  replication statistics its router needs (``pg_monitor``). No CREATE on the
  database or the schema, no TEMP, owner of nothing;
- ``gridlink_api_a`` and ``gridlink_api_b`` log in as members of it, each
  with its own password. The API uses one at a time (``access.api_login``):
  a rotation gives the other a fresh password, moves the API to it, and only
  once the API has moved re-randomises the old one, so no connection is ever
  refused for a password.

Passwords reach the server as SCRAM verifiers made here (libpq's
``PQencryptPasswordConn``): the plain text is never sent, logged or written
into a statement the server could echo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import encrypt_password

from infra import postgres
from infra.errors import ClusterError, Progress
from infra.staging import access
from infra.staging.inventory import (
    API_LOGINS,
    API_ROLE,
    DATABASE,
    OWNER_ROLE,
    POSTGRES_PORT,
    SUPERUSER_ROLE,
    Host,
    Inventory,
)
from infra.staging.render import api_database_login, api_secret
from infra.staging.secrets import Secrets

# The names of secrets (Secrets.password), not secrets.
OWNER_SECRET = "postgres-owner"  # noqa: S105
SUPERUSER_SECRET = "postgres-superuser"  # noqa: S105
_TABLE_RIGHTS = "SELECT, INSERT, UPDATE, DELETE"


def write_operator_passfile(secrets: Secrets) -> None:
    """Write the machine's own passfile: the superuser, the owner and both API logins."""
    access.write_passfile(
        {
            SUPERUSER_ROLE: secrets.password(SUPERUSER_SECRET),
            OWNER_ROLE: secrets.password(OWNER_SECRET),
            **{login: secrets.password(api_secret(login)) for login in API_LOGINS},
        }
    )


@contextmanager
def superuser(host: Host, database: str = "postgres") -> Iterator[Any]:
    """Open an autocommit cursor on ``host`` as the superuser (TLS, the operator's passfile)."""
    with (
        closing(
            postgres.connect(host.address, POSTGRES_PORT, database, access.libpq_options())
        ) as connection,
        connection.cursor() as cursor,
    ):
        yield cursor


def ensure(leader: Host, secrets: Secrets, progress: Progress) -> None:
    """Make the application's roles and database on ``leader`` (idempotent), passwords as kept."""
    with superuser(leader) as cursor:
        _role(cursor, OWNER_ROLE, "LOGIN", secrets.password(OWNER_SECRET))
        _role(cursor, API_ROLE, "NOLOGIN", None)
        for login in API_LOGINS:
            _role(cursor, login, "LOGIN", secrets.password(api_secret(login)))
            cursor.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(API_ROLE), sql.Identifier(login))
            )
        # The router's lag checks: pg_stat_replication, pg_stat_wal_receiver, pg_control_*.
        cursor.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(API_ROLE)))
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if cursor.fetchone() is None:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(OWNER_ROLE)
                )
            )
            progress(f"{leader.name}: created database {DATABASE}, owned by {OWNER_ROLE}")
        database = sql.Identifier(DATABASE)
        # PUBLIC may connect and make temporary tables by default: neither, here.
        cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        cursor.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, sql.Identifier(API_ROLE))
        )
    with superuser(leader, DATABASE) as cursor:
        api = sql.Identifier(API_ROLE)
        owner = sql.Identifier(OWNER_ROLE)
        cursor.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        cursor.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(api))
        cursor.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public"
                f" GRANT {_TABLE_RIGHTS} ON TABLES TO {{}}"
            ).format(owner, api)
        )
        cursor.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public"
                " GRANT USAGE ON SEQUENCES TO {}"
            ).format(owner, api)
        )
        # Tables made before these defaults (a staging older than them) get the same rights.
        cursor.execute(
            sql.SQL(f"GRANT {_TABLE_RIGHTS} ON ALL TABLES IN SCHEMA public TO {{}}").format(api)
        )
        cursor.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(api))
    progress(f"{leader.name}: roles {OWNER_ROLE}, {API_ROLE} ({', '.join(API_LOGINS)}) in place")


def _role(cursor: Any, role: str, login: str, password: str | None) -> None:
    """Create ``role`` with no power beyond ``login`` if missing, and set its password."""
    name = sql.Identifier(role)
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if cursor.fetchone() is None:
        cursor.execute(sql.SQL("CREATE ROLE {}").format(name))
    attributes = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    cursor.execute(sql.SQL(f"ALTER ROLE {{}} {login} {attributes}").format(name))
    if password is not None:
        _set_password(cursor, role, password)


def _set_password(cursor: Any, role: str, password: str) -> None:
    verifier = encrypt_password(password, role, cursor.connection, "scram-sha-256")
    cursor.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
    )


# --------------------------------------------------------------------------- rotation


def other_login(login: str) -> str:
    """Return the API's other login (a for b, b for a)."""
    first, second = API_LOGINS
    return second if login == first else first


def switch_api_login(inventory: Inventory, leader: Host, secrets: Secrets) -> str:
    """Give the API's idle login a fresh password and make it the one in use; return its write URL.

    The login in use keeps its password (the API's connections and any new
    one it opens still log in) until ``retire_idle_api_login``.
    """
    current = access.api_login() or API_LOGINS[0]
    fresh = other_login(current)
    password = secrets.rotate(api_secret(fresh))
    write_operator_passfile(secrets)
    with superuser(leader) as cursor:
        _set_password(cursor, fresh, password)
    state = access.api_login_file()
    state.write_text(fresh + "\n")
    return inventory.write_url_for(api_database_login(secrets))


def retire_idle_api_login(leader: Host, secrets: Secrets) -> None:
    """Re-randomise the password of the API's login not in use: call once the API has moved."""
    idle = other_login(access.api_login() or API_LOGINS[0])
    password = secrets.rotate(api_secret(idle))
    write_operator_passfile(secrets)
    with superuser(leader) as cursor:
        _set_password(cursor, idle, password)


def rotate_api_database_role(
    inventory: Inventory,
    leader: Host,
    secrets: Secrets,
    move_api: Callable[[str], None],
) -> str:
    """Rotate the API's database password without refusing a connection; return the new URL.

    Switches to the other login with a fresh password, then calls
    ``move_api(write_url)``, which returns once every API host uses the new
    login (re-rendered api.env, servers reloaded); only then is the old
    login's password replaced. If ``move_api`` raises, the old password still
    works and nothing is retired.
    """
    url = switch_api_login(inventory, leader, secrets)
    try:
        move_api(url)
    except Exception as failed:
        raise ClusterError(
            f"the API did not move to {access.api_login()}; the old login still works"
        ) from failed
    retire_idle_api_login(leader, secrets)
    return url
