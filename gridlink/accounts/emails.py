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

from sqlalchemy import ColumnElement, Text, func, literal

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def email_key(email: str) -> str:
    """Fold ``email`` as the database's ``same_email`` does: ASCII letters only."""
    return email.translate(_ASCII_LOWER)


def folded_email(email: Any) -> ColumnElement[str]:
    """``lower(email COLLATE "C")``: the SQL side of ``email_key``, and the index's expression."""
    if isinstance(email, str):
        email = literal(email, Text)
    folded: ColumnElement[str] = func.lower(email.collate("C"))
    return folded


def same_email(column: Any, email: str) -> ColumnElement[bool]:
    """Compare a column of emails with ``email`` as ``email_key`` would."""
    comparison: ColumnElement[bool] = folded_email(column) == email_key(email)
    return comparison
