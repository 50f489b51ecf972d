"""gunicorn settings for Gridlink (``gridlink serve`` passes this file with ``-c``).

Each value can be overridden on gunicorn's command line; ``gridlink serve``
sets ``--bind`` and ``--workers`` from its own options.
"""

import multiprocessing
import os
import sys

from gridlink.settings import Settings, SettingsError

wsgi_app = "gridlink.app:get_app()"
bind = os.environ.get("GRIDLINK_BIND", "127.0.0.1:8000")
# Threads per worker: a slow client holds one thread, not a whole process,
# and keep-alive connections are served (sync workers close every one).
# gthread, with a deadline for reading each request (infra/workers.py): a
# client trickling its request holds a thread for 10 s at most. Threads mostly
# wait on sockets and the database, so 8 per worker cost little and leave
# room for slow clients; production still puts a buffering proxy in front.
worker_class = "infra.workers.DeadlineThreadWorker"
workers = multiprocessing.cpu_count() * 2
threads = 8
keepalive = 5
# No preload: each worker builds its own app, engines and background thread
# after the fork, so no connection or thread is shared across processes.
preload_app = False
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
proc_name = "gridlink"


def on_starting(server: object) -> None:
    """Check the settings once in the master: a bad value stops start-up with one line."""
    try:
        Settings.from_env(os.environ)
    except SettingsError as problem:
        print(f"gridlink: {problem}", file=sys.stderr)
        sys.exit(2)
