"""gunicorn's gthread worker, with a deadline for reading each request, and JSON errors.

gthread hands a connection to a thread once its first byte arrives, and the
thread then reads the request line, headers and body with blocking reads
that have no time limit. A client that trickles a byte a second keeps that
thread for as long as it likes; as many such clients as there are threads
(workers x threads, 32 by default here) stop the server answering anyone
(measured: 4 trickling clients hang a 1-worker, 4-thread server for good).

Here every read of one request must finish within ``REQUEST_READ_SECONDS``
of its first read: a slow client loses its connection (headers) or gets a
408 (body, see ``gridlink.web.http``), and its thread is free again. This bounds
what each slow connection costs; it cannot stop an attacker who opens
connections faster than they expire. Production therefore runs behind a
buffering reverse proxy (nginx with ``proxy_request_buffering on``,
``client_header_timeout``/``client_body_timeout``), which hands gunicorn only
whole requests.

A request gunicorn itself refuses (a malformed request line or chunk, a
header over 8 KiB, a bad Content-Length) would get gunicorn's HTML page,
echoing the bad input; here it gets API.md's JSON error body, with the same
security headers as every other answer.

``RequestLineLogger`` is gunicorn's logger without its access line: the app
writes one JSON line per request itself.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from gridlink.errors import error_body, take_slow_down
from gridlink.web.security import SECURITY_HEADERS

# 64 KiB (the body limit) in 10 s is 6.5 KB/s: slower than any real client.
REQUEST_READ_SECONDS = 10.0


class DeadlineSocket:
    """A client socket whose reads for one request must end before a deadline.

    Everything but ``recv`` is the socket's own: gunicorn selects on it,
    writes to it and closes it as usual.
    """

    def __init__(self, sock: socket.socket, seconds: float = REQUEST_READ_SECONDS) -> None:
        self._sock = sock
        self._seconds = seconds
        self._deadline: float | None = None

    def new_request(self) -> None:
        """Start the clock again at the next read (one request per worker thread turn)."""
        self._deadline = None

    def recv(self, size: int, *flags: int) -> bytes:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._seconds
        remaining = self._deadline - now
        if remaining <= 0:
            raise _too_slow()
        prior = self._sock.gettimeout()
        # gunicorn may have set a shorter timeout of its own (draining a body): keep it.
        ours = prior is None or remaining < prior
        self._sock.settimeout(remaining if ours else prior)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            if ours:
                raise _too_slow() from None
            raise
        finally:
            self._sock.settimeout(prior)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _too_slow() -> ConnectionResetError:
    # As a reset, not a timeout: gunicorn then closes the connection quietly
    # instead of logging a stack trace per slow client (a flood of them would
    # flood the log).
    return ConnectionResetError(errno.ECONNRESET, "the request did not arrive in time")


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with ``DeadlineSocket`` around every client connection."""

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)
        super().enqueue_req(conn)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Kept-alive connections told to wait (429, 503), each with when it may go on.
        self.slowed_conns: list[tuple[float, Any, Any]] = []

    def handle(self, conn: Any) -> Any:
        conn.sock.new_request()
        take_slow_down()  # nothing left over from another connection's turn
        result = super().handle(conn)
        wait = take_slow_down()
        conn.slow_down_until = time.monotonic() + wait if wait else 0.0
        return result

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Put a connection that was told to wait back in the poller only once it has waited.

        Its client may send the next request at once; the bytes wait in the
        kernel, and no thread is held meanwhile.
        """
        if getattr(conn, "slow_down_until", 0.0) > time.monotonic() and self.alive:
            self.slowed_conns.append((conn.slow_down_until, conn, fs))
            return
        super().finish_request(conn, fs)

    def murder_keepalived(self, *args: Any, **kwargs: Any) -> None:
        """Release the slowed connections whose wait is over (the loop calls this each turn)."""
        now, waiting = time.monotonic(), []
        for until, conn, fs in self.slowed_conns:
            if until <= now or not self.alive:
                super().finish_request(conn, fs)
            else:
                waiting.append((until, conn, fs))
        self.slowed_conns = waiting
        super().murder_keepalived(*args, **kwargs)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Log and count the error as gunicorn does, but answer in API.md's format."""
        page = _ErrorPage()
        super().handle_error(req, page, addr, exc)
        try:
            util.write_nonblock(client, json_error_response(page.status))
        except Exception:
            self.log.debug("Failed to send error message.")


# What gunicorn's own refusals become (anything else is a 400).
_ERROR_ANSWERS = {
    403: ("Forbidden", "permission_denied", "This request is not allowed."),
    414: ("URI Too Long", "uri_too_long", "The request line is too long."),
    417: ("Expectation Failed", "invalid_request", "This Expect header is not supported."),
    431: (
        "Request Header Fields Too Large",
        "headers_too_large",
        "The request headers are too large.",
    ),
    500: (
        "Internal Server Error",
        "internal_error",
        "Something went wrong on our side; it has been logged.",
    ),
    501: ("Not Implemented", "invalid_request", "This transfer coding is not supported."),
}
_MALFORMED = ("Bad Request", "invalid_request", "The request is malformed HTTP.")


def json_error_response(status: int) -> bytes:
    """A whole HTTP/1.1 error answer with API.md's body; it never repeats the request."""
    reason, error_type, message = _ERROR_ANSWERS.get(status, _MALFORMED)
    if status not in _ERROR_ANSWERS:
        status = 400
    body = error_body(error_type, message)
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        **SECURITY_HEADERS,
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


class _ErrorPage:
    """Stand in for the client while gunicorn writes its HTML page; keep only the status."""

    def __init__(self) -> None:
        self.status = 500

    def gettimeout(self) -> float | None:
        return None

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        # "HTTP/1.1 400 Bad Request\r\n..."
        self.status = int(data.split(b" ", 2)[1])


class RequestLineLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger without its access line.

    The app writes one JSON line per request itself (``gridlink.requests``:
    method, route, path, client address, status, duration, read source,
    request id), which says all the access line did but the response size
    and user agent. gunicorn would otherwise build its access line's atoms
    and format a second line for every request, ``logconfig_dict`` being set.
    """

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
