"""The database and the limits fold emails alike: ASCII letters only, whatever the locale.

The per-email reset limit keys on ``email_key`` in Python; the account is
found by ``same_email`` in SQL. Were they to fold differently (Python's
``"İ".lower()`` is two code points, a glibc locale's is ``"i"``, the C
locale's is ``"İ"``), spellings of one address would each get a limit of
their own, or one address's limit would hold back another's.
"""

from __future__ import annotations

from collections.abc import Iterable

import falcon.testing
import pytest
from sqlalchemy import Column, MetaData, Table, Text, insert, select, text

from gridlink.accounts.emails import email_key, same_email
from gridlink.services import Services
from tests.support.abuse import an_address, app_with
from tests.support.accounts import RESET_SUBJECT, reset_token
from tests.support.api import sign_up
from tests.support.mail import mails_to

SPELLINGS = [
    "ix@example.com",
    "IX@example.com",
    "\u0130x@example.com",  # İ
    "\u0131x@example.com",  # dotless i
    "\u00e9x@example.com",  # é
    "\u00c9x@example.com",  # É
    "kx@example.com",
    "\u212ax@example.com",  # the Kelvin sign
    "stra\u00dfe@example.com",  # ß
    "STRASSE@example.com",
]
# Collations a production server may have as its default: each folds more than ASCII.
LOCALE_COLLATIONS = ("C.utf8", "C.UTF-8", "en_US.utf8", "en_US.UTF-8", "und-x-icu")


def collations(services: Services) -> list[str]:
    """The server's default collation, and those of LOCALE_COLLATIONS it has."""
    with services.primary.connect() as connection:
        present: Iterable[str] = connection.execute(
            text("SELECT collname FROM pg_collation WHERE collname = ANY(:names)"),
            {"names": list(LOCALE_COLLATIONS)},
        ).scalars()
        return ["default", *present]


def test_the_server_has_a_collation_that_folds_more_than_ascii(services):
    # Otherwise the test below would only try the C locale of the test cluster.
    assert len(collations(services)) > 1


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_lookup_finds_exactly_the_spellings_the_limit_counts_together(services, spelling):
    expected = {other for other in SPELLINGS if email_key(other) == email_key(spelling)}
    for collation in collations(services):
        with services.primary.begin() as connection:
            # A column under the collation a server's locale would give it.
            declared = "" if collation == "default" else f' COLLATE "{collation}"'
            connection.execute(text(f"CREATE TEMPORARY TABLE emails (email text{declared})"))
            emails = Table("emails", MetaData(), Column("email", Text))
            connection.execute(insert(emails), [{"email": other} for other in SPELLINGS])
            found = set(
                connection.execute(
                    select(emails.c.email).where(same_email(emails.c.email, spelling))
                ).scalars()
            )
            connection.execute(text("DROP TABLE emails"))
        assert found == expected, collation


def reset(client: falcon.testing.TestClient, email: str) -> int:
    result = client.simulate_post(
        "/api/auth/password/reset/", json={"email": email}, remote_addr=an_address()
    )
    return result.status_code


def test_a_dotted_capital_i_is_another_address_for_the_limit_and_the_lookup(
    client, services, mail_dir
):
    user, later = sign_up(client, "mail"), sign_up(client, "mail")
    assert "i" in user.email
    dotted = user.email.replace("i", "\u0130")
    limited = app_with(services, password_resets_per_email=1)
    assert [reset(limited, dotted), reset(limited, dotted)] == [202, 429]
    # The account's own limit is untouched by the dotted spelling, and shared by ASCII case.
    assert [reset(limited, user.email.upper()), reset(limited, user.email)] == [202, 429]
    # The outbox delivers in order: once a reset asked for later has arrived, the
    # dotted spelling's would have too. Only the one for the account's own went to it.
    reset_token(client, mail_dir, later.email)
    resets = [m for m in mails_to(mail_dir, user.email, 1) if m["Subject"] == RESET_SUBJECT]
    assert len(resets) == 1
