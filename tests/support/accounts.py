"""Account flows tests share: password resets through the mail, login attempts from an address,
an account's id."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import falcon.testing
from sqlalchemy import text

from gridlink.services import Services
from tests.support.abuse import an_address
from tests.support.mail import MAIL_WAIT_SECONDS, token_in
from tests.support.waiting import wait_for


def request_reset(client: falcon.testing.TestClient, email: str) -> falcon.testing.Result:
    # An address of its own: the per-address reset limit is not shared with other tests.
    return client.simulate_post(
        "/api/auth/password/reset/", json={"email": email}, remote_addr=an_address()
    )


RESET_SUBJECT = "Reset your Gridlink password"


def _new_mails_to(mail_dir: Path, address: str, before: set[Path]) -> list[EmailMessage]:
    parser = BytesParser(policy=policy.default)
    mails = [parser.parsebytes(path.read_bytes()) for path in set(mail_dir.glob("*.eml")) - before]
    return [
        mail
        for mail in mails
        if isinstance(mail, EmailMessage)
        and mail["To"] == address
        and mail["Subject"] == RESET_SUBJECT
    ]


def reset_token(client: falcon.testing.TestClient, mail_dir: Path, address: str) -> str:
    """Ask for a reset for ``address`` and return the token from the one new reset mail to it.

    Mails to other addresses (another test's, delivered meanwhile), and
    notices to this one (a password changed just before), are not it.
    """
    before = set(mail_dir.glob("*.eml"))
    assert request_reset(client, address).status_code == 202
    wait_for(
        lambda: bool(_new_mails_to(mail_dir, address, before)),
        MAIL_WAIT_SECONDS,
        f"a reset mail to {address}",
    )
    [mail] = _new_mails_to(mail_dir, address, before)
    return token_in(mail)


RESET_PASSWORD = "reset password 1"


def confirm_reset(
    client: falcon.testing.TestClient, token: str, new_password: str = RESET_PASSWORD
) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/auth/password/reset/confirm/", json={"token": token, "new_password": new_password}
    )


def attempt(
    client: falcon.testing.TestClient,
    username: str,
    password: str,
    address: str,
    device: str | None = None,
) -> falcon.testing.Result:
    """Log in from ``address``, presenting ``device`` if given."""
    body = {"username": username, "password": password}
    if device is not None:
        body["device"] = device
    return client.simulate_post("/api/auth/login/", json=body, remote_addr=address)


def find_user_id(services: Services, username: str) -> int | None:
    """The id of the account ``username`` on the primary, or None if there is none."""
    with services.primary.connect() as connection:
        found: int | None = connection.execute(
            text("SELECT id FROM users WHERE username = :u"), {"u": username}
        ).scalar_one_or_none()
    return found


def user_id_of(services: Services, username: str) -> int:
    found = find_user_id(services, username)
    assert found is not None, f"no account {username}"
    return found
