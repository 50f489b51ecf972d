"""Sending what a query found or a command answered, with the headers API.md promises."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from gridlink.commands.results import Created
from gridlink.errors import NotFound
from gridlink.queries.reader import ReadSource
from gridlink.web.http import send_json
from gridlink.web.idempotency import Answer

READ_SOURCE_HEADER = "X-Gridlink-Read-Source"


def send_read(
    resp: falcon.Response, body: bytes | None, source: ReadSource, missing: str = "Not found."
) -> None:
    """Send ``body`` as it is, saying where it came from; None is a 404."""
    resp.set_header(READ_SOURCE_HEADER, source.name)
    if body is None:
        raise NotFound(missing)
    send_json(resp, body)


def created_at(collection: str) -> Callable[[Created], Answer]:
    """Answer a creation with 201 and the new object's ``Location`` under ``collection``."""
    return lambda created: Answer(201, created.document, f"{collection}{created.slug}/")


def send_answer(resp: falcon.Response, answer: Answer) -> None:
    """Send a creating command's answer (first or replayed) with its Location."""
    send_json(resp, answer.body, answer.status)
    if answer.location is not None:
        resp.location = answer.location
    if answer.replayed:
        resp.set_header("Idempotent-Replayed", "true")
