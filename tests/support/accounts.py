"""Account flows tests share: password resets through the mail, login attempts from an address."""

from __future__ import annotations

import re
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import falcon.testing

from tests.support.abuse import an_address
from tests.support.mail import MAIL_WAIT_SECONDS


def request_reset(client: falcon.testing.TestClient, email: str) -> falcon.testing.Result:
    # An address of its own: the per-address reset limit is not shared with other tests.
    return client.simulate_post(
        "/api/auth/password/reset/", json={"email": email}, remote_addr=an_address()
    )


def reset_token(client: falcon.testing.TestClient, mail_dir: Path, address: str) -> str:
    """Ask for a reset for ``address`` and return the token from the one new mail."""
    before = set(mail_dir.glob("*.eml"))
    assert request_reset(client, address).status_code == 202
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while not set(mail_dir.glob("*.eml")) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    [new_mail] = set(mail_dir.glob("*.eml")) - before
    mail = BytesParser(policy=policy.default).parsebytes(new_mail.read_bytes())
    assert isinstance(mail, EmailMessage)
    body = mail.get_body(("plain",))
    assert body is not None
    match = re.search(r'"token": "([A-Za-z0-9_-]+)"', body.get_content())
    assert match, body.get_content()
    return match.group(1)


RESET_PASSWORD = "reset password 1"


def confirm_reset(
    client: falcon.testing.TestClient, token: str, new_password: str = RESET_PASSWORD
) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/auth/password/reset/confirm/", json={"token": token, "new_password": new_password}
    )


def attempt(
    client: falcon.testing.TestClient, username: str, password: str, address: str
) -> falcon.testing.Result:
    return client.simulate_post(
        "/api/auth/login/",
        json={"username": username, "password": password},
        remote_addr=address,
    )
