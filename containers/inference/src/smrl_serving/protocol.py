"""uvicorn's httptools protocol with deadlines on reading requests.

uvicorn times out only idle keep-alive connections (after a response); a connection that
never sends a byte, or sends half its headers or half its body, stays open for as long
as the client likes (measured: 200 s and more), each holding a file handle and a slot of
the worker's `limit_concurrency`. Here:

* a new connection that sends nothing is closed after the keep-alive timeout, like an idle
  kept-alive one;
* a request's headers must be complete within HEADER_TIMEOUT_S of its first byte, else a
  408 and the connection closed;
* its body must be complete within BODY_TIMEOUT_S of the end of its headers, else the
  connection is closed (the application sees a disconnect and answers nothing).

The values and why: smrl_serving.limits.
"""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from smrl_serving.limits import BODY_TIMEOUT_S, HEADER_TIMEOUT_S

TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
               b"content-length: 43\r\nconnection: close\r\n\r\n"
               b"Request not received within the time limit.")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the read deadlines above (uvicorn's `http=` setting)."""

    header_timeout = HEADER_TIMEOUT_S
    body_timeout = BODY_TIMEOUT_S

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: arm it for the first request too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._arm(self.body_timeout, self._body_late)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self.read_deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _headers_late(self) -> None:
        self.read_deadline = None
        if not self.transport.is_closing():
            self.logger.info("Closed a connection whose request headers took over %g s.", self.header_timeout)
            self.transport.write(TIMEOUT_408)
            self.transport.close()

    def _body_late(self) -> None:
        self.read_deadline = None
        if not self.transport.is_closing():
            self.logger.info("Closed a connection whose request body took over %g s.", self.body_timeout)
            self.transport.close()
