"""Which database errors mean the server went away, as opposed to a refusal of the request.

A lost, refused or timed-out connection surfaces as SQLAlchemy's
``OperationalError`` or ``InterfaceError``. A server demoted by a failover
answers a write with "read-only transaction", which ``services`` marks as
a disconnect: SQLAlchemy then raises the driver's own class (an
``InternalError``) with ``connection_invalidated`` set. The callers that
treat a write's outage differently from a refusal (503 instead of 500, a
count given back, a best-effort write given up) ask ``went_away``; a read,
which a demoted server still answers, needs only the first two classes.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


def went_away(error: BaseException | None) -> bool:
    """Tell whether ``error`` is the database being unreachable or demoted, not a refusal."""
    return isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
