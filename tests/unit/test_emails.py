"""Emails fold their ASCII letters and nothing else, as ``lower()`` under the C collation does."""

from __future__ import annotations

import pytest

from gridlink.accounts.emails import email_key


def test_ascii_letters_fold() -> None:
    assert email_key("Ada.LOVELACE+Grid@Example.COM") == "ada.lovelace+grid@example.com"


@pytest.mark.parametrize(
    "letter",
    [
        "\u0130",  # İ: Python lowers it to "i" + U+0307, glibc to "i"
        "\u0131",  # dotless i
        "\u00c9",  # É
        "\u00df",  # ß: casefolding would make it "ss"
        "\u212a",  # the Kelvin sign: Python and glibc lower it to "k"
        "\u03a3",  # Σ
    ],
)
def test_no_other_letter_folds(letter: str) -> None:
    assert email_key(f"{letter}x@example.com") == f"{letter}x@example.com"
