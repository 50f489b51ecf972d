"""No usable token rests in the database: a mail that carries one is written when it is sent.

The outbox holds only the order ("send a reset to this email"); the poller
makes the token, stores its hash, writes the mail and sends it. The
session's poller is pointed at a real (test) SMTP server that holds the
next mail silent, so the database can be read while a token mail is on its
way: between the request and the mail, no row of any table holds the token.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from email.message import EmailMessage

import falcon.testing
import pytest
from sqlalchemy import text

from gridlink.accounts.tokens import hash_token
from gridlink.mail.backends import SmtpMailer
from gridlink.mail.outbox import deliver_pending_mail
from gridlink.services import Services
from tests.support.accounts import RESET_SUBJECT, confirm_reset, request_reset
from tests.support.api import ApiUser, random_username
from tests.support.mail import token_in
from tests.support.mailserver import SmtpServer
from tests.support.waiting import wait_for

MAIL_WAIT_SECONDS = 30
# Every column that can hold text or bytes.
_TEXT_TYPES = ("text", "character varying", "character", "bytea", "json", "jsonb")


@pytest.fixture
def held_mail(services: Services) -> Iterator[SmtpServer]:
    """Send the session's mail through a test SMTP server for the test (``hold_next`` works)."""
    services.mail.deliver_now()  # what earlier tests queued goes the usual way first
    with SmtpServer() as smtp:
        usual = services.mail.mailer
        services.mail.mailer = SmtpMailer("127.0.0.1", smtp.port)
        try:
            yield smtp
        finally:
            smtp.release.set()
            services.mail.mailer = usual


def every_stored_value(services: Services) -> list[tuple[str, str | bytes]]:
    """Every text and bytes value of every table of the primary, named by table and column."""
    with services.primary.connect() as connection:
        columns = connection.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type = ANY(:types)"
            ),
            {"types": list(_TEXT_TYPES)},
        ).all()
        assert {table for table, _ in columns} >= {"mail_outbox", "password_resets", "users"}
        values: list[tuple[str, str | bytes]] = []
        for table, column in columns:
            rows: Iterable[str | bytes] = connection.execute(
                text(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL')
            ).scalars()
            values.extend((f"{table}.{column}", value) for value in rows)
    return values


def holding(values: list[tuple[str, str | bytes]], token: str) -> list[str]:
    """Name the columns whose values hold ``token``: as text, or as the bytes it encodes."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    found = []
    for name, value in values:
        if isinstance(value, str):
            held = token in value
        else:
            held = token.encode() in bytes(value) or raw in bytes(value)
        if held:
            found.append(name)
    return found


def received(smtp: SmtpServer, address: str, subject: str) -> list[EmailMessage]:
    return [mail for mail in smtp.received_by(address) if mail["Subject"] == subject]


def wait_for_mail(smtp: SmtpServer, address: str, subject: str) -> EmailMessage:
    wait_for(lambda: bool(received(smtp, address, subject)), MAIL_WAIT_SECONDS, f"{subject!r} mail")
    [mail] = received(smtp, address, subject)
    return mail


def resets_of(services: Services, user: ApiUser) -> list[bytes]:
    """The token hashes stored for ``user``'s password resets."""
    with services.primary.connect() as connection:
        stored: Iterable[bytes] = connection.execute(
            text(
                "SELECT r.token_hash FROM password_resets r JOIN users u ON u.id = r.user_id"
                " WHERE u.username = :u"
            ),
            {"u": user.username},
        ).scalars()
        return [bytes(token_hash) for token_hash in stored]


def test_no_row_holds_a_reset_token_between_the_request_and_the_mail(
    client: falcon.testing.TestClient, services: Services, held_mail: SmtpServer, user: ApiUser
) -> None:
    held_mail.hold_next()
    assert request_reset(client, user.email).status_code == 202
    assert held_mail.held.wait(MAIL_WAIT_SECONDS), "the reset mail was never sent"
    # The mail is on its way, and held: this is what rests in the database meanwhile.
    at_rest = every_stored_value(services)
    held_mail.release.set()  # the held attempt fails; the poller tries again

    token = token_in(wait_for_mail(held_mail, user.email, RESET_SUBJECT))
    assert holding(at_rest, token) == []
    assert holding(every_stored_value(services), token) == []
    # Stored as its hash (beside the hash of the held attempt's token, which no one knows).
    assert hash_token(token) in resets_of(services, user)
    assert confirm_reset(client, token).status_code == 204


def test_no_row_holds_an_email_confirmation_token_between_the_request_and_the_mail(
    client: falcon.testing.TestClient, services: Services, held_mail: SmtpServer, user: ApiUser
) -> None:
    new_email = f"{random_username('rest')}@example.com"
    held_mail.hold_next()
    asked = client.simulate_patch(
        "/api/users/me/",
        headers=user.headers,
        json={"email": new_email, "current_password": user.password},
    )
    assert asked.status_code == 200, asked.text
    assert held_mail.held.wait(MAIL_WAIT_SECONDS), "the confirmation mail was never sent"
    at_rest = every_stored_value(services)
    held_mail.release.set()

    token = token_in(wait_for_mail(held_mail, new_email, "Confirm your new Gridlink email"))
    assert holding(at_rest, token) == []
    assert holding(every_stored_value(services), token) == []
    confirmed = client.simulate_post(
        "/api/users/me/email/confirm/", headers=user.headers, json={"token": token}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json["email"] == new_email


def test_a_reset_asked_for_before_a_password_change_is_not_mailed_after_it(
    client: falcon.testing.TestClient,
    services: Services,
    held_mail: SmtpServer,
    user: ApiUser,
    other_user: ApiUser,
) -> None:
    # Another mail ahead in the outbox holds the poller, so the reset waits its turn.
    held_mail.hold_next()
    assert request_reset(client, other_user.email).status_code == 202
    assert held_mail.held.wait(MAIL_WAIT_SECONDS)
    assert request_reset(client, user.email).status_code == 202
    changed = client.simulate_post(
        "/api/auth/password/change/",
        headers=user.headers,
        json={"current_password": user.password, "new_password": "a changed password 1"},
    )
    assert changed.status_code == 204
    held_mail.release.set()

    # The outbox delivers in order: once the notice queued after the reset has
    # arrived, a reset mail would have arrived before it.
    wait_for_mail(held_mail, user.email, "Your Gridlink password was changed")
    wait_for_mail(held_mail, other_user.email, RESET_SUBJECT)
    assert received(held_mail, user.email, RESET_SUBJECT) == []
    assert resets_of(services, user) == []


class Recording:
    """A mail backend that keeps who each mail was for."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append(to)


def test_a_mail_on_its_way_is_not_sent_by_another_poller_meanwhile(
    client: falcon.testing.TestClient, services: Services, held_mail: SmtpServer, user: ApiUser
) -> None:
    held_mail.hold_next()
    assert request_reset(client, user.email).status_code == 202
    assert held_mail.held.wait(MAIL_WAIT_SECONDS)
    # The session's poller has claimed the mail and is sending it: another passes it by.
    other_poller = Recording()
    deliver_pending_mail(services.mail.engine, other_poller)
    assert user.email not in other_poller.sent
    held_mail.release.set()
    wait_for_mail(held_mail, user.email, RESET_SUBJECT)
