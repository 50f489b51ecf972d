"""Seed data at scale: ``gridlink seed --users N --grids G --links L [--warm]``.

Users ``test_user_<i>`` (numbered on from the highest that exists, so a second
run adds new users), each with G grids of L links, all sharing one password
whose argon2 hash is computed once. Everything is written in one transaction
on the primary:

- rows go in with PostgreSQL ``COPY`` from a stream made while it is read
  (never ORM objects); slugs are ``gridlink.slugs.new_slug``'s 128 random bits;
- the profile documents are built inside PostgreSQL by the same statement the
  sign-up command uses (``gridlink.commands.profiles.CREATE_PROFILES``), per
  batch of users, with versions from the same sequence: a seeded profile is
  byte for byte what a write would have built;
- the same transaction marks every new profile changed (``profile_changes``),
  so the change relay carries the documents to Redis like any other write;
- with ``warm``, after the commit, every new document is stored in Redis
  through the cache's store-if-newer script, pipelined.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import psycopg2.errors
from psycopg2 import sql
from sqlalchemy import bindparam, text
from tqdm import tqdm

from gridlink.accounts.passwords import hash_password
from gridlink.cache.stream import MARK_USERS_CHANGED
from gridlink.commands.profiles import CREATE_PROFILES
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.slugs import GRID_PREFIX, LINK_PREFIX, is_username, new_slug

USERNAME_PREFIX = "test_user_"
EMAIL_DOMAIN = "example.com"
DEFAULT_USERS = 10_000
DEFAULT_GRIDS = 10
DEFAULT_LINKS = 10
# Two seeds at once would pick the same numbers: the second waits for the first.
_SEED_LOCK_KEY = 0x6772_6964_7365_6564  # "gridseed"
# Users per profile-building statement: big enough to be set-based, small
# enough for the progress bar to move.
_PROFILE_BATCH = 500
# Users whose rows make one chunk of a COPY stream.
_COPY_BATCH = 200
_WARM_BATCH = 500

# The highest n of a test_user_<n> username or email (-1 if there is none).
HIGHEST_TEST_USER_NUMBER = """
    SELECT coalesce(max(n), -1) FROM (
        SELECT substring(lower(username) FROM '^test_user_([0-9]+)$')::numeric AS n FROM users
        UNION ALL
        SELECT substring(lower(email) FROM '^test_user_([0-9]+)@example[.]com$')::numeric
        FROM users
    ) numbers
"""


_PREFER_LZ4 = """
    SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings
    WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)
"""
# The seeded tables whose indexes and keys a large seed rebuilds (users are few).
_BULK_TABLES = ("grids", "links")
# Secondary indexes (not backing a constraint) and unique and foreign keys of some tables.
_SECONDARY = """
    SELECT c.relname, i.relname, 'index', pg_get_indexdef(x.indexrelid)
    FROM pg_index x
    JOIN pg_class c ON c.oid = x.indrelid
    JOIN pg_class i ON i.oid = x.indexrelid
    WHERE c.relname = ANY(%(tables)s) AND c.relnamespace = 'public'::regnamespace
      AND NOT x.indisprimary
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
    UNION ALL
    SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
    WHERE c.relname = ANY(%(tables)s) AND c.relnamespace = 'public'::regnamespace
      AND k.contype IN ('u', 'f')
"""

_DOCUMENTS = text(
    "SELECT username, version, document FROM profile_documents WHERE user_id IN :user_ids"
).bindparams(bindparam("user_ids", expanding=True))


class SeedError(ValueError):
    """A seed that cannot be done as asked, in one sentence."""


@dataclass(frozen=True)
class SeedPlan:
    """How much to seed: ``users`` users with ``grids`` grids of ``links`` links each."""

    users: int = DEFAULT_USERS
    grids: int = DEFAULT_GRIDS
    links: int = DEFAULT_LINKS

    def check(self, settings: Settings) -> None:
        """Raise ``SeedError`` unless every count is positive and within the API's limits."""
        for option, value, limit, what in (
            ("--users", self.users, None, ""),
            ("--grids", self.grids, settings.max_grids_per_user, "grids per user"),
            ("--links", self.links, settings.max_links_per_grid, "links per grid"),
        ):
            if value < 1:
                raise SeedError(f"{option} must be at least 1 (got {value})")
            if limit is not None and value > limit:
                raise SeedError(f"{option} must be at most {limit}, the limit of {what}")

    @property
    def total_grids(self) -> int:
        return self.users * self.grids

    @property
    def total_links(self) -> int:
        return self.total_grids * self.links


