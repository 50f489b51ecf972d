"""What each mail says; a mail that carries a token is written when it is sent.

The outbox never holds a usable token (nor do the WAL, the replicas and the
backups that copy it): a reset or an email confirmation is queued as an
order, and ``write_letter`` makes its token in the poller's transaction,
adds the token's hash to ``password_resets`` or ``email_changes``, and
writes the mail. The poller commits that before it sends the mail, and
deletes the order after (``gridlink.mail.outbox``), so:

- a poller that dies, or fails to send, between the commit and the send
  leaves a hash whose token no one knows (it lived in that process only)
  and the order still queued: the next attempt makes a fresh token;
- one that dies between the send and the order's deletion has mailed a
  working token, and a second mail with another working token follows (at
  least once, as for any mail);
- a password change or reset, or a confirmed email change, cancels the
  orders still waiting (``cancel_token_mail``) and uses up what an attempt
  already made, as it uses up tokens already mailed.

A reset order names the email as it was asked for, not an account: the
request looks nothing up (the same work for a known and an unknown email),
and the poller finds out whether an account has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gridlink.accounts.emails import same_email
from gridlink.accounts.tokens import hash_token, new_token
from gridlink.models import EmailChange, OutgoingMail, PasswordReset, User

# Reset and email-change tokens live this long, and so does a mail's order.
MAIL_TOKEN_LIFETIME = timedelta(hours=1)

# The kinds of mail in the outbox (``OutgoingMail.kind``).
MESSAGE = "message"
RESET_ORDER = "password_reset"
CONFIRMATION_ORDER = "email_confirmation"


@dataclass(frozen=True)
class Letter:
    """A mail ready to hand to the mail server, and the account it concerns, if known."""

    to: str
    subject: str
    body: str
    account_id: int | None = None


def write_letter(session: Session, mail: OutgoingMail) -> Letter | None:
    """Return the letter ``mail`` stands for, or None if there is nothing to send any more.

    For a token mail the token is made now, and its hash added in
    ``session``'s transaction: commit it only once the letter is sent.
    """
    if mail.kind == RESET_ORDER:
        return _password_reset(session, mail)
    if mail.kind == CONFIRMATION_ORDER:
        return _email_confirmation(session, mail)
    # A message: a CHECK constraint says it has both.
    assert mail.subject is not None
    assert mail.body is not None
    return Letter(mail.to_address, mail.subject, mail.body)


def _password_reset(session: Session, mail: OutgoingMail) -> Letter | None:
    asked_for = select(User).where(same_email(User.email, mail.to_address))
    user = session.scalars(asked_for).one_or_none()
    if user is None:
        return None  # no account has the email: nothing to send, and the asker is not told
    reset_token = new_token()
    session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=hash_token(reset_token),
            expires_on=datetime.now(UTC) + MAIL_TOKEN_LIFETIME,
        )
    )
    return Letter(
        user.email,
        "Reset your Gridlink password",
        _reset_body(user.username, reset_token),
        account_id=user.id,
    )


def _email_confirmation(session: Session, mail: OutgoingMail) -> Letter | None:
    # Locked: a password change that uses the change up meanwhile waits for this
    # transaction, then uses up the token about to be mailed.
    change = session.get(EmailChange, mail.email_change_id, with_for_update=True)
    now = datetime.now(UTC)
    if change is None or change.used_on is not None or change.expires_on <= now:
        return None  # superseded, used up or expired: a token could only be dead
    user = session.get_one(User, change.user_id)
    token = new_token()
    change.token_hash = hash_token(token)
    change.expires_on = now + MAIL_TOKEN_LIFETIME
    return Letter(
        change.new_email,
        "Confirm your new Gridlink email",
        _confirmation_body(user.username, token),
        account_id=user.id,
    )


def email_change_notice(username: str, new_email: str) -> tuple[str, str]:
    """The subject and body telling the current address that a change was asked for."""
    return (
        "Your Gridlink email is changing",
        f"""\
Someone logged in as the Gridlink account {username} asked to change its email
to {new_email}. The change takes effect once the new address confirms it.

If this was not you, change your password now: it also cancels password resets.
""",
    )


def password_changed_notice(username: str, *, by_reset: bool) -> tuple[str, str]:
    """The subject and body telling the owner their password changed (nothing usable in it)."""
    if by_reset:
        subject, how, sessions = "reset", "reset with a token mailed to this address", "Every"
    else:
        subject, how, sessions = "changed", "changed", "Every other"
    return (
        f"Your Gridlink password was {subject}",
        f"""\
The password of the Gridlink account {username} was {how} just now.
{sessions} session of the account has been logged out.

If this was you, there is nothing to do. If it was not, someone knows your
password or can read your mail: ask for a password reset at once, and secure
this mailbox.
""",
    )


def _reset_body(username: str, reset_token: str) -> str:
    return f"""\
Someone (hopefully you) asked to reset the password of the Gridlink account {username}.

Your reset token, valid for one hour and usable once:

    {reset_token}

Send it with your new password to POST /api/auth/password/reset/confirm/ :

    {{"token": "{reset_token}", "new_password": "..."}}

If you did not ask for this, ignore this mail: your password stays as it is.
"""


def _confirmation_body(username: str, token: str) -> str:
    return f"""\
The Gridlink account {username} asked to use this address from now on.

Your confirmation token, valid for one hour and usable once:

    {token}

Send it, logged in as {username}, to POST /api/users/me/email/confirm/ :

    {{"token": "{token}"}}

If you did not ask for this, ignore this mail: nothing changes.
"""
