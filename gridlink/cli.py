"""The ``gridlink`` command: the local cluster, migrations, the server and admin tasks."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gridlink.ops.migrate import migrate
from gridlink.project import VAR
from gridlink.settings import Settings, SettingsError
from infra import cluster

if TYPE_CHECKING:
    from gridlink.cache.stream import StreamReport

LOCAL_CLUSTER_ROOT = VAR / "cluster"


def local_cluster(replicas: int = 1) -> cluster.ClusterLayout:
    return cluster.ClusterLayout(root=cluster.reachable_root(LOCAL_CLUSTER_ROOT), replicas=replicas)


def cmd_cluster_up(args: argparse.Namespace, settings: Settings) -> int:
    statuses = cluster.up(local_cluster(args.replicas))
    print(cluster.format_status(statuses))
    return 0


def cmd_cluster_status(args: argparse.Namespace, settings: Settings) -> int:
    print(cluster.format_status(cluster.status(local_cluster())))
    return 0


def cmd_cluster_down(args: argparse.Namespace, settings: Settings) -> int:
    cluster.down(local_cluster(), purge=args.purge)
    return 0


def cmd_staging(args: argparse.Namespace, settings: Settings) -> int:
    from infra.staging import driver

    paths = driver.default_paths()
    if args.staging_command == "up" and args.seed is not None and args.seed < 1:
        print("gridlink: --seed: must be a whole number of at least 1", file=sys.stderr)
        return 2
    if args.staging_command == "up":
        driver.up(paths, seed_users=args.seed)
        print(driver.format_status(driver.status(paths)))
    elif args.staging_command == "status":
        print(driver.format_status(driver.status(paths)))
    elif args.staging_command == "down":
        driver.down(paths, purge=args.purge)
    elif args.staging_command == "switchover":
        driver.switchover(paths, args.to)
    elif args.staging_command == "rotate-secrets":
        driver.rotate_secrets(paths)
    else:
        driver.fault(paths, args.action, args.hosts, delay=args.delay)
    return 0


def add_staging_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    staging = commands.add_parser("staging", help="staging's hosts as network namespaces (root)")
    staging_commands = staging.add_subparsers(dest="staging_command", required=True)
    up = staging_commands.add_parser("up", help="bring every host up (idempotent)")
    up.add_argument("--seed", type=int, metavar="N", help="seed N users (4 grids x 5 links)")
    staging_commands.add_parser("status", help="each host: service, health, lag")
    down = staging_commands.add_parser("down", help="stop everything, remove the namespaces")
    down.add_argument("--purge", action="store_true", help="also delete the data")
    switchover = staging_commands.add_parser(
        "switchover", help="hand the primary over (patronictl switchover), writes back in seconds"
    )
    switchover.add_argument(
        "--to", metavar="HOST", help="the database host to promote (default: the sync standby)"
    )
    staging_commands.add_parser(
        "rotate-secrets",
        help="replace the API's database and Redis passwords and the token cache's key, live",
    )
    fault = staging_commands.add_parser("fault", help="kill a host, cut or slow its link, restore")
    fault.add_argument("action", choices=("kill", "cut", "restore", "delay"))
    fault.add_argument("hosts", nargs="+", help="host names from the inventory, or 'all'")
    fault.add_argument("--delay", default="1ms", help="with delay: netem delay (default 1ms)")
    staging.set_defaults(handler=cmd_staging)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings.database_url)
    print("migrated the primary to the newest schema")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from infra.serving import gunicorn_command

    try:
        Settings.for_serving(os.environ)
    except SettingsError as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        return 2
    argv = gunicorn_command(args.bind or settings.bind, args.workers or settings.workers)
    # Replace this process: signals and the exit status are gunicorn's own.
    os.execv(argv[0], argv)


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    """Run the change relay until SIGTERM or Ctrl-C (one is active at a time; others wait)."""
    import logging.config
    import signal
    import threading

    from gridlink.cache.stream import ChangeRelay
    from gridlink.services import Services
    from gridlink.web.logs import LOGGING

    logging.config.dictConfig(LOGGING)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with Services.connected(settings) as services:
        ChangeRelay(settings.database_url, services.cache).run(stopping)
    return 0


def cmd_maintenance(args: argparse.Namespace, settings: Settings) -> int:
    """Delete expired and retired rows in batches (idempotent: run it hourly)."""
    from gridlink.ops.maintenance import run_maintenance
    from gridlink.services import make_engine

    engine = make_engine(settings.database_url, pool_size=1)
    try:
        run_maintenance(engine, settings, lambda line: print(line, flush=True))
    finally:
        engine.dispose()
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from gridlink.ops.demo import DEMO_USERNAME, load_demo
    from gridlink.services import Services

    with Services.connected(settings) as services:
        password = load_demo(services)
    if password is None:
        print(f"the demo profile is there: /api/users/{DEMO_USERNAME}/")
    else:
        print(f"loaded the demo profile /api/users/{DEMO_USERNAME}/ (password: {password})")
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    """Seed test users, grids and links; refuse bad counts with one line and status 2."""
    from gridlink.ops.seed import SeedError, SeedPlan, parse_count, read_password, seed
    from gridlink.services import Services

    try:
        plan = SeedPlan(
            users=parse_count("--users", args.users),
            grids=parse_count("--grids", args.grids),
            links=parse_count("--links", args.links),
        )
        plan.check(settings)
        password = read_password(args.password_file) if args.password_file else None
    except (SeedError, OSError) as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        return 2
    try:
        with Services.connected(settings) as services:
            result = seed(services, plan, password=password, warm=args.warm)
    except SeedError as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        return 1
    print(
        f"seeded {result.users:,} users ({result.username(result.first)} to "
        f"{result.username(result.last)}), {result.grids:,} grids and {result.links:,} links "
        f"in {result.seconds:.1f} s"
    )
    print(
        "phases: "
        + ", ".join(f"{name} {took:.1f} s" for name, took in result.phase_seconds.items())
    )
    if password is None:  # made here: whoever seeded needs it
        print(f"password of every seeded user: {result.password}")
    return 0


def add_seed_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gridlink.ops.seed import DEFAULT_GRIDS, DEFAULT_LINKS, DEFAULT_USERS

    seed_parser = commands.add_parser(
        "seed", help="add test users test_user_<n> with grids and links (one transaction)"
    )
    # Counts are checked by the command, not argparse: one line, whatever is wrong.
    for option, default, what in (
        ("--users", DEFAULT_USERS, "users to add"),
        ("--grids", DEFAULT_GRIDS, "grids per user"),
        ("--links", DEFAULT_LINKS, "links per grid"),
    ):
        seed_parser.add_argument(option, default=str(default), help=f"{what} (default {default:,})")
    seed_parser.add_argument(
        "--password-file",
        default=None,
        metavar="PATH",
        help="read every seeded user's password from the first line of PATH, '-' for standard "
        "input: never on the command line (default: a random one, printed)",
    )
    seed_parser.add_argument(
        "--warm", action="store_true", help="also store every new profile in the Redis cache"
    )
    seed_parser.set_defaults(handler=cmd_seed)


def _log_like_the_servers() -> None:
    """Write log lines as JSON on stderr, as the servers do, unless this process logs already.

    A test calling ``main`` has its own handlers: they are left alone.
    """
    import logging.config

    from gridlink.web.logs import LOGGING

    if not logging.getLogger().handlers:
        logging.config.dictConfig(LOGGING)


def cmd_users_set_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Promote or demote one user; exit 1 if there is no such user."""
    from functools import partial

    from gridlink.commands.accounts import set_admin
    from gridlink.commands.unit_of_work import run_command
    from gridlink.errors import NotFound
    from gridlink.services import Services

    _log_like_the_servers()  # the promotion's security event must leave its line
    try:
        with Services.connected(settings) as services:
            user = run_command(
                services, partial(set_admin, username=args.username, is_admin=args.is_admin)
            )
    except NotFound:
        print(f"gridlink: there is no user named {args.username!r}", file=sys.stderr)
        return 1
    role = "an administrator" if user.is_admin else "not an administrator"
    print(f"{user.username} is now {role}")
    return 0


