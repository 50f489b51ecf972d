"""gunicorn settings for Gridlink (``gridlink serve`` passes this file with ``-c``).

Each value can be overridden on gunicorn's command line; ``infra.serving``
(``gridlink serve`` and every other launcher) sets ``--bind`` and ``--workers``.
The address and worker count default to the settings' (``GRIDLINK_BIND``,
``GRIDLINK_WORKERS``).
"""

import gc
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gridlink.accounts.seals import new_key
from gridlink.settings import Settings, SettingsError
from gridlink.web.logs import LOGGING
from infra.relay_supervisor import RelaySupervisor

# Not gridlink.web.metrics, nor anything importing prometheus_client: the library
# picks single- or multi-process storage once, at import, from this variable,
# and the workers inherit the master's modules. It must be set first.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
created_metrics_dirs: list[str] = []  # made by this master, removed when it exits
TOKEN_CACHE_KEYS_VARIABLE = Settings.variables()["token_cache_keys"].name

try:
    _settings = Settings.from_env(os.environ)
except SettingsError:
    _settings = Settings()  # on_starting names the bad value in one line and stops

wsgi_app = "gridlink.app:get_app()"
bind = _settings.bind
# TLS on every listener (the API's and the metrics one) when a certificate is set.
certfile = _settings.tls_certificate or None
keyfile = _settings.tls_key or None
# Threads per worker: a slow client holds one thread, not a whole process,
# and keep-alive connections are served (sync workers close every one).
# gthread, with a deadline for reading each request (infra/workers.py): a
# client trickling its request holds a thread for 10 s at most. Threads mostly
# wait on sockets and the database, so 8 per worker cost little and leave
# room for slow clients; production still puts a buffering proxy in front.
worker_class = "infra.workers.DeadlineThreadWorker"
workers = _settings.workers or multiprocessing.cpu_count() * 2
threads = 8
keepalive = 5
# No preload: each worker builds its own app, engines and background thread
# after the fork, so no connection or thread is shared across processes.
preload_app = False
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
# Every log line, the master's and the workers', is one JSON object (gridlink/web/logs.py).
logconfig_dict = LOGGING
# The app logs each request once (gridlink.requests); gunicorn's access line would repeat it.
logger_class = "infra.workers.RequestLineLogger"
proc_name = "gridlink"
# gunicorn 27's control socket (gunicornc: kill or add workers, reload, shut
# down) is one path per user ($HOME/.gunicorn/gunicorn.ctl): every master on a
# host would bind it in turn, and nothing here uses it. Signals and
# ``gridlink serve`` do the same work, so nothing listens for it.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Check the settings once in the master: a bad value stops start-up with one line."""
    # Each worker keeps its share of the limits while Redis is down (gridlink.accounts.ratelimit):
    # this server's own count, whatever an inherited environment said.
    workers_count = getattr(getattr(server, "cfg", None), "workers", workers)
    os.environ["GRIDLINK_SERVER_PROCESSES"] = str(workers_count)
    # Token entries in Redis are sealed (gridlink.accounts.seals): without keys set, this
    # launch makes one that its workers and relay inherit, so they open each other's.
    if not os.environ.get(TOKEN_CACHE_KEYS_VARIABLE, "").strip():
        os.environ[TOKEN_CACHE_KEYS_VARIABLE] = new_key()
    try:
        Settings.for_serving(os.environ)
    except SettingsError as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        sys.exit(2)
    prepare_metrics_dir()


def prepare_metrics_dir() -> None:
    """Give the workers an empty directory for their metric files, before any fork.

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is emptied of an earlier
    run's files; otherwise a fresh temporary directory is made (and removed
    on exit).
    """
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return
    created = tempfile.mkdtemp(prefix="gridlink-metrics-")
    created_metrics_dirs.append(created)
    os.environ[METRICS_DIR_VARIABLE] = created


relay_supervisors: list[RelaySupervisor] = []  # this master's, stopped when it exits


def when_ready(server: object) -> None:
    """Start the change relay beside the workers, restarted whenever it exits."""
    supervisor = RelaySupervisor()
    supervisor.start()
    relay_supervisors.append(supervisor)


def post_worker_init(worker: object) -> None:
    """Leave what the worker built at start-up out of every later garbage collection.

    The app, its pools and modules are about 100,000 objects that live as long
    as the worker. A full collection walks them all holding the interpreter
    lock: the first came within a second of a new worker's first requests
    (83-300 ms measured, in which none of its threads answered), and each later
    one would walk them again. Collected once here, before the first request,
    then frozen: later collections walk only what came after.
    """
    gc.collect()
    gc.freeze()


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live-only gauges; its counts stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call,unused-ignore]


def on_exit(server: object) -> None:
    for supervisor in relay_supervisors:
        supervisor.stop()
    for created in created_metrics_dirs:
        shutil.rmtree(created, ignore_errors=True)