@dataclass(frozen=True)
class SeedResult:
    """What a seed made: users ``test_user_<first>`` to ``test_user_<last>``, and its times."""

    first: int
    last: int
    password: str
    grids: int
    links: int
    seconds: float
    phase_seconds: dict[str, float]

    @property
    def users(self) -> int:
        return self.last - self.first + 1

    def username(self, number: int) -> str:
        return f"{USERNAME_PREFIX}{number}"


def parse_count(option: str, raw: str) -> int:
    """Read a whole number given to ``option``; raise ``SeedError`` naming it otherwise."""
    try:
        return int(raw)
    except ValueError:
        raise SeedError(f"{option} must be a whole number (got {raw!r})") from None


def read_password(path: str) -> str:
    """Read the seeded users' password from the first line of ``path`` ('-': standard input).

    A password is read, never given on the command line, where ``ps`` shows it to everyone.
    """
    if path == "-":
        line = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as given:
            line = given.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise SeedError(f"--password-file: {path} has no password on its first line")
    return password


class _Phases:
    """One progress bar across the phases, and the time each phase took."""

    def __init__(self, total: int, stream: IO[str] | None) -> None:
        self.bar = tqdm(
            total=total, unit="row", unit_scale=True, file=stream, disable=stream is None
        )
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._started = 0.0

    def start(self, name: str) -> None:
        self._finish()
        self._name, self._started = name, time.perf_counter()
        self.bar.set_description(name)

    def advance(self, rows: int) -> None:
        self.bar.update(rows)

    def close(self) -> None:
        self._finish()
        self.bar.close()

    def _finish(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._started


class _CopyStream:
    """A file-like object for ``copy_expert`` that makes its text while it is read."""

    def __init__(self, chunks: Iterator[tuple[str, int]], advance: Callable[[int], None]) -> None:
        self._chunks = chunks
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        # copy_expert sends whatever one read returns: a chunk can be any length.
        for chunk, rows in self._chunks:
            self._advance(rows)
            return chunk.encode()
        return b""


def seed(
    services: Services,
    plan: SeedPlan,
    *,
    password: str | None = None,
    warm: bool = False,
    progress: IO[str] | None = sys.stderr,
    rebuild_indexes: bool | None = None,
) -> SeedResult:
    """Add ``plan``'s users, grids, links and profiles in one transaction, then maybe warm.

    ``password`` (default: a random one, returned) is every seeded user's password.
    ``rebuild_indexes``: set the links' and grids' indexes and keys aside while
    loading and build them afresh (see ``_set_aside``); by default only when the
    seed at least doubles the links table, where rebuilding is the cheaper way.
    """
    started = time.perf_counter()
    plan.check(services.settings)
    password = password or secrets.token_urlsafe(12)
    password_hash = hash_password(password)  # once: about 0.1 s and 64 MiB each
    # The bar counts rows written, and each profile as the links it renders:
    # that is where the time goes, so the bar moves at an even pace.
    rows = plan.users + plan.total_grids + plan.total_links + plan.total_links
    phases = _Phases(rows + (plan.users if warm else 0), progress)
    try:
        first, user_ids = _load(
            services, plan, password_hash, phases, rebuild_indexes=rebuild_indexes
        )
        if warm:
            phases.start("warm cache")
            warm_profiles(services, user_ids, phases.advance)
    finally:
        phases.close()
    return SeedResult(
        first=first,
        last=first + plan.users - 1,
        password=password,
        grids=plan.total_grids,
        links=plan.total_links,
        seconds=time.perf_counter() - started,
        phase_seconds=phases.seconds,
    )


def _load(
    services: Services,
    plan: SeedPlan,
    password_hash: str,
    phases: _Phases,
    *,
    rebuild_indexes: bool | None,
) -> tuple[int, list[int]]:
    """Write everything in one transaction; return the first user's number and the users' ids."""
    connection: Any = services.primary.raw_connection()
    try:
        cursor = connection.cursor()
        # A seed is one long transaction that nobody waits on: the server's
        # statement timeout is for requests, and losing the last commit in a
        # crash only loses a seed that is then run again.
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        # Documents are tens of kilobytes that TOAST compresses: lz4 instead of
        # pglz takes about a fifth off the profile phase's CPU time here, and
        # reads back faster. Other values and later writes keep the default.
        cursor.execute(_PREFER_LZ4)
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SEED_LOCK_KEY,))
        cursor.execute(HIGHEST_TEST_USER_NUMBER)
        first = int(cursor.fetchone()[0]) + 1
        last_username = f"{USERNAME_PREFIX}{first + plan.users - 1}"
        if not is_username(last_username):
            raise SeedError(f"{last_username} would be longer than a username may be")
        if rebuild_indexes is None:
            rebuild_indexes = plan.total_links >= _estimated_rows(cursor, "links")
        set_aside = _set_aside(cursor, _BULK_TABLES) if rebuild_indexes else []

        phases.start("users")
        user_ids = _new_ids(cursor, "users", plan.users)
        _copy(
            cursor,
            "users (id, username, email, password_hash, display_name)",
            _user_rows(first, user_ids, password_hash),
            phases.advance,
        )
        phases.start("grids")
        grid_ids = _new_ids(cursor, "grids", plan.total_grids)
        _copy(
            cursor,
            "grids (id, slug, user_id, title)",
            _grid_rows(plan, user_ids, grid_ids),
            phases.advance,
        )
        phases.start("links")
        _copy(
            cursor,
            "links (slug, grid_id, user_id, title, url, background, width, height, position)",
            _link_rows(plan, first, user_ids, grid_ids),
            phases.advance,
        )
        if set_aside:
            phases.start("indexes and foreign keys")
            for statement in set_aside:
                cursor.execute(statement)
        phases.start("analyze")
        # Fresh statistics: the profile statements plan their index lookups on them.
        cursor.execute("ANALYZE users, grids, links")
        phases.start("profiles")
        for batch in _batches(user_ids, _PROFILE_BATCH):
            cursor.execute(f"{CREATE_PROFILES} WHERE u.id = ANY(%s)", (batch,))
            cursor.execute(MARK_USERS_CHANGED, (batch,))
            phases.advance(len(batch) * plan.grids * plan.links)
        phases.start("commit")
        connection.commit()
    except psycopg2.errors.UniqueViolation:
        # Only a sign-up racing the seed for one of its names gets here.
        raise SeedError(
            "a user signed up as one of the seeded names meanwhile: seed again"
        ) from None
    finally:
        connection.close()  # back to the pool; an uncommitted transaction is rolled back
    return first, user_ids


