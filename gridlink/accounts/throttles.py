"""Which attempts count against which limits: logins, password checks, resets, sign-ups.

- **Logins** (API.md, "Login throttling") count failures per account and
  per *client*: a device of the account when the login presents a valid
  one, else the client address. The account is its id once it is known (its
  username and email share one count), else the login as typed (so an
  unknown name is refused alike). Three windows apply to a client without a
  device: its own failures for the account, every such client's failures
  for the account together (the account's wide limit), and its address's
  failures whatever the accounts. A client with a device is held to its own
  failures for the account alone, so a flood from elsewhere never locks the
  owner out of a client they logged in from before. Without a device the
  address is counted first, before any query (a flood from one address is
  refused at the cost of one Redis call); every window is counted before
  the password is checked. A success gives the attempt back and clears the
  client's own failures for the account; one the server was too busy to
  check (503) still counts for the address, not the account.
- **Password checks with a token** (password or email change, deletion)
  count failures per session (the token), and nowhere else: a stolen token
  cannot guess the password faster, and nobody else's failures refuse it.
- **Password resets** count every request, per email (its ASCII letters
  folded, as the account lookup folds them: ``gridlink.accounts.emails``)
  and per client address, whether or not an account has the email: the 429
  tells nothing about which emails are registered.
- **Email changes** count per account every request whose password was right.
- **Sign-ups** count every request per client address and globally, before
  any password is hashed.
"""

from __future__ import annotations

from dataclasses import dataclass

from gridlink.accounts.emails import email_key
from gridlink.accounts.ratelimit import Limiter, Reservation, Window
from gridlink.settings import Settings

_LOGIN = "gl:login-failures"
_CHECK = "gl:password-checks"
_RESET = "gl:password-resets"
_SIGNUP = "gl:signups"
_EMAIL_CHANGE = "gl:email-changes"
EMAIL_CHANGE_WINDOW_SECONDS = 3600
SIGNUP_GLOBAL_WINDOW_SECONDS = 60
# What a session's checks that its caller owns the account (a current password, a
# provider's confirmation of a deletion) answer once they fail too often.
SESSION_CHECKS_THROTTLED = (
    "Too many failed checks that this is your account (wrong passwords, or sign-ins "
    "at a provider that failed) with this token; try again later."
)
_LOGIN_REFUSED = "Too many failed logins; try again later."


def _address_window(prefix: str, address: str | None, limit: int, seconds: int) -> list[Window]:
    return [Window(f"{prefix}:address:{address}", limit, seconds)] if address else []


@dataclass(frozen=True)
class LoginClient:
    """Whose failures a login counts: one account, from one device of it or one address."""

    account: str  # ``account_key`` of the account, or of the login as typed without one
    address: str | None
    device_id: int | None = None  # a device of this account the login presented

    @property
    def has_device(self) -> bool:
        return self.device_id is not None

    @property
    def key(self) -> str:
        """The counter of this client's own failures for the account."""
        if self.device_id is not None:
            return f"{_LOGIN}:{self.account}:device:{self.device_id}"
        return f"{_LOGIN}:{self.account}:address:{self.address}"


def account_key(account_id: int | None, login: str) -> str:
    """Name an account by its id, or a login without an account as typed.

    Folded as the account lookup folds (ASCII letters only), so every spelling
    the lookup would take for one account counts as one login.
    """
    return f"account:{account_id}" if account_id is not None else f"login:{email_key(login)}"


class LoginThrottle:
    """Reserve login attempts; the reservations left standing are the failures."""

    def __init__(self, limiter: Limiter, settings: Settings) -> None:
        self._limiter = limiter
        self._settings = settings

    def admit_address(self, address: str | None) -> Reservation | None:
        """Count an attempt from ``address`` or raise 429: first, before any query."""
        windows = self._address_windows(address)
        return self._reserve(windows) if windows else None

    def admit(self, client: LoginClient, *, address_admitted: bool) -> Reservation:
        """Count an attempt of ``client`` for its account, or raise 429 counting nothing.

        A client with a device is held to its own failures alone; any other
        to its own, the account's wide limit, and its address's (unless
        ``admit_address`` counted that already).
        """
        seconds = self._settings.login_window_seconds
        windows = [Window(client.key, self._settings.login_failures_per_client, seconds)]
        if not client.has_device:
            windows.append(
                Window(
                    self._without_device_key(client.account),
                    self._settings.login_failures_per_account,
                    seconds,
                )
            )
            if not address_admitted:
                windows += self._address_windows(client.address)
        return self._reserve(windows)

    def give_back(self, *reservations: Reservation | None) -> None:
        """Uncount attempts that were not failures (the password was right)."""
        for reservation in reservations:
            if reservation is not None:
                self._limiter.give_back(reservation)

    def give_back_unchecked(self, reservation: Reservation) -> None:
        """Uncount an attempt whose password was not checked (503), but for its address.

        An outage is not the account's failure; but a flood answered 503 must
        soon meet its address's limit (429, cheap).
        """
        address_prefix = f"{_LOGIN}:address:"
        kept = [key for key in reservation.keys if not key.startswith(address_prefix)]
        self._limiter.give_back(reservation, kept)

    def succeeded(self, client: LoginClient) -> None:
        """Clear ``client``'s own failures for its account, after a login with the password."""
        self._limiter.clear(client.key)

    def forget(self, account_id: int) -> None:
        """Clear the account's wide count (after a reset proved the owner holds the mailbox)."""
        self._limiter.clear(self._without_device_key(account_key(account_id, "")))

    def admit_password_check(self, token_hash: bytes) -> Reservation:
        """Count a check of the current password sent with a token, or raise 429 (counting none)."""
        window = Window(
            f"{_CHECK}:session:{token_hash.hex()}",
            self._settings.password_checks_per_session,
            self._settings.login_window_seconds,
        )
        return self._limiter.reserve([window], SESSION_CHECKS_THROTTLED)

    def _address_windows(self, address: str | None) -> list[Window]:
        return _address_window(
            _LOGIN,
            address,
            self._settings.login_failures_per_address,
            self._settings.login_window_seconds,
        )

    def _reserve(self, windows: list[Window]) -> Reservation:
        return self._limiter.reserve(windows, _LOGIN_REFUSED)

    @staticmethod
    def _without_device_key(account: str) -> str:
        return f"{_LOGIN}:{account}:without-device"


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
