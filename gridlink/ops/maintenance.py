"""``gridlink maintenance``: delete what no answer can need any more, in small batches.

Each rule is a table and a condition; rows matching it are deleted a batch
at a time, each batch its own short transaction (no long lock, no huge WAL
burst), until none is left. Running it again finds nothing: it is safe to
run as often as you like (hourly is the suggested schedule, see README).

- idempotency keys past their 24 hours (a replay after that creates anew);
- login tokens that expired or were revoked (they are refused either way:
  an unknown token is a 401 too);
- password-reset and email-change tokens used or expired, and OpenID sign-up
  tickets expired (a used one is deleted when used);
- outbox mail older than the tokens it carries (it could only deliver a dead
  token; normally the mail poller has long sent it);
- soft-deleted links and grids deleted longer ago than
  ``GRIDLINK_DELETED_RETENTION_DAYS`` (default 30).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text

from gridlink.mail.letters import MAIL_TOKEN_LIFETIME
from gridlink.settings import Settings
from gridlink.web.idempotency import KEY_LIFETIME

BATCH_SIZE = 1000


@dataclass(frozen=True)
class RetentionRule:
    """Rows of ``table`` matching ``condition`` (SQL; ``:retention_days`` is bound) go."""

    name: str
    table: str
    condition: str


def retention_rules() -> list[RetentionRule]:
    mail_lifetime = int(MAIL_TOKEN_LIFETIME.total_seconds())
    return [
        RetentionRule(
            "idempotency keys",
            "idempotency_keys",
            f"created_on < now() - interval '{KEY_LIFETIME}'",
        ),
        RetentionRule(
            "login tokens expired or revoked",
            "auth_tokens",
            "expires_on < now() OR revoked_on IS NOT NULL",
        ),
        RetentionRule(
            "password resets used or expired",
            "password_resets",
            "used_on IS NOT NULL OR expires_on < now()",
        ),
        RetentionRule(
            "email changes used or expired",
            "email_changes",
            "used_on IS NOT NULL OR expires_on < now()",
        ),
        RetentionRule(
            "sign-up tickets expired",
            "signup_tickets",
            "expires_on < now()",
        ),
        RetentionRule(
            "undelivered mail past its tokens' lifetime",
            "mail_outbox",
            f"created_on < now() - interval '{mail_lifetime} seconds'",
        ),
        # Links before grids: a grid's deletion would take its links without counting them.
        RetentionRule(
            "soft-deleted links past retention",
            "links",
            "is_deleted AND deleted_on < now() - make_interval(days => :retention_days)",
        ),
        RetentionRule(
            "soft-deleted grids past retention",
            "grids",
            "is_deleted AND deleted_on < now() - make_interval(days => :retention_days)",
        ),
    ]


def run_maintenance(
    engine: Engine,
    settings: Settings,
    report: Callable[[str], None] = print,
    batch_size: int = BATCH_SIZE,
) -> dict[str, int]:
    """Apply every retention rule; report progress per batch; return the rows deleted per rule."""
    deleted: dict[str, int] = {}
    for rule in retention_rules():
        statement = text(
            f"DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {rule.table} WHERE {rule.condition} LIMIT :batch_size))"
        )
        total = 0
        while True:
            with engine.begin() as connection:
                count = connection.execute(
                    statement,
                    {"batch_size": batch_size, "retention_days": settings.deleted_retention_days},
                ).rowcount
            total += count
            if count:
                report(f"  {rule.name}: {total} deleted so far")
            if count < batch_size:
                break
        deleted[rule.name] = total
        report(f"{rule.name}: {total} deleted")
    report(f"maintenance done: {sum(deleted.values())} rows deleted")
    return deleted
