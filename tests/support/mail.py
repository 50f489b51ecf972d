"""Read the mails the file backend wrote, and the token a mail carries."""

from __future__ import annotations

import re
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

MAIL_WAIT_SECONDS = 10


def mails_to(mail_dir: Path, address: str, expected: int = 0) -> list[EmailMessage]:
    """The mails sent to ``address``, once at least ``expected`` of them are there."""
    parser = BytesParser(policy=policy.default)
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while True:
        mails = [parser.parsebytes(path.read_bytes()) for path in sorted(mail_dir.glob("*.eml"))]
        sent = [m for m in mails if isinstance(m, EmailMessage) and m["To"] == address]
        if len(sent) >= expected or time.monotonic() > deadline:
            return sent
        time.sleep(0.02)


def token_in(mail: EmailMessage) -> str:
    """Return the token a reset or confirmation mail carries (its JSON body for the API)."""
    body = mail.get_body(("plain",))
    assert body is not None
    match = re.search(r'"token": "([A-Za-z0-9_-]+)"', body.get_content())
    assert match, body.get_content()
    return match.group(1)
