"""The rule for new passwords: 12 to 128 characters, and not a common or breached one.

The length is checked where the request is read (``gridlink.schemas.accounts``).
How guessable a password is, zxcvbn estimates offline: it matches the
password against the frequency lists it ships (the most common of leaked
passwords, English words, names, film and TV words) and against keyboard
walks, repeats, sequences, dates and l33t, so ``password1234`` and
``qwertyuiop12`` are refused as the common passwords they are. Passwords
already set are never checked again: existing accounts log in with what
they have.

An estimate costs milliseconds, more for longer input: commands call
``refuse_weak_password`` only once the request passed its throttle (a
sign-up) or proved its token (a change, a reset), never for a flood.
"""

from __future__ import annotations

from collections.abc import Iterable

from zxcvbn import zxcvbn

from gridlink.errors import InvalidRequest

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128

# zxcvbn's score 3: at least 10^8 guesses, beyond an online attack and a
# slow-hash offline one of modest means.
MIN_GUESSES_LOG10 = 8.0
# zxcvbn's time grows quickly with length (40 characters: about 8 ms, 128:
# about 150 ms). A password is at least as hard to guess as its beginning,
# so one whose first 40 characters are strong enough is.
_ESTIMATED_PREFIX = 40

TOO_GUESSABLE = (
    "This password is too common or too easy to guess: "
    "choose another, a few unrelated words for instance."
)


def is_guessable(password: str, user_inputs: Iterable[str] = ()) -> bool:
    """Tell whether ``password`` is common or easy to guess (with the account's own words)."""
    estimate = zxcvbn(password[:_ESTIMATED_PREFIX], user_inputs=list(user_inputs))
    return float(estimate["guesses_log10"]) < MIN_GUESSES_LOG10


def account_words(username: str, email: str) -> list[str]:
    """The account's own words, as easy to guess in its password as a common one."""
    return [username, email, email.partition("@")[0]]


def refuse_weak_password(password: str, *, field: str, user_inputs: Iterable[str] = ()) -> None:
    """Raise 400 naming ``field`` if ``password`` is common or easy to guess.

    ``user_inputs`` are the account's own words (``account_words``).
    """
    if is_guessable(password, user_inputs):
        raise InvalidRequest(TOO_GUESSABLE, fields={field: [TOO_GUESSABLE]})
