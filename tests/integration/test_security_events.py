"""Security events: each of the twelve appears once in the log, with who asked, and no secret.

Every event is driven through the API (promotion, which has no endpoint,
through the command `gridlink users promote` runs). The line names the user,
the client as the throttles count it and the request id the client sent; it
never holds a password, a token or a link that carries one.
"""

from __future__ import annotations

import io
import re
import secrets
from functools import partial
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest
from sqlalchemy import text

from gridlink.accounts.events import EVENTS, SECURITY_LOGGER
from gridlink.commands.accounts import set_admin
from gridlink.commands.unit_of_work import run_command
from gridlink.services import Services
from gridlink.web.http import client_from
from tests.support.abuse import an_address
from tests.support.accounts import RESET_PASSWORD, reset_token
from tests.support.api import ApiUser, random_username
from tests.support.mail import mails_to
from tests.support.waiting import wait_for

# Something shaped like a token (256 bits in URL-safe base64 are 43 characters).
TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_-]{40,}")
NEW_PASSWORD = "a brand new password 1"


class Asker:
    """A client of the test's own: its address, and a request id for each request it sends."""

    def __init__(self, services: Services, address: str | None = None) -> None:
        self.address = address or an_address()
        self.key = client_from(self.address, None, services.settings.trusted_proxies)
        self.request_id = f"events-{secrets.token_hex(8)}"

    def options(self, user: ApiUser | None = None, **kwargs: Any) -> dict[str, Any]:
        headers = {"X-Request-Id": self.request_id, **(user.headers if user else {})}
        return {"remote_addr": self.address, "headers": headers, **kwargs}


