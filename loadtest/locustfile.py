"""Load Gridlink the way its users do: many visitors, a few editors, an admin or two.

- ``Visitor`` (most of the traffic) reads the profiles of the seeded users
  (``gridlink seed``: ``test_user_0`` .. ``test_user_<N-1>``), re-reads one with
  ``If-None-Match`` as a browser does, and opens a grid it saw.
- ``Editor`` logs in as a seeded user (or, without the seeded password, signs
  up an account of its own), then creates, renames and deletes a grid and its
  links. After each write it reads the object back with its own token: that
  read must show the write (API.md promise 1), else the read is a failure.
  It deletes what it created, and its own account, when it stops.
- ``Admin`` polls ``GET /api/admin/replicas/`` with an admin's token.

Requests are named by route template, so the statistics group by endpoint.
When locust quits, the run fails (exit status 1) if any request failed or
the 95th percentile of all requests is over the threshold.

Options (each also read from the environment variable in brackets)::

    --profile-users N        seeded users the visitors read (LOADTEST_PROFILE_USERS, 1000)
    --first-profile-user F   ... from test_user_F on (LOADTEST_FIRST_PROFILE_USER, 0)
    --seeded-password PW     the seeded users' password (LOADTEST_SEEDED_PASSWORD)
    --admin-username NAME    the admin that polls (LOADTEST_ADMIN_USERNAME, test_user_0)
    --admin-password PW      its password (LOADTEST_ADMIN_PASSWORD, the seeded password)
    --p95-threshold-ms MS    the p95 that fails the run (LOADTEST_P95_MS, 500)

The user classes' weights come from LOADTEST_VISITOR_WEIGHT (10),
LOADTEST_EDITOR_WEIGHT (1) and LOADTEST_ADMIN_WEIGHT (1) and must be set
before locust starts (on every worker of a distributed run), because locust
drops a class of weight 0 before it parses its options.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
from argparse import Namespace
from collections.abc import Callable
from typing import Any

import gevent
from locust import FastHttpUser, between, constant, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

P95_THRESHOLD_MS = 500.0
MAX_FAILURE_RATIO = 0.0
SEEDED_PREFIX = "test_user_"  # gridlink seed's usernames
LINKS_PER_CYCLE = 2  # API.md allows 100 per grid; an editor holds one grid at a time

PROFILE = "/api/users/[username]/"
GRIDS = "/api/grids/"
GRID = "/api/grids/[slug]/"
LINKS = "/api/links/"
LINK = "/api/links/[slug]/"
GRID_LINKS = "/api/links/?grid=[slug]"
ME = "/api/users/me/"
LOGIN = "/api/auth/login/"
SIGNUP = "/api/auth/signup/"
LOGOUT = "/api/auth/logout/"
REPLICAS = "/api/admin/replicas/"

log = logging.getLogger("gridlink.loadtest")


def weight_from_env(name: str, default: int) -> int:
    """Return a user class weight from the environment (a whole number, 0 or more)."""
    value = int(os.environ.get(name, default))
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, not {value}")
    return value


@events.init_command_line_parser.add_listener
def add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--profile-users",
        type=int,
        default=1000,
        env_var="LOADTEST_PROFILE_USERS",
        help="how many seeded users the visitors read and the editors log in as",
    )
    parser.add_argument(
        "--first-profile-user",
        type=int,
        default=0,
        env_var="LOADTEST_FIRST_PROFILE_USER",
        help="the number of the first seeded user (a seed numbers on from existing test users)",
    )
    parser.add_argument(
        "--seeded-password",
        default="",
        env_var="LOADTEST_SEEDED_PASSWORD",
        is_secret=True,
        help="the seeded users' shared password; without it editors sign up their own accounts",
    )
    parser.add_argument(
        "--admin-username",
        default="test_user_0",
        env_var="LOADTEST_ADMIN_USERNAME",
        help="the administrator whose token polls the replica page",
    )
    parser.add_argument(
        "--admin-password",
        default="",
        env_var="LOADTEST_ADMIN_PASSWORD",
        is_secret=True,
        help="the administrator's password (default: the seeded password)",
    )
    parser.add_argument(
        "--p95-threshold-ms",
        type=float,
        default=P95_THRESHOLD_MS,
        env_var="LOADTEST_P95_MS",
        help="fail the run when the 95th percentile of all requests is over this",
    )


@events.quitting.add_listener
def check_thresholds(environment: Environment, **_kwargs: Any) -> None:
    """Make the run exit 1 when a request failed or the p95 is over the threshold."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master holds the whole run's statistics and decides
    # Locust's CSV writer rewrites the files every second and is not run again
    # at exit: give it one more turn, so the CSV has the editors' cleanup too.
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.1)
    total = environment.stats.total
    threshold = options_of(environment).p95_threshold_ms
    p95 = total.get_response_time_percentile(0.95)
    problems = []
    if total.num_requests == 0:
        problems.append("no request was made")
    if total.fail_ratio > MAX_FAILURE_RATIO:
        problems.append(f"{total.num_failures} of {total.num_requests} requests failed")
    if p95 > threshold:
        problems.append(f"p95 {p95} ms is over the {threshold:g} ms threshold")
    if problems:
        log.error("load test failed: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        log.info("load test passed: p95 %s ms (threshold %g ms), no failures", p95, threshold)


def options_of(environment: Environment) -> Namespace:
    """Return the parsed options (locust always parses them before it runs a locustfile)."""
    options: Namespace | None = environment.parsed_options
    assert options is not None
    return options


def seeded_username(environment: Environment) -> str:
    """Pick one of the seeded users at random."""
    options = options_of(environment)
    first = options.first_profile_user
    return f"{SEEDED_PREFIX}{random.randrange(first, first + options.profile_users)}"


def body_of(response: ResponseContextManager) -> Any:
    """Return the response's JSON body, or None when it has none or it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


class Visitor(FastHttpUser):
    """Read public profiles (no token), as browsers following a link in bio do."""

    weight = weight_from_env("LOADTEST_VISITOR_WEIGHT", 10)
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.last_seen: tuple[str, str, list[str]] | None = None  # username, ETag, grid slugs

    @task(6)
    def read_profile(self) -> None:
        username = seeded_username(self.environment)
        with self.client.get(
            f"/api/users/{username}/", name=PROFILE, catch_response=True
        ) as response:
            profile = body_of(response)
            if response.status_code != 200 or not isinstance(profile, dict):
                response.failure(f"profile answered {response.status_code}")
                return
            grids = [grid["slug"] for grid in profile.get("grids", [])]
            self.last_seen = (username, response.headers.get("ETag", ""), grids)

    @task(2)
    def read_profile_again(self) -> None:
        """Re-read the last profile with its ETag: 304 if unchanged, 200 if an editor changed it."""
        if self.last_seen is None:
            return
        username, etag, _grids = self.last_seen
        with self.client.get(
            f"/api/users/{username}/",
            name=PROFILE,
            headers={"If-None-Match": etag},
            catch_response=True,
        ) as response:
            if response.status_code in (200, 304):
                response.success()

    @task(2)
    def open_grid(self) -> None:
        if self.last_seen is None or not self.last_seen[2]:
            return
        slug = random.choice(self.last_seen[2])
        with self.client.get(f"/api/grids/{slug}/", name=GRID, catch_response=True) as response:
            # An editor may have deleted it since the profile was read.
            if response.status_code in (200, 404):
                response.success()


class Editor(FastHttpUser):
    """Create, rename and delete a grid and its links, checking that each write reads back."""

    weight = weight_from_env("LOADTEST_EDITOR_WEIGHT", 1)
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.headers: dict[str, str] = {}
        self.username = ""
        self.own_password: str | None = None  # set when this editor signed up its account
        self.grids: set[str] = set()  # created and not deleted yet: on_stop deletes them
        self.sign_in()

    def sign_in(self) -> None:
        """Log in as a seeded user, or sign up an account when the seeded password is not known."""
        seeded_password = options_of(self.environment).seeded_password
        if seeded_password:
            self.log_in(seeded_username(self.environment), seeded_password)
        else:
            self.sign_up()

    def log_in(self, username: str, password: str) -> None:
        body = {"username": username, "password": password}
        response = self.client.post(LOGIN, json=body, name=LOGIN)
        if response.status_code == 200:
            self.username = username
            self.headers = {"Authorization": f"Token {response.json()['token']}"}

    def sign_up(self) -> None:
        username = f"lt_{secrets.token_hex(8)}"
        password = secrets.token_urlsafe(12)
        body = {"username": username, "email": f"{username}@example.com", "password": password}
        response = self.client.post(SIGNUP, json=body, name=SIGNUP)
        if response.status_code == 201:
            self.username = username
            self.own_password = password
            self.headers = {"Authorization": f"Token {response.json()['token']}"}

    def on_stop(self) -> None:
        if not self.headers:
            return
        for slug in list(self.grids):
            self.delete_grid(slug)
        if self.own_password is not None:
            body = {"password": self.own_password}
            self.client.delete(ME, json=body, headers=self.headers, name=ME)
        else:
            self.client.post(LOGOUT, headers=self.headers, name=LOGOUT)
        self.headers = {}

    @task
    def edit_a_grid(self) -> None:
        """Run one editing session, from a new grid to its deletion, reading after each write."""
        if not self.headers:
            self.sign_in()  # the last attempt failed (and was counted as a failure)
            return
        grid = self.write("POST", GRIDS, GRIDS, {"title": f"Load test {secrets.token_hex(4)}"})
        if grid is None:
            return
        slug = grid["slug"]
        self.grids.add(slug)
        self.check_read(
            f"/api/grids/{slug}/", GRID, "new grid", lambda g: g["title"] == grid["title"]
        )

        links = []
        for number in range(LINKS_PER_CYCLE):
            body = {"grid": slug, "title": f"Link {number}", "url": f"https://example.com/{number}"}
            link = self.write("POST", LINKS, LINKS, body)
            if link is None:
                return
            links.append(link["slug"])
        self.check_read(
            f"/api/users/{self.username}/",
            PROFILE,
            "new links in the profile",
            lambda profile: set(links) <= profile_link_slugs(profile),
        )
        self.check_read(
            f"/api/links/?grid={slug}",
            GRID_LINKS,
            "new links in the grid's list",
            lambda page: [link["slug"] for link in page["data"]] == links,
        )

        title = f"Renamed {secrets.token_hex(4)}"
        if self.write("PATCH", f"/api/grids/{slug}/", GRID, {"title": title}) is None:
            return
        self.check_read(f"/api/grids/{slug}/", GRID, "renamed grid", lambda g: g["title"] == title)

        first = links[0]
        if self.write("PATCH", f"/api/links/{first}/", LINK, {"title": title}) is None:
            return
        self.check_read(f"/api/links/{first}/", LINK, "renamed link", lambda k: k["title"] == title)

        if self.write("DELETE", f"/api/links/{first}/", LINK) is None:
            return
        self.check_read(f"/api/links/{first}/", LINK, "deleted link", None, expected_status=404)
        self.delete_grid(slug)

    def delete_grid(self, slug: str) -> None:
        if self.write("DELETE", f"/api/grids/{slug}/", GRID) is None:
            return
        self.grids.discard(slug)
        self.check_read(
            f"/api/users/{self.username}/",
            PROFILE,
            "deleted grid in the profile",
            lambda profile: slug not in {grid["slug"] for grid in profile["grids"]},
        )

    def write(self, method: str, path: str, name: str, body: Any = None) -> Any:
        """Send one write; return its JSON body ({} for a 204), or None when it failed."""
        headers = dict(self.headers)
        if method == "POST":
            headers["Idempotency-Key"] = secrets.token_hex(16)
        response = self.client.request(method, path, name=name, json=body, headers=headers)
        if response.status_code >= 400 or response.status_code == 0:
            return None  # locust counted the failure already
        return body_of(response) if response.status_code != 204 else {}

    def check_read(
        self,
        path: str,
        name: str,
        what: str,
        shows: Callable[[Any], bool] | None,
        expected_status: int = 200,
    ) -> None:
        """Read ``path`` with this editor's token; fail the read unless it shows the write."""
        with self.client.get(
            path, name=name, headers=self.headers, catch_response=True
        ) as response:
            if response.status_code != expected_status:
                response.failure(
                    f"read-your-writes: {what}: answered {response.status_code}, "
                    f"not {expected_status}"
                )
            elif shows is not None and not shown(shows, body_of(response)):
                response.failure(f"read-your-writes: {what} not shown")
            else:
                response.success()


def shown(shows: Callable[[Any], bool], body: Any) -> bool:
    """Apply ``shows`` to a body; a body without the expected shape shows nothing."""
    try:
        return shows(body)
    except (KeyError, TypeError):
        return False


def profile_link_slugs(profile: Any) -> set[str]:
    """Return the slugs of every link of every grid of a profile."""
    return {link["slug"] for grid in profile["grids"] for link in grid["links"]}


class Admin(FastHttpUser):
    """Poll the replica page as the admin dashboard does, once a second."""

    weight = weight_from_env("LOADTEST_ADMIN_WEIGHT", 1)
    wait_time = constant(1.0)

    def on_start(self) -> None:
        options = options_of(self.environment)
        password = options.admin_password or options.seeded_password
        body = {"username": options.admin_username, "password": password}
        response = self.client.post(LOGIN, json=body, name=LOGIN)
        token = response.json()["token"] if response.status_code == 200 else ""
        self.headers = {"Authorization": f"Token {token}"}

    @task
    def poll_replicas(self) -> None:
        with self.client.get(
            REPLICAS, name=REPLICAS, headers=self.headers, catch_response=True
        ) as response:
            page = body_of(response)
            if response.status_code != 200 or not isinstance(page, dict):
                response.failure(f"replica page answered {response.status_code}")
            elif not isinstance(page.get("replicas"), list):
                response.failure("replica page without a replicas list")