def cmd_replicas(args: argparse.Namespace, settings: Settings) -> int:
    """Print the replicas as the router sees them; with --watch, redraw every second."""
    import signal
    import threading

    from gridlink.cache.stream import report_stream
    from gridlink.ops.replicas_view import format_snapshot, use_colour, watch
    from gridlink.services import Services

    services = Services.connect(settings)
    router = services.router

    def stream() -> StreamReport:
        return report_stream(services.primary, services.cache)

    colour = use_colour(sys.stdout, os.environ)
    try:
        if args.watch:
            # Ctrl-C is how --watch ends: it stops the loop between frames.
            stopping = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stopping.set())
            watch(router, sys.stdout, stopping, colour=colour, stream=stream)
            print()  # leave the prompt on a line of its own
        else:
            print(format_snapshot(router.refresh(), colour=colour, stream=stream()))
    except KeyboardInterrupt:
        print()
    finally:
        services.close()
    return 0


def add_users_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users_parser = commands.add_parser("users", help="administer user accounts")
    users_commands = users_parser.add_subparsers(dest="users_command", required=True)
    for name, is_admin, summary in (
        ("promote", True, "make a user an administrator"),
        ("demote", False, "take administrator rights away from a user"),
    ):
        action = users_commands.add_parser(name, help=summary)
        action.add_argument("username", help="the username (any case)")
        action.set_defaults(handler=cmd_users_set_admin, is_admin=is_admin)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridlink", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    cluster_parser = commands.add_parser("cluster", help="the local primary, replicas and Redis")
    cluster_commands = cluster_parser.add_subparsers(dest="cluster_command", required=True)
    up = cluster_commands.add_parser("up", help="start (or create) the local cluster")
    up.add_argument("--replicas", type=int, default=1, help="streaming replicas (default 1)")
    up.set_defaults(handler=cmd_cluster_up)
    cluster_commands.add_parser("status", help="each server, its port and lag").set_defaults(
        handler=cmd_cluster_status
    )
    down = cluster_commands.add_parser("down", help="stop what `up` started")
    down.add_argument("--purge", action="store_true", help="also delete the data")
    down.set_defaults(handler=cmd_cluster_down)

    commands.add_parser("migrate", help="apply the migrations to the primary").set_defaults(
        handler=cmd_migrate
    )

    serve = commands.add_parser("serve", help="run the API under gunicorn")
    serve.add_argument(
        "--bind", default=None, help="address:port to listen on (default: GRIDLINK_BIND)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help=(
            "worker processes (default: GRIDLINK_WORKERS, else "
            f"{multiprocessing.cpu_count() * 2}: twice the cores)"
        ),
    )
    serve.set_defaults(handler=cmd_serve)
    commands.add_parser(
        "relay", help="relay committed profile changes to Redis (the change stream)"
    ).set_defaults(handler=cmd_relay)
    commands.add_parser(
        "maintenance",
        help="delete expired tokens and keys, and soft-deleted rows past retention",
    ).set_defaults(handler=cmd_maintenance)
    commands.add_parser("demo", help="load the demo profile (user `demo`)").set_defaults(
        handler=cmd_demo
    )
    add_users_parser(commands)
    add_seed_parser(commands)
    add_staging_parser(commands)
    replicas = commands.add_parser(
        "replicas", help="the primary and each replica: reachable, rotation, lag"
    )
    replicas.add_argument("--watch", action="store_true", help="redraw every second (Ctrl-C)")
    replicas.set_defaults(handler=cmd_replicas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        return 2
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, settings)
    except cluster.ClusterError as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
