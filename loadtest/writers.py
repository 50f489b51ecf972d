"""Writers that keep every acknowledged write: the yardstick of a failover.

Each writer thread logs in as its own seeded users and creates grids through
the load balancer, one ``Idempotency-Key`` per grid: a write that fails (a
503 during the switch, a connection cut) is retried with the same key until
it is acknowledged, so nothing is created twice and nothing acknowledged is
forgotten. Afterwards ``lost_writes`` looks for every acknowledged grid on
the primary of the moment.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from gridlink.db.urls import sqlalchemy_url
from infra import http_client

RETRY_PAUSE_SECONDS = 0.2
# A connection that fails: refused, reset, or cut mid-answer (a load balancer
# dying while it relays one: http.client's IncompleteRead is no OSError).
CONNECTION_FAILED = (OSError, http.client.HTTPException)
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass
class WriteLog:
    """What the writers saw: acknowledged grids with the moment of each answer, and errors."""

    acknowledged: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, slug)
    unavailable: int = 0  # 503: the contract's answer while no primary accepts writes
    server_errors: int = 0  # any other 5xx: a bug
    refused_connections: int = 0
    # Every answer that was not an acknowledgement, by what was asked: why writes stall.
    other_answers: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, slug: str) -> None:
        with self.lock:
            self.acknowledged.append((time.monotonic(), slug))

    def note(self, request: str, status: int) -> None:
        with self.lock:
            self.other_answers[f"{request} {status or 'no answer'}"] += 1

    def summary(self) -> str:
        """Say what the writers got: acknowledgements, and every other answer by kind."""
        with self.lock:
            others = ", ".join(f"{what} x {n}" for what, n in self.other_answers.most_common())
        return f"{len(self.acknowledged)} acknowledged; other answers: {others or 'none'}"

    def gap_around(self, moment: float, horizon: float = 60.0) -> float:
        """Return the longest time without an acknowledged write from ``moment`` on.

        Measured from the last acknowledgement before the fault to the first
        one after it, then the largest gap within ``horizon`` seconds.
        """
        with self.lock:
            times = sorted(t for t, _ in self.acknowledged)
        before = [t for t in times if t <= moment]
        after = [t for t in times if moment < t <= moment + horizon]
        if not after:
            return horizon
        points = [before[-1] if before else moment, *after]
        return max(later - earlier for earlier, later in itertools.pairwise(points))


def call_api(
    address: str, method: str, path: str, body: object, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """Send one JSON request (``body`` None: none) and return the status and the JSON object."""
    connection = http_client.connection(address, REQUEST_TIMEOUT_SECONDS)  # https: verified
    sent = None if body is None else json.dumps(body)
    kind = {} if body is None else {"Content-Type": "application/json"}
    try:
        connection.request(method, path, body=sent, headers={**kind, **headers})
        answer = connection.getresponse()
        payload = answer.read()
    finally:
        connection.close()
    try:
        document = json.loads(payload) if payload else {}
    except ValueError:
        document = {}
    return answer.status, document if isinstance(document, dict) else {}


class Writers:
    """Threads creating grids through ``address`` until stopped, keeping every acknowledgement."""

    def __init__(self, address: str, users: Sequence[str], password: str, threads: int = 4) -> None:
        self.address = address
        self.password = password
        self.log = WriteLog()
        self._stopping = threading.Event()
        shares = [share for index in range(threads) if (share := list(users[index::threads]))]
        # Set by each thread once it has logged in as all of its users (argon2: slow).
        self._logged_in = [threading.Event() for _ in shares]
        self._threads = [
            threading.Thread(target=self._write, args=(share, logged_in), daemon=True)
            for share, logged_in in zip(shares, self._logged_in, strict=True)
        ]

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_SECONDS * 2)

    def wait_for_writes(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` more writes are acknowledged than now."""
        target = len(self.log.acknowledged) + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.log.acknowledged) >= target:
                return True
            time.sleep(0.1)
        return False

    def wait_until_logged_in(self, timeout: float) -> bool:
        """Wait until every thread has logged in as each of its users and only writes.

        A fault injected before then meets logins too: each retried one costs an
        argon2 hash, CPU a failover on a busy machine needs.
        """
        deadline = time.monotonic() + timeout
        return all(event.wait(max(deadline - time.monotonic(), 0)) for event in self._logged_in)

    def _write(self, usernames: list[str], logged_in: threading.Event) -> None:
        tokens = [token for name in usernames if (token := self._login(name)) is not None]
        logged_in.set()
        full: set[str] = set()
        while tokens and not self._stopping.is_set():
            token = tokens[0]
            if not self._create_one(token):
                full.add(token)  # this user has as many grids as allowed: the next one
                tokens = [t for t in tokens if t not in full]
                continue
            tokens.append(tokens.pop(0))

    def _login(self, username: str) -> str | None:
        while not self._stopping.is_set():
            try:
                status, body = call_api(
                    self.address,
                    "POST",
                    "/api/auth/login/",
                    {"username": username, "password": self.password},
                    {},
                )
            except CONNECTION_FAILED:
                status, body = 0, {}
            if status == 200:
                return str(body["token"])
            self.log.note("login", status)
            time.sleep(RETRY_PAUSE_SECONDS)
        return None

    def _create_one(self, token: str) -> bool:
        """Create one grid, retrying its key until acknowledged; False if the user is full."""
        key = uuid.uuid4().hex
        headers = {"Authorization": f"Token {token}", "Idempotency-Key": key}
        while True:  # once sent, a key is retried until answered, even while stopping
            try:
                status, body = call_api(
                    self.address, "POST", "/api/grids/", {"title": key[:12]}, headers
                )
            except CONNECTION_FAILED:
                self.log.refused_connections += 1
                status, body = 0, {}
            if status == 201:
                self.log.ack(str(body["slug"]))
                return True
            self.log.note("create grid", status)
            error = body.get("error")
            if status == 409 and isinstance(error, dict) and error.get("type") == "limit_reached":
                return False
            if status == 503:
                self.log.unavailable += 1
            elif status >= 500:
                self.log.server_errors += 1
            time.sleep(RETRY_PAUSE_SECONDS)


def lost_writes(write_url: str, log: WriteLog) -> list[str]:
    """Return the acknowledged grids the primary (whichever it is now) does not have."""
    slugs = [slug for _, slug in log.acknowledged]
    engine = create_engine(sqlalchemy_url(write_url))
    try:
        with engine.connect() as connection:
            found: set[str] = set(
                connection.execute(
                    text("SELECT slug FROM grids WHERE slug = ANY(:slugs)"), {"slugs": slugs}
                ).scalars()
            )
    finally:
        engine.dispose()
    return [slug for slug in slugs if slug not in found]
