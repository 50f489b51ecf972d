"""Login devices: the clients an account logged in from, as the login throttle knows them.

A successful login or sign-up answers a *device* value (OWASP's device
cookie, for an API); a later login of the same account that presents it is
counted as that device, with an allowance of failures of its own
(``gridlink.accounts.throttles``). Only the SHA-256 of a value is stored,
bound to its account: a copy of the table makes no device, and one
account's device is nothing to another's login.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, and_, delete, func, select, update

from gridlink.accounts.tokens import hash_token, new_token
from gridlink.commands.unit_of_work import UnitOfWork
from gridlink.models import LoginDevice, User

# What new_token() makes: anything else is no device, found without a query.
_DEVICE_FORM = re.compile(r"^[A-Za-z0-9_-]{43}$")


def presented_device(device: str | None) -> ColumnElement[bool]:
    """Match the device row of ``device`` with the account's, to outer-join to a login's lookup.

    A login does this one query whether or not it presents a device, and
    whether or not the account exists: a value of the wrong shape (or none)
    matches nothing.
    """
    device_hash = hash_token(device) if device and _DEVICE_FORM.match(device) else b""
    matches: ColumnElement[bool] = and_(
        LoginDevice.user_id == User.id, LoginDevice.device_hash == device_hash
    )
    return matches


def find_device(uow: UnitOfWork, device: str) -> LoginDevice | None:
    """The device ``device`` names, whichever account's, or None (a wrong shape: no query).

    For a sign-in that learns its account only later (through a provider).
    """
    if not _DEVICE_FORM.match(device):
        return None
    return uow.session.scalars(
        select(LoginDevice).where(LoginDevice.device_hash == hash_token(device))
    ).one_or_none()


def remember_device(
    uow: UnitOfWork, user_id: int, *, device_id: int | None, device: str | None
) -> str:
    """Return the device value to answer a successful login of ``user_id`` with.

    The device the login presented (``device_id``, found with
    ``presented_device``) is kept and marked used; without one a new device is made, and the
    account's least recently used ones past the cap are forgotten.
    """
    if device_id is not None and device is not None:
        uow.session.execute(
            update(LoginDevice).where(LoginDevice.id == device_id).values(last_used_on=func.now())
        )
        return device
    device = new_token()
    uow.session.add(LoginDevice(user_id=user_id, device_hash=hash_token(device)))
    uow.session.flush()
    beyond_cap = (
        select(LoginDevice.id)
        .where(LoginDevice.user_id == user_id)
        .order_by(LoginDevice.last_used_on.desc(), LoginDevice.id.desc())
        .offset(uow.settings.max_devices_per_user)
    )
    uow.session.execute(
        delete(LoginDevice)
        .where(LoginDevice.id.in_(beyond_cap.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return device
