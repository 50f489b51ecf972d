"""When two emails are the same address: ASCII letters fold, nothing else does.

Python and the database must agree, or a limit counted under one spelling
lets the lookup find the account under another: Python's ``"İ".lower()``
is ``"i̇"`` (two code points), while a server under a glibc locale lowers
it to ``"i"``, and under the C locale leaves it alone. So both sides fold
the same way, whatever the server's locale: A-Z to a-z (``lower()`` under
the C collation in SQL), every other character as it is. That is also
what mail systems themselves treat as the same mailbox: a domain is ASCII
in DNS, and a local part is case-sensitive but for ASCII by custom
(casefolding would even make ``straße`` and ``strasse`` one address).
The unique index on users' emails folds the same way (``uq_users_lower_email``).
"""

from __future__ import annotations

import string
from typing import Any

from sqlalchemy import ColumnElement, func

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def email_key(email: str) -> str:
    """Fold ``email`` as the database's ``same_email`` does: ASCII letters only."""
    return email.translate(_ASCII_LOWER)


def same_email(column: Any, email: str) -> ColumnElement[bool]:
    """Compare a column of emails with ``email`` as ``email_key`` would.

    ``lower(column COLLATE "C")`` is the expression of the unique index on
    users' emails, so the comparison is an index lookup.
    """
    comparison: ColumnElement[bool] = func.lower(column.collate("C")) == email_key(email)
    return comparison