def _estimated_rows(cursor: Any, table: str) -> float:
    """Return the planner's row estimate for ``table`` (0 for one never analysed)."""
    cursor.execute("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = %s::regclass", (table,))
    return float(cursor.fetchone()[0])


def secondary_indexes_and_keys(
    cursor: Any, tables: tuple[str, ...]
) -> list[tuple[str, str, str, str]]:
    """List (table, name, kind, definition) of the tables' secondary indexes and keys.

    ``kind`` is ``index``, ``u`` (unique key) or ``f`` (foreign key).
    """
    cursor.execute(_SECONDARY, {"tables": list(tables)})
    rows: list[tuple[str, str, str, str]] = cursor.fetchall()
    return rows


def _set_aside(cursor: Any, tables: tuple[str, ...]) -> list[str]:
    """Drop the tables' secondary indexes and unique and foreign keys; return what restores them.

    Inserting a million rows into four b-trees and checking two foreign keys a
    row at a time is most of a large seed's time; building each index once by
    sorting and checking each key with one join is a fraction of it. The
    definitions are read from the catalog, so what comes back is exactly what
    the migrations made, and it all happens in the seed's transaction: if it
    fails, nothing was ever dropped. Meanwhile the tables are locked.
    """
    rows = secondary_indexes_and_keys(cursor, tables)
    for table, name, kind, _definition in rows:
        if kind == "index":
            cursor.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        else:
            cursor.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
    # Indexes first: the foreign keys' checks are joins that use them.
    restore = [definition for _table, _name, kind, definition in rows if kind == "index"]
    for wanted in ("u", "f"):
        restore += [
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ")
            .format(sql.Identifier(table), sql.Identifier(name))
            .as_string(cursor)
            + definition
            for table, name, kind, definition in rows
            if kind == wanted
        ]
    return restore