def logged(log_lines: io.StringIO, event: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    return [
        line for line in lines if line["logger"] == SECURITY_LOGGER and line.get("event") == event
    ]


def assert_logged_once(
    log_lines: io.StringIO,
    event: str,
    *,
    user_id: int | None,
    asker: Asker | None,
    secrets_: list[str],
    by_the_poller: bool = False,
) -> None:
    """Check ``event`` was logged once for ``asker`` (or ``user_id``), naming them, with no secret.

    Events are logged before the answer, but for a reset request's: the mail
    poller logs it, once it has found out whose account was asked for.
    """

    def mine() -> list[dict[str, Any]]:
        return [
            line
            for line in logged(log_lines, event)
            if (line["request_id"] == asker.request_id if asker else line["user_id"] == user_id)
        ]

    if by_the_poller:
        wait_for(lambda: bool(mine()), 10, f"a {event} event")
    lines = mine()
    assert len(lines) == 1, f"{event} logged {len(lines)} times"
    [line] = lines
    assert line["message"] == event
    assert line["user_id"] == user_id
    if asker is not None:
        assert line["client_address"] == asker.key
    raw = orjson.dumps(line).decode()
    for secret in secrets_:
        assert secret not in raw, event
    assert not TOKEN_SHAPED.search(raw), raw


def user_id_of(services: Services, username: str) -> int:
    with services.primary.connect() as connection:
        found: int = connection.execute(
            text("SELECT id FROM users WHERE username = :u"), {"u": username}
        ).scalar_one()
    return found


def mailed_token(mail_dir: Path, address: str) -> str:
    [mail] = mails_to(mail_dir, address, expected=1)
    body = mail.get_body(("plain",))
    assert body is not None
    match = re.search(r'"token": "([A-Za-z0-9_-]+)"', body.get_content())
    assert match
    return match.group(1)


# --- the events of this slice -----------------------------------------------------------------


def test_password_changed(client, services, log_lines, user):
    asker = Asker(services)
    body = {"current_password": user.password, "new_password": NEW_PASSWORD}
    changed = client.simulate_post("/api/auth/password/change/", **asker.options(user, json=body))
    assert changed.status_code == 204
    assert_logged_once(
        log_lines,
        "password_changed",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[user.password, NEW_PASSWORD, user.token],
    )


def test_password_reset_requested_for_a_known_email(client, services, log_lines, user):
    asker = Asker(services)
    body = {"email": user.email}
    asked = client.simulate_post("/api/auth/password/reset/", **asker.options(json=body))
    assert asked.status_code == 202
    assert_logged_once(
        log_lines,
        "password_reset_requested",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[user.password, user.token],
        by_the_poller=True,
    )


def test_password_reset_requested_for_an_unknown_email(client, services, log_lines):
    asker = Asker(services)
    body = {"email": f"{random_username('nobody')}@example.com"}
    asked = client.simulate_post("/api/auth/password/reset/", **asker.options(json=body))
    assert asked.status_code == 202
    assert_logged_once(
        log_lines,
        "password_reset_requested",
        user_id=None,
        asker=asker,
        secrets_=[],
        by_the_poller=True,
    )


def test_password_reset(client, services, mail_dir, log_lines, user):
    token = reset_token(client, mail_dir, user.email)
    asker = Asker(services)
    body = {"token": token, "new_password": RESET_PASSWORD}
    confirmed = client.simulate_post(
        "/api/auth/password/reset/confirm/", **asker.options(json=body)
    )
    assert confirmed.status_code == 204
    assert_logged_once(
        log_lines,
        "password_reset",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[token, RESET_PASSWORD, user.token],
    )


def test_email_change_requested_and_email_changed(client, services, mail_dir, log_lines, user):
    new_email = f"{random_username('events')}@example.com"
    asker = Asker(services)
    body = {"email": new_email, "current_password": user.password}
    asked = client.simulate_patch("/api/users/me/", **asker.options(user, json=body))
    assert asked.status_code == 200
    user_id = user_id_of(services, user.username)
    assert_logged_once(
        log_lines,
        "email_change_requested",
        user_id=user_id,
        asker=asker,
        secrets_=[user.password, user.token],
    )
    token = mailed_token(mail_dir, new_email)
    confirmer = Asker(services)
    confirmed = client.simulate_post(
        "/api/users/me/email/confirm/", **confirmer.options(user, json={"token": token})
    )
    assert confirmed.status_code == 200
    assert_logged_once(
        log_lines, "email_changed", user_id=user_id, asker=confirmer, secrets_=[token, user.token]
    )


def test_account_deleted(client, services, log_lines, user):
    user_id = user_id_of(services, user.username)
    asker = Asker(services)
    deleted = client.simulate_delete(
        "/api/users/me/", **asker.options(user, json={"password": user.password})
    )
    assert deleted.status_code == 204
    assert_logged_once(
        log_lines,
        "account_deleted",
        user_id=user_id,
        asker=asker,
        secrets_=[user.password, user.token],
    )


# --- the events other slices log --------------------------------------------------------------


def log_in(
    client: falcon.testing.TestClient, asker: Asker, username: str, password: str
) -> falcon.testing.Result:
    body = {"username": username, "password": password}
    return client.simulate_post("/api/auth/login/", **asker.options(json=body))


def test_login_succeeded(client, services, log_lines, user):
    asker = Asker(services)
    result = log_in(client, asker, user.username, user.password)
    assert result.status_code == 200
    assert_logged_once(
        log_lines,
        "login_succeeded",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[user.password, user.token, result.json["token"]],
    )


def test_login_failed(client, services, log_lines, user):
    asker = Asker(services)
    guess = "a wrong guess 123"
    assert log_in(client, asker, user.username, guess).status_code == 401
    assert_logged_once(
        log_lines,
        "login_failed",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[guess, user.password],
    )


def test_login_throttled(client, services, log_lines, user):
    guess = "a wrong guess 123"
    address = an_address()
    for _ in range(5):
        assert log_in(client, Asker(services, address), user.username, guess).status_code == 401
    asker = Asker(services, address)
    assert log_in(client, asker, user.username, user.password).status_code == 429
    assert_logged_once(
        log_lines,
        "login_throttled",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[guess, user.password],
    )


def test_session_revoked(client, services, log_lines, user):
    other = log_in(client, Asker(services), user.username, user.password).json["token"]
    listed = client.simulate_get("/api/auth/sessions/", headers=user.headers)
    assert listed.status_code == 200
    [ended] = [session["id"] for session in listed.json["data"] if not session["current"]]
    asker = Asker(services)
    revoked = client.simulate_delete(f"/api/auth/sessions/{ended}/", **asker.options(user))
    assert revoked.status_code == 204
    assert_logged_once(
        log_lines,
        "session_revoked",
        user_id=user_id_of(services, user.username),
        asker=asker,
        secrets_=[user.token, other, user.password],
    )


@pytest.mark.parametrize(("is_admin", "event"), [(True, "user_promoted"), (False, "user_demoted")])
def test_user_promoted_and_demoted(client, services, log_lines, user, is_admin, event):
    if not is_admin:
        run_command(services, partial(set_admin, username=user.username, is_admin=True))
    run_command(services, partial(set_admin, username=user.username, is_admin=is_admin))
    assert_logged_once(
        log_lines,
        event,
        user_id=user_id_of(services, user.username),
        asker=None,
        secrets_=[user.password, user.token],
    )


def test_every_security_event_has_its_test():
    # Kept by hand: an event added to EVENTS fails here until a test above drives it.
    tested = {
        "password_changed",
        "password_reset_requested",
        "password_reset",
        "email_change_requested",
        "email_changed",
        "account_deleted",
        "login_succeeded",
        "login_failed",
        "login_throttled",
        "session_revoked",
        "user_promoted",
        "user_demoted",
        # tests/integration/test_accounts_tokens.py: a token entry written by hand into Redis.
        "token_cache_forged",
        # Sign-in with OpenID providers: tests/integration/test_oidc.py drives these.
        "signup_ticket_issued",
        "signup_ticket_refused",
        "signed_up",
        "identity_email_taken",
        "identity_linked",
        "identity_link_refused",
        "identity_unlinked",
        "identity_unlink_refused",
        "identity_provider_unavailable",
    }
    assert tested == EVENTS
