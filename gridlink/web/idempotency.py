"""Idempotency keys for creating POSTs: the first answer, kept on the primary for 24 hours.

A creating command returns what it created; the resource makes the HTTP
answer of it (``answer_for``) and this module keeps that answer under the
key, in the same transaction as what it created, so either both exist or
neither does: a replay can never find an answer for an object that was
rolled back, nor create the object twice. A transaction-level advisory lock
on (user, key) tells a concurrent duplicate that the first request is still
running (409) instead of making it wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import text

from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.errors import Conflict, IdempotencyMismatch
from gridlink.services import Services

KEY_LIFETIME = "24 hours"

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to a creating POST, as kept for replays: status, body, Location."""

    status: int
    body: bytes
    location: str | None = None
    replayed: bool = False


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key and a fingerprint of the request it came with."""

    key: str
    request_hash: bytes

    @classmethod
    def for_request(cls, key: str, method: str, path: str, body: Any) -> IdempotencyKey:
        fingerprint = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
        return cls(key=key, request_hash=hashlib.sha256(fingerprint).digest())


_TRY_LOCK = text(
    "SELECT pg_try_advisory_xact_lock(hashtextextended(CAST(:user_id AS text) || ':' || :key, 0))"
)

_FIND = text(
    f"""
    SELECT request_hash, status, response_body, response_location
    FROM idempotency_keys
    WHERE user_id = :user_id AND key = :key AND created_on > now() - interval '{KEY_LIFETIME}'
    """
)

# An expired answer under the same key is replaced.
_STORE = text(
    """
    INSERT INTO idempotency_keys
        (user_id, key, request_hash, status, response_body, response_location)
    VALUES (:user_id, :key, :request_hash, :status, :body, :location)
    ON CONFLICT (user_id, key) DO UPDATE SET
        request_hash = EXCLUDED.request_hash, created_on = now(), status = EXCLUDED.status,
        response_body = EXCLUDED.response_body, response_location = EXCLUDED.response_location
    """
)


def run_creating_command(
    services: Services,
    user_id: int,
    idempotency_key: IdempotencyKey | None,
    create: Callable[[UnitOfWork], T],
    answer_for: Callable[[T], Answer],
) -> Answer:
    """Run ``create`` in one transaction, or replay its first answer for a repeated key.

    ``answer_for`` (the resource's) makes the HTTP answer of what was created;
    it is stored with the object, in the same transaction.
    """
    with UnitOfWork.from_services(services) as uow:
        if idempotency_key is not None:
            stored = _claim(uow, user_id, idempotency_key)
            if stored is not None:
                return stored
        answer = answer_for(create(uow))
        if idempotency_key is not None:
            uow.session.execute(
                _STORE,
                {
                    "user_id": user_id,
                    "key": idempotency_key.key,
                    "request_hash": idempotency_key.request_hash,
                    "status": answer.status,
                    "body": answer.body,
                    "location": answer.location,
                },
            )
        uow.commit()
        return answer


def _claim(uow: UnitOfWork, user_id: int, idempotency_key: IdempotencyKey) -> Answer | None:
    """Take the key for this transaction; return the stored answer if there is one."""
    params = {"user_id": user_id, "key": idempotency_key.key}
    if not uow.session.execute(_TRY_LOCK, params).scalar_one():
        raise Conflict("A request with this Idempotency-Key is still in progress.")
    row = uow.session.execute(_FIND, params).one_or_none()
    if row is None:
        return None
    if bytes(row.request_hash) != idempotency_key.request_hash:
        raise IdempotencyMismatch()
    return Answer(
        status=row.status,
        body=bytes(row.response_body),
        location=row.response_location,
        replayed=True,
    )
