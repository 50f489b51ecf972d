"""Which attempts count against which limits: logins, password resets, sign-ups.

- **Logins** count failures per account once the account is known (its
  username and its email share one counter), per login as typed when there
  is no such account (so an unknown name is refused alike), and per client
  address. The address is counted first, before any query (a flood from one
  address is refused at the cost of one Redis call), then the account; both
  before the password is checked. A success gives the attempt back and
  clears the account's failures; one the server was too busy to check (503)
  still counts for the address, not the account.
- **Password resets** count every request, per email (its ASCII letters
  folded, as the account lookup folds them: ``gridlink.accounts.emails``)
  and per client address, whether or not an account has the email: the 429
  tells nothing about which emails are registered.
- **Email changes** count per account every request whose password was right.
- **Sign-ups** count every request per client address and globally, before
  any password is hashed.
"""

from __future__ import annotations

from gridlink.accounts.emails import email_key
from gridlink.accounts.ratelimit import Limiter, Reservation, Window
from gridlink.settings import Settings

_LOGIN = "gl:login-failures"
_RESET = "gl:password-resets"
_SIGNUP = "gl:signups"
_EMAIL_CHANGE = "gl:email-changes"
EMAIL_CHANGE_WINDOW_SECONDS = 3600
SIGNUP_GLOBAL_WINDOW_SECONDS = 60


def _address_window(prefix: str, address: str | None, limit: int, seconds: int) -> list[Window]:
    return [Window(f"{prefix}:address:{address}", limit, seconds)] if address else []


class LoginThrottle:
    """Reserve login attempts; the reservations left standing are the failures."""

    def __init__(self, limiter: Limiter, settings: Settings) -> None:
        self._limiter = limiter
        self._settings = settings

    def admit_address(self, address: str | None) -> Reservation | None:
        """Count an attempt from ``address`` or raise 429: first, before any query."""
        windows = _address_window(
            _LOGIN,
            address,
            self._settings.login_failures_per_address,
            self._settings.login_window_seconds,
        )
        return self._reserve(windows) if windows else None

    def reserve(self, login: str | None, account_id: int | None) -> Reservation:
        """Count an attempt for the account (or ``login`` as typed, without one), or raise 429."""
        key = (
            self.account_key(account_id)
            if account_id is not None
            else f"{_LOGIN}:login:{(login or '').lower()}"
        )
        limit = self._settings.login_failures_per_username
        return self._reserve([Window(key, limit, self._settings.login_window_seconds)])

    def give_back(self, *reservations: Reservation | None) -> None:
        """Uncount attempts that were not failures (the password was right, or not checked)."""
        for reservation in reservations:
            if reservation is not None:
                self._limiter.give_back(reservation)

    def _reserve(self, windows: list[Window]) -> Reservation:
        return self._limiter.reserve(windows, "Too many failed logins; try again later.")

    def forget(self, account_id: int) -> None:
        """Clear the failures counted against the account (after a login or a reset)."""
        self._limiter.clear(self.account_key(account_id))

    @staticmethod
    def account_key(account_id: int) -> str:
        return f"{_LOGIN}:account:{account_id}"


def admit_password_reset(
    limiter: Limiter, settings: Settings, email: str, address: str | None
) -> None:
    """Count one reset request for ``email`` from ``address``, or raise 429 counting nothing."""
    seconds = settings.password_reset_window_seconds
    windows = [
        Window(f"{_RESET}:email:{email_key(email)}", settings.password_resets_per_email, seconds),
        *_address_window(_RESET, address, settings.password_resets_per_address, seconds),
    ]
    limiter.reserve(windows, "Too many password resets; try again later.")


def admit_email_change(limiter: Limiter, settings: Settings, account_id: int) -> None:
    """Count one email change asked for by ``account_id``, or raise 429 counting nothing."""
    window = Window(
        f"{_EMAIL_CHANGE}:account:{account_id}",
        settings.email_changes_per_account,
        EMAIL_CHANGE_WINDOW_SECONDS,
    )
    limiter.reserve([window], "Too many email changes for this account; try again later.")


def admit_sign_up(limiter: Limiter, settings: Settings, address: str | None) -> None:
    """Count one sign-up from ``address`` and one globally, or raise 429 counting nothing."""
    windows = [
        Window(f"{_SIGNUP}:all", settings.signups_per_minute, SIGNUP_GLOBAL_WINDOW_SECONDS),
        *_address_window(_SIGNUP, address, settings.signups_per_address, 3600),
    ]
    limiter.reserve(windows, "Too many sign-ups; try again later.")
