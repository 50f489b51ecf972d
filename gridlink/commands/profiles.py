"""The profile read model: one ready-to-send Profile document per user.

Every command that changes what a user's profile shows calls
``lock_profile`` first and ``refresh_profile`` last, in its own transaction:

- the lock (the user's ``profile_documents`` row, ``FOR UPDATE``) puts all
  writes of one user in a line, so limits hold under concurrent requests and
  each rebuild sees every write committed before it;
- the rebuild is one SQL statement: PostgreSQL renders the document (see
  ``gridlink.documents``) and takes the next version from a global sequence,
  so versions grow in commit order for every user;
- the same transaction marks the profile changed in ``profile_changes`` (the
  change stream's outbox, ``gridlink.cache.stream``): whatever happens to
  this process after the commit, the relay brings the document to Redis;
- after the commit, before the command answers, the new document is written
  through to the cache (store-if-newer: anonymous readers see it at once) and
  the primary's WAL position is remembered for the writer, so their next
  read waits for a replica that has it (read your writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, TextClause, text

from gridlink.cache import ProfileCache
from gridlink.cache.marks import WriteMarks
from gridlink.cache.stream import MARK_CHANGED
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.db.lsn import current_position
from gridlink.documents import PROFILE_JSON
from gridlink.errors import LimitReached

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileDocument:
    username: str
    version: int
    document: bytes


_LOCK = text("SELECT 1 FROM profile_documents WHERE user_id = :user_id FOR UPDATE")

# The first document of users: one account at sign-up, many at once when seeding.
CREATE_PROFILES = f"""
    INSERT INTO profile_documents (user_id, username, version, document)
    SELECT u.id, u.username, nextval('profile_version_seq'),
           convert_to({PROFILE_JSON}::text, 'UTF8')
    FROM users u"""

_CREATE = text(
    f"""{CREATE_PROFILES} WHERE u.id = :user_id
    RETURNING username, version, document
    """
)

_REBUILD = text(
    f"""
    UPDATE profile_documents p
    SET username = u.username,
        version = nextval('profile_version_seq'),
        document = convert_to({PROFILE_JSON}::text, 'UTF8')
    FROM users u
    WHERE u.id = p.user_id AND p.user_id = :user_id
    RETURNING p.username, p.version, p.document
    """
)

_RETIRE = text(
    """
    DELETE FROM profile_documents WHERE user_id = :user_id
    RETURNING username, nextval('profile_version_seq') AS version, ''::bytea AS document
    """
)


def lock_profile(uow: UnitOfWork, user_id: int) -> None:
    """Hold the user's profile row until commit: one write per user at a time."""
    uow.session.execute(_LOCK, {"user_id": user_id})
    uow.after_commit(lambda: remember_write(uow.primary, uow.write_marks, user_id))


def create_profile(uow: UnitOfWork, user_id: int) -> ProfileDocument:
    """Write the first document of a new user (whose next reads must find the account)."""
    uow.after_commit(lambda: remember_write(uow.primary, uow.write_marks, user_id))
    return _document(uow, _CREATE, user_id)


def refresh_profile(uow: UnitOfWork, user_id: int) -> ProfileDocument:
    """Rebuild the user's document from the rows, with a new version.

    A write that would make the document larger than the bound raises
    ``LimitReached`` (409) before anything is committed: the unit of work
    rolls the whole write back.
    """
    document = _document(uow, _REBUILD, user_id)
    refuse_oversized(uow, document)
    return document


def refuse_oversized(uow: UnitOfWork, document: ProfileDocument) -> None:
    """Raise ``LimitReached`` if ``document`` is over ``GRIDLINK_MAX_PROFILE_BYTES``."""
    limit = uow.settings.max_profile_bytes
    if len(document.document) > limit:
        raise LimitReached(
            "The profile would grow past its size limit: shorten or remove something first."
        )


def retire_profile(uow: UnitOfWork, user_id: int) -> ProfileDocument:
    """Remove the document of an account being deleted.

    The returned version is newer than any the user ever had: the tombstone
    (an empty document) the cache keeps in its place outranks every older copy.
    """
    return _document(uow, _RETIRE, user_id)


def remember_write(primary: Engine, marks: WriteMarks, user_id: int) -> None:
    """Remember where the primary's WAL stands now, after ``user_id``'s commit."""
    with primary.connect() as connection:
        position = current_position(connection)
    marks.remember(user_id, position)


def _document(uow: UnitOfWork, statement: TextClause, user_id: int) -> ProfileDocument:
    row = uow.session.execute(statement, {"user_id": user_id}).one()
    document = ProfileDocument(
        username=row.username, version=row.version, document=bytes(row.document)
    )
    uow.session.execute(MARK_CHANGED, {"username": document.username, "version": document.version})
    # A store Redis misses is not retried here: the change stream delivers it.
    uow.after_commit(lambda: _write_through(uow.profile_cache, document))
    return document


def _write_through(cache: ProfileCache, document: ProfileDocument) -> None:
    cache.store_profile(document.username, document.version, document.document)