def _new_ids(cursor: Any, table: str, count: int) -> list[int]:
    """Take ``count`` ids from the table's own sequence (other writers keep theirs)."""
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
        (table, count),
    )
    return [row[0] for row in cursor.fetchall()]


def _copy(
    cursor: Any, target: str, chunks: Iterator[tuple[str, int]], advance: Callable[[int], None]
) -> None:
    cursor.copy_expert(f"COPY {target} FROM STDIN", _CopyStream(chunks, advance), size=1 << 20)


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _user_rows(first: int, user_ids: list[int], password_hash: str) -> Iterator[tuple[str, int]]:
    for start in range(0, len(user_ids), _COPY_BATCH):
        batch = user_ids[start : start + _COPY_BATCH]
        lines = []
        for offset, user_id in enumerate(batch):
            number = first + start + offset
            lines.append(
                f"{user_id}\t{USERNAME_PREFIX}{number}\t{USERNAME_PREFIX}{number}@{EMAIL_DOMAIN}"
                f"\t{password_hash}\tTest User {number}\n"
            )
        yield "".join(lines), len(batch)


def _grid_rows(
    plan: SeedPlan, user_ids: list[int], grid_ids: list[int]
) -> Iterator[tuple[str, int]]:
    per_chunk = _COPY_BATCH * plan.grids
    for start in range(0, len(grid_ids), per_chunk):
        lines = []
        for index in range(start, min(start + per_chunk, len(grid_ids))):
            user_id = user_ids[index // plan.grids]
            lines.append(
                f"{grid_ids[index]}\t{new_slug(GRID_PREFIX)}\t{user_id}"
                f"\tGrid {index % plan.grids + 1}\n"
            )
        yield "".join(lines), len(lines)


def _link_rows(
    plan: SeedPlan, first: int, user_ids: list[int], grid_ids: list[int]
) -> Iterator[tuple[str, int]]:
    """Each grid's links at positions 0..L-1; a few sizes and backgrounds for variety."""
    backgrounds = ("", "", "/bg/colours.jpg", "https://example.com/bg/sea.jpg")
    for user_start in range(0, len(user_ids), _COPY_BATCH):
        lines = []
        for user_index in range(user_start, min(user_start + _COPY_BATCH, len(user_ids))):
            user_id = user_ids[user_index]
            site = f"https://example.com/{USERNAME_PREFIX}{first + user_index}"
            for grid in range(plan.grids):
                grid_id = grid_ids[user_index * plan.grids + grid]
                for position in range(plan.links):
                    lines.append(
                        f"{new_slug(LINK_PREFIX)}\t{grid_id}\t{user_id}\tLink {position + 1}"
                        f"\t{site}/{grid}/{position}\t{backgrounds[position % 4]}"
                        f"\t{position % 3 + 1}\t{position % 2 + 1}\t{position}\n"
                    )
        yield "".join(lines), len(lines)


def warm_profiles(
    services: Services, user_ids: list[int], advance: Callable[[int], None] = lambda rows: None
) -> int:
    """Store the users' documents in the cache, a pipelined batch at a time; return how many.

    Read from the primary after the commit, they are authoritative; the cache
    still keeps any newer version a write stored meanwhile.
    """
    stored = 0
    with services.primary.connect() as connection:
        for batch in _batches(user_ids, _WARM_BATCH):
            rows = connection.execute(_DOCUMENTS, {"user_ids": batch}).all()
            count = services.cache.store_profiles(
                (row.username, row.version, bytes(row.document)) for row in rows
            )
            if count is None:
                raise SeedError(
                    "Redis did not answer: the seed is committed, the cache is not warm"
                )
            stored += count
            advance(len(batch))
    return stored
