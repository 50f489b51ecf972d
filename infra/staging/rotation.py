"""``gridlink staging rotate-secrets``: the API's passwords and the token cache's key, live.

Nothing the API holds is refused while it changes, so no request fails:

1. The database: the API moves to its other login with a fresh password, and
   only then is the old login's password re-randomised (the database side,
   ``database_roles.rotate_api_database_role``; step 4 is how the API moves).
2. Redis: the API's user gets the new password beside the old one on every
   Redis and Sentinel (Redis keeps two at once), saved where each keeps it.
3. The token cache's MAC key: the API signs with the new key and still accepts
   what the old one signed (``GRIDLINK_TOKEN_CACHE_KEYS=new,old``).
4. The API hosts take the new api.env one at a time: drained from every load
   balancer (no new request; those under way finish), restarted, checked, and
   put back in rotation before the next one leaves it.
5. The old Redis password is removed, then every API host is rolled once more
   onto the new MAC key alone.

An entry signed with a key a host does not know yet is a miss for that host,
never a failure: it reads the database, as without a cache.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import redis as redis_lib

from infra.errors import ClusterError, Progress
from infra.files import write_private
from infra.processes import wait_until
from infra.staging import access, database_roles, hosts, patroni, render
from infra.staging.inventory import API, REDIS_PORT, SENTINEL, SENTINEL_PORT, Host, Inventory
from infra.staging.paths import Paths
from infra.staging.redis_acl import API_USER, OPERATOR_USER, PASSWORD_OF, RedisAccess
from infra.staging.secrets import Secrets

TOKEN_CACHE_KEY = "token-cache-key"  # noqa: S105 (a secret's name)
DRAIN_TIMEOUT = 30.0
BACK_TIMEOUT = 60.0


def rotate_secrets(paths: Paths, inventory: Inventory, progress: Progress = print) -> None:
    """Replace the API's database and Redis passwords and the token cache's MAC key, live."""
    secrets = Secrets(paths.secrets)
    leader = patroni.leader(inventory)
    if leader is None:
        raise ClusterError("no database host answers as Patroni's leader; rotate once one does.")
    old_password = secrets.password(PASSWORD_OF[API_USER])
    new_password = secrets.rotate(PASSWORD_OF[API_USER])
    old_key = secrets.password(TOKEN_CACHE_KEY)
    new_key = secrets.rotate(TOKEN_CACHE_KEY)
    # Both Redis passwords work while the API hosts move.
    try:
        set_api_passwords(inventory, secrets, progress, new_password)
    except ClusterError:
        # Nothing moved yet: keep what every server and api.env still have.
        secrets.restore(PASSWORD_OF[API_USER], old_password)
        secrets.restore(TOKEN_CACHE_KEY, old_key)
        raise
    rerender_redis_files(paths, inventory, secrets)  # what a Redis starting now reads
    progress("redis: the API's user takes its new password beside the old one")

    def move_api(_write_url: str) -> None:
        # The API hosts onto the other database login, the new Redis password and the new
        # key, still accepting the old key; the database side retires the old login after.
        roll_api_hosts(paths, inventory, [new_key, old_key], progress)

    database_roles.rotate_api_database_role(inventory, leader, secrets, move_api)
    login = access.api_login()
    progress(f"database: the API logs in as {login}; the other login's password is new")
    set_api_passwords(inventory, secrets, progress, new_password, alone=True)
    progress("redis: the API's old password is refused from now on")
    roll_api_hosts(paths, inventory, [new_key], progress)
    progress("rotated: the API's database and Redis passwords and the token cache's key")


def set_api_passwords(
    inventory: Inventory,
    secrets: Secrets,
    progress: Progress,
    password: str,
    *,
    alone: bool = False,
) -> None:
    """Give the API's user ``password`` on every Redis and Sentinel, and save it.

    Beside its others, or ``alone``: every other password is dropped in the same
    ``ACL SETUSER`` (``resetpass`` first), not just the one this rotation replaces
    but any an earlier rotation that stopped half-way left beside it, which nobody
    holds any more but whoever copied it. Connections already authenticated stay so.
    """
    rules = ["resetpass", f">{password}"] if alone else [f">{password}"]
    operator = RedisAccess.of(secrets, OPERATOR_USER).client_options()
    targets: list[tuple[Host, int, tuple[str, ...]]] = [
        (host, REDIS_PORT, ("ACL", "SAVE")) for host in inventory.redis_hosts
    ]
    targets += [
        (host, SENTINEL_PORT, ("SENTINEL", "FLUSHCONFIG")) for host in inventory.with_role(SENTINEL)
    ]
    for host, port, save in targets:
        client = redis_lib.Redis(host.address, port, socket_timeout=5, **operator)
        try:
            client.execute_command("ACL", "SETUSER", API_USER, *rules)  # type: ignore[no-untyped-call]
            client.execute_command(*save)  # type: ignore[no-untyped-call]
        except redis_lib.ConnectionError:
            # Down: it starts again from its rendered files, which end with the new password.
            progress(f"{host.name}:{port}: not answering; it takes the new password when it starts")
        except redis_lib.RedisError as problem:
            raise ClusterError(
                f"{host.name}:{port}: could not change the API's Redis passwords "
                f"({type(problem).__name__})"
            ) from None
        finally:
            client.close()


def rerender_redis_files(paths: Paths, inventory: Inventory, secrets: Secrets) -> None:
    """Render the Redis hosts' and Sentinels' files again: the new password alone."""
    for host in inventory.redis_hosts:
        render.write_redis_files(paths, host, secrets)
    for host in inventory.with_role(SENTINEL):
        text = render.sentinel_conf(inventory, host, paths.data(host), secrets)
        write_private(paths.etc(host) / "sentinel.conf", text, render.REDIS_ACCOUNT)


def roll_api_hosts(
    paths: Paths, inventory: Inventory, token_cache_keys: list[str], progress: Progress
) -> None:
    """Give every API host a new api.env, one at a time, out of rotation while it restarts."""
    for host in inventory.with_role(API):
        render.write_api_env(inventory, paths, host, token_cache_keys)
        with out_of_rotation(paths, inventory, host):
            server = hosts.api_server(paths, host)
            server.stop(lambda _line: None)  # SIGTERM: gunicorn finishes what is under way
            server.start(lambda _line: None)
            if not wait_until(partial(_ready, host), BACK_TIMEOUT):
                raise ClusterError(f"{host.name}: the API is not ready after its restart")
        progress(f"{host.name}: serving with its new api.env")


def _ready(host: Host) -> bool:
    return hosts.api_answers(host, "/readyz") == 200


@contextmanager
def out_of_rotation(paths: Paths, inventory: Inventory, host: Host) -> Iterator[None]:
    """Take an API host out of every load balancer for the block, then wait until it is UP.

    ``maint`` sends it no new request; the block starts once no session on it
    is left (those under way have finished).
    """
    balancers = inventory.load_balancers
    for lb in balancers:
        lb_command(paths, lb, f"set server api/{host.name} state maint")
    try:
        drained = wait_until(
            lambda: all(current_sessions(paths, lb, host.name) == 0 for lb in balancers),
            DRAIN_TIMEOUT,
        )
        if not drained:
            raise ClusterError(f"{host.name}: requests still under way after draining")
        yield
    finally:
        for lb in balancers:
            lb_command(paths, lb, f"set server api/{host.name} state ready")
    back = wait_until(
        lambda: all(hosts.lb_servers(paths, lb).get(host.name) == "UP" for lb in balancers),
        BACK_TIMEOUT,
    )
    if not back:
        raise ClusterError(f"{host.name}: the load balancers did not take it back")


def lb_command(paths: Paths, lb: Host, command: str) -> str:
    """Send one command to ``lb``'s HAProxy stats socket (admin level) and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stats:
        stats.settimeout(2)
        stats.connect(str(paths.stats_socket(lb)))
        stats.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := stats.recv(65536):
            answer += chunk
    return answer.decode()


def current_sessions(paths: Paths, lb: Host, server: str) -> int | None:
    """Return the sessions ``lb`` has open on API host ``server`` now (None: no answer)."""
    for line in lb_command(paths, lb, "show stat").splitlines():
        fields = line.split(",")
        # `show stat`: proxy, server, qcur, qmax, scur (current sessions), ...
        if len(fields) > 4 and fields[0] == "api" and fields[1] == server:
            return int(fields[2] or 0) + int(fields[4] or 0)
    return None
