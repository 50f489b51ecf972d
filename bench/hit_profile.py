"""Where a cached profile read's time goes: CPU per request in process, and its profile.

``make bench`` runs this as a process of its own (``python -m bench.hit_profile``)
so that, as in a gunicorn worker, ``PROMETHEUS_MULTIPROC_DIR`` is set before
prometheus_client is imported (metrics go to mmap files) and the request log
line is formatted and written (to /dev/null, by ``JsonLinesHandler`` as under
gunicorn). It calls each WSGI app as
gunicorn does, for random seeded users whose profiles are cached, and prints
one JSON object (with ``rounds`` and ``requests``, how it measured):

- ``cpu_us``: CPU microseconds per request of Gridlink (every read through
  Redis), of Gridlink answering a hot set from its near cache, of the
  one-``HMGET`` app and of the constant-body app (``bench/constant_app.py``):
  the median over ``ROUNDS`` rounds, each of which measures every app once,
  in a shuffled order (the machine's neighbours change its speed by the
  second: one shot of each would compare moments, not apps);
- ``shares``: of Gridlink's profiled time per request, the parts spent in
  the Redis call, the metrics, the log line and everything else;
- ``instructions``: each app's instructions per request, counted by
  valgrind's callgrind (empty without valgrind): the same for the same code
  whatever the neighbours do, so two apps compare without the noise of
  timings. Each app serves ``COUNTED`` requests in a process of its own
  (``--count``) and once none; the difference, per request, is the count.
  The work of the app's own threads (the log writer's, the counting
  thread's, the near cache's pings) is in it; the threads that wake on a
  clock add a little more the slower valgrind runs.

Environment: the ``GRIDLINK_*`` settings of a seeded, cached cluster,
``BENCH_CONSTANT_BODY``, ``BENCH_FIRST_USER``/``BENCH_LAST_USER``,
``BENCH_HOT_PROFILES``.
"""

from __future__ import annotations

import os
import sys
import tempfile

# Before anything imports prometheus_client (gridlink.web.metrics does).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-metrics-"))

import argparse
import cProfile
import io
import logging
import pstats
import random
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from bench.constant_app import get_app as constant_app
from bench.constant_app import get_redis_app
from gridlink.app import create_app, get_app
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.web.batches import drain_all
from gridlink.web.logs import JsonFormatter, JsonLinesHandler

REQUESTS = 1000  # per app and round
ROUNDS = 15
COUNTED = 2000  # requests per app whose instructions callgrind counts
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
# Gridlink's parts, by the functions whose cumulative time they are.
PARTS = {
    "the Redis call (HMGET, parse)": (("profiles.py", "get_profile"),),
    "metrics (queued for the worker's counting thread)": (
        ("metrics.py", "observe_request"),
        ("metrics.py", "observe_profile_lookup"),
    ),
    "the JSON log line": (("logs.py", "log_request"),),
}


def environ(username: str) -> dict[str, Any]:
    """The WSGI environ gunicorn makes for ``GET /api/users/<username>/`` (no token)."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/api/users/{username}/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def serve(app: WsgiApp, usernames: list[str]) -> None:
    def start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"a cached read answered {status}")

    for username in usernames:
        b"".join(app(environ(username), start_response))


def cpu_us_per_request(
    apps: dict[str, tuple[WsgiApp, list[str]]], rng: random.Random
) -> dict[str, float]:
    """Return each app's median CPU microseconds per request over ``ROUNDS`` shuffled rounds."""
    for app, usernames in apps.values():
        serve(app, usernames)  # connections made, caches of the process filled
    spent: dict[str, list[float]] = {label: [] for label in apps}
    for _ in range(ROUNDS):
        for label in rng.sample(list(apps), len(apps)):
            app, usernames = apps[label]
            started = time.process_time()
            serve(app, usernames)
            spent[label].append((time.process_time() - started) / len(usernames) * 1e6)
    return {label: statistics.median(rounds) for label, rounds in spent.items()}


