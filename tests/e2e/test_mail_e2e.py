"""Durable mail: a reset mail survives the death of the worker that answered the request.

The worker's mail poller is held in the middle of handing the mail to a
(real, test) SMTP server when the worker is killed with SIGKILL; the worker
gunicorn starts in its place finds the mail still queued and sends it:
once, since the first attempt never got past the greeting.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.clusters import cluster_layout, running
from tests.support.mailserver import SmtpServer
from tests.support.servers import api_request, server_environment, serving
from tests.support.waiting import wait_for

# A cluster of the module's own: no other process may deliver its outbox.


@pytest.fixture(scope="module")
def cluster_settings() -> Iterator[Settings]:
    with running(cluster_layout("mail-e2e")) as layout:
        yield Settings(
            database_url=layout.database_url,
            replica_urls=layout.replica_urls,
            redis_url=layout.redis_url,
        )


def queued_mail(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM mail_outbox")).scalar_one())
    finally:
        engine.dispose()


def test_a_reset_mail_is_sent_once_though_the_answering_worker_was_killed(cluster_settings):
    with SmtpServer() as smtp:
        environment = server_environment(
            cluster_settings,
            GRIDLINK_MAIL_BACKEND=f"smtp://127.0.0.1:{smtp.port}",
            GRIDLINK_SIGNUPS_PER_ADDRESS="1000",
        )
        with serving(cluster_settings, workers=1, environment=environment) as (server,):
            username = random_username("mail")
            email = f"{username}@example.com"
            signed_up = api_request(
                server.address,
                "POST",
                "/api/auth/signup/",
                {"username": username, "email": email, "password": "a password 1"},
            )
            assert signed_up.status == 201
            [worker] = server.worker_pids()

            smtp.hold_next()
            answer = api_request(
                server.address, "POST", "/api/auth/password/reset/", {"email": email}
            )
            assert answer.status == 202
            # The worker is handing the mail over (the server holds it silent): kill it now.
            assert smtp.held.wait(30), "the worker never tried to send the mail"
            os.kill(worker, signal.SIGKILL)
            smtp.release.set()

            wait_for(lambda: len(smtp.received_by(email)) >= 1, 30, "the reset mail")
            wait_for(lambda: queued_mail(cluster_settings) == 0, 30, "an empty outbox")
            assert [pid for pid in server.worker_pids() if pid != worker]
            [mail] = smtp.received_by(email)
            assert mail["Subject"] == "Reset your Gridlink password"
