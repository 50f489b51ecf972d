"""A flood over kept-alive connections waits without holding a thread (``infra/workers.py``).

A client answered 429 (or 503) is told to wait; the worker also reads
nothing more from that connection for a while (``SLOW_DOWN_SECONDS``), and
no thread is held meanwhile: another client is served first, while the
kernel still holds the throttled request unread.
"""

from __future__ import annotations

import http.client
import json
import select

from gridlink.errors import SLOW_DOWN_SECONDS
from gridlink.settings import Settings
from tests.support.api import random_username
from tests.support.servers import api_request, server_environment, serving
from tests.support.sockets import unread_by_server
from tests.support.waiting import wait_for


def sign_up_on(connection: http.client.HTTPConnection) -> int:
    username = random_username("tarpit")
    body = {"username": username, "email": f"{username}@example.com", "password": "a password 1"}
    connection.request(
        "POST", "/api/auth/signup/", json.dumps(body), {"Content-Type": "application/json"}
    )
    answer = connection.getresponse()
    answer.read()
    return answer.status


def test_a_throttled_keep_alive_client_waits_while_others_are_served(settings: Settings):
    environment = server_environment(settings, GRIDLINK_SIGNUPS_PER_ADDRESS="1")
    with serving(settings, workers=1, environment=environment) as [server]:
        host, port = server.address.split(":")
        flooding = http.client.HTTPConnection(host, int(port), timeout=30)
        statuses = [sign_up_on(flooding) for _ in range(2)]
        assert statuses[-1] == 429, statuses  # at most one gets through from this address
        # The flooding client asks again at once, on the same connection: its request
        # reaches the server and stays in the kernel, unread ...
        flooding.request("GET", "/healthz")
        wait_for(
            lambda: (unread_by_server(int(port), flooding.sock) or 0) > 0,
            SLOW_DOWN_SECONDS[429],
            "the throttled request waits unread at the server",
        )
        # ... while another client comes and is answered first.
        assert api_request(server.address, "GET", "/healthz").status == 200
        unread = unread_by_server(int(port), flooding.sock)
        assert unread, "the throttled connection was read before the other client's"
        readable, _, _ = select.select([flooding.sock], [], [], 0)
        assert readable == [], "the throttled connection was answered at once"
        # Its request was kept, not dropped: it is answered once the wait is over.
        answer = flooding.getresponse()
        assert answer.status == 200
        flooding.close()