def shares(app: WsgiApp, usernames: list[str]) -> dict[str, float]:
    profile = cProfile.Profile()
    profile.enable()
    serve(app, usernames)
    profile.disable()
    cumulative = {
        (file.rpartition("/")[2], name): row[3]
        for (file, _line, name), row in pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
    }
    total = cumulative[("app.py", "__call__")]
    parts = {label: sum(cumulative.get(f, 0.0) for f in funcs) for label, funcs in PARTS.items()}
    parts["everything else (routing, headers, the answer)"] = total - sum(parts.values())
    return {label: spent / total for label, spent in parts.items()}


def near_cache_app() -> WsgiApp:
    """Build Gridlink with its near cache at the default size, once it is current."""
    settings = Settings.for_serving(os.environ).replace(
        near_cache_bytes=Settings().near_cache_bytes
    )
    services = Services.connect(settings)
    near = services.cache.near
    assert near is not None
    deadline = time.monotonic() + 15
    while not near.current():
        if time.monotonic() > deadline:
            raise RuntimeError("the near cache's invalidation connection never became current")
        time.sleep(0.01)
    return create_app(settings, services)


# Each app as ``main`` measures it: how to build it, and whether it reads the hot set.
APPS: dict[str, tuple[Callable[[], WsgiApp], bool]] = {
    "Gridlink": (get_app, False),
    "Gridlink, a hot set from its near cache": (near_cache_app, True),
    "one-HMGET app": (get_redis_app, False),
    "constant-body app": (constant_app, False),
}


def log_to_devnull() -> None:
    """Write the request lines as a worker does (``JsonLinesHandler``), to /dev/null."""
    handler = JsonLinesHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gridlink")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def usernames_to_read(rng: random.Random, count: int, *, hot: bool) -> list[str]:
    first, last = int(os.environ["BENCH_FIRST_USER"]), int(os.environ["BENCH_LAST_USER"])
    if hot:
        last = min(last, first + int(os.environ["BENCH_HOT_PROFILES"]) - 1)
    return [f"test_user_{rng.randint(first, last)}" for _ in range(count)]


def serve_counted(label: str, requests: int) -> NoReturn:
    """Serve ``requests`` reads with the app named ``label`` after a warm-up, then exit.

    What callgrind counts of this process, less what it counts of one that
    serves none, is what the requests cost: the app is built, connected and
    warmed the same way in both.
    """
    log_to_devnull()
    build, hot = APPS[label]
    app = build()
    rng = random.Random(13)
    serve(app, usernames_to_read(rng, REQUESTS, hot=hot))
    serve(app, usernames_to_read(rng, requests, hot=hot))
    drain_all()  # the log lines and counts they queued, written and counted
    os._exit(0)  # no clean-up counted: it is the same with and without the requests


def instructions_per_request() -> dict[str, float]:
    """Count each app's instructions per request with callgrind (nothing without valgrind)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {}
    counted: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as directory:
        for number, label in enumerate(APPS):
            runs = {}
            for requests in (0, COUNTED):  # side by side: one process each
                out = Path(directory) / f"{number}-{requests}.out"
                command = [
                    valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, "-m", "bench.hit_profile",
                    "--count", label, "--requests", str(requests),
                ]  # fmt: skip
                runs[out] = subprocess.Popen(command, stderr=subprocess.DEVNULL)
            totals = []
            for out, process in runs.items():
                if process.wait() != 0:
                    raise RuntimeError(f"callgrind: {label} exited with {process.returncode}")
                found = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.MULTILINE)
                if found is None:
                    raise RuntimeError(f"callgrind wrote no total for {label}")
                totals.append(int(found.group(1)))
            counted[label] = (totals[1] - totals[0]) / COUNTED
    return counted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.hit_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--count", choices=APPS, help="serve for callgrind's count, then exit")
    parser.add_argument("--requests", type=int, default=COUNTED)
    args = parser.parse_args(argv)
    if args.count:
        serve_counted(args.count, args.requests)
    log_to_devnull()
    rng = random.Random(11)
    reads = {hot: usernames_to_read(rng, REQUESTS, hot=hot) for hot in (False, True)}
    apps = {label: (build(), reads[hot]) for label, (build, hot) in APPS.items()}
    gridlink, usernames = apps["Gridlink"]
    result = {
        "cpu_us": cpu_us_per_request(apps, rng),
        "rounds": ROUNDS,
        "requests": REQUESTS,
        "shares": shares(gridlink, usernames),
        "instructions": instructions_per_request(),
        "counted": COUNTED,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
