"""A TCP proxy from 127.0.0.1:PORT to an endpoint's container, in a thread of this process.

Why not Docker's published port: serving containers sit on an internal network (no route
off the machine), and Docker publishes no port for those; and Docker's userland proxy holds
about 6 file handles per connection under the engine's own limit (20,000 here), so about
3,400 idle connections made it exit and the port stayed dead for good. This proxy holds one
handle per connection that has sent nothing yet, opens the container side only once a
client sends its first bytes, and sets its limits from this process's own:

* at most `max_connections` clients (from RLIMIT_NOFILE, which `raise_file_limit` lifts to
  the hard limit); a client over it evicts the longest-waiting client that has sent nothing
  (as nginx reuses idle connections when it runs short), or, with none, gets a 503 at once;
* at most `max_upstream` connections to the container (1,024); a client over it gets a 503;
* a client that sends nothing for `idle_timeout` seconds (60, the server's keep-alive) is
  closed; once a request is under way the server's own header, body and keep-alive
  timeouts apply (smrl_serving.protocol);
* when the container is gone or cannot be reached, the client gets a 502 naming the cause
  at once, not a hang.

Measured (benchmarks/endpoint_abuse.py): see ARCHITECTURE.md, "Endpoints under abuse".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import resource
import socket
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Connections to the container at once: well above what the clients of a local endpoint
# use (one per thread), and the inference server's own limit per worker.
MAX_UPSTREAM = 1024
# Handles kept for the rest of this process (files, Docker's socket, logs).
FD_RESERVE = 256
MAX_CONNECTIONS_CAP = 50_000
IDLE_TIMEOUT_S = 60.0
# A container on a local bridge answers a connect in well under a millisecond; one that is
# gone leaves the kernel resolving its address for ~3 s.
CONNECT_TIMEOUT_S = 3.0
BACKLOG = 4096


def raise_file_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


def connection_limits(file_limit: int) -> tuple[int, int]:
    """(clients, upstream connections) that fit in `file_limit` handles with the reserve kept."""
    upstream = max(8, min(MAX_UPSTREAM, file_limit // 8))
    clients = max(16, min(MAX_CONNECTIONS_CAP, file_limit - upstream - FD_RESERVE))
    return clients, upstream


def http_error(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = (message + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class LoopbackProxy:
    """Listens on 127.0.0.1:`port` and forwards each connection to `upstream` (host, port).

    `upstream` may be set after `start()` (the container's address is known only once it
    runs); until then clients get a 503 saying the endpoint is starting.
    """

    def __init__(self, port: int, *, idle_timeout: float = IDLE_TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, max_connections: int | None = None,
                 max_upstream: int | None = None):
        self.requested_port = port
        self.port = 0
        self.upstream: tuple[str, int] | None = None
        # Asked before each new container connection: why the container is gone, or None.
        self.health_check: Callable[[], str | None] = lambda: None
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        clients, upstream = connection_limits(raise_file_limit())
        self.max_connections = max_connections or clients
        self.max_upstream = max_upstream or upstream
        self.clients: set[_Client] = set()
        self.waiting: collections.OrderedDict[_Client, None] = collections.OrderedDict()  # sent nothing yet
        self.upstream_count = 0
        self.evicted = 0
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Binds 127.0.0.1:`port` (0: a free one) now, serves from a daemon thread; returns the port.

        Raises:
            OSError: the port is taken.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, self.requested_port))
            listener.listen(BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        # The loop runs in its own thread from the start: the caller's thread may run a loop
        # of its own (a Jupyter kernel's), and one thread cannot run two.
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"smrl-proxy-{self.port}", daemon=True)
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(
                self._loop.create_server(lambda: _Client(self), sock=listener, backlog=BACKLOG), self._loop).result(10)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            listener.close()
            raise
        return self.port

    def close(self) -> None:
        """Stops listening and closes every connection; the port is free on return."""
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None
            self._loop.close()

    async def _shut(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            client.abort()
            if client.upstream is not None:
                client.upstream.transport.abort()
        for _ in range(3):  # transports close their sockets in the next loop iterations
            await asyncio.sleep(0)

    def stats(self) -> dict[str, int]:
        return {"clients": len(self.clients), "waiting": len(self.waiting), "upstream": self.upstream_count,
                "evicted": self.evicted, "refused": self.refused}

    # -- called from the loop's thread ---------------------------------------------------

    def admit(self, client: _Client) -> bool:
        if len(self.clients) >= self.max_connections:
            if not self.waiting:
                self.refused += 1
                return False
            oldest, _ = self.waiting.popitem(last=False)
            oldest.abort()
            self.evicted += 1
        self.clients.add(client)
        self.waiting[client] = None
        return True


class _Client(asyncio.Protocol):
    """One client connection; its container side opens at the first bytes it sends."""

    def __init__(self, proxy: LoopbackProxy):
        self.proxy = proxy
        self.loop = proxy._loop
        self.transport: Any = None
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] | None = None  # bytes received while connecting
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.client_eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and accepted
        # ones have 0: without it each answer's second segment waits ~40 ms for a delayed ACK.
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.proxy.admit(self):
            transport.write(http_error(503, "Service Unavailable",
                                       f"Too many connections to this endpoint ({self.proxy.max_connections}); "
                                       "retry shortly."))
            transport.close()
            self.closed = True
            return
        self.idle_timer = self.loop.call_later(self.proxy.idle_timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.transport.write(data)
            return
        if self.pending is not None:
            self.pending.append(data)
            return
        self.pending = [data]
        self.proxy.waiting.pop(self, None)
        self._cancel_idle()
        self.transport.pause_reading()  # until the container side is open
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        proxy = self.proxy
        down = proxy.health_check()
        if down is not None:
            return self._fail(502, "Bad Gateway", f"The endpoint is down. {down}")
        if proxy.upstream is None:
            return self._fail(503, "Service Unavailable", "The endpoint is starting; retry shortly.")
        if proxy.upstream_count >= proxy.max_upstream:
            proxy.refused += 1
            return self._fail(503, "Service Unavailable",
                              f"Too many requests under way on this endpoint ({proxy.max_upstream}); retry shortly.")
        proxy.upstream_count += 1
        host, port = proxy.upstream
        try:
            _, upstream = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Upstream(self), host, port), proxy.connect_timeout)
        except (OSError, asyncio.TimeoutError) as error:
            proxy.upstream_count -= 1
            cause = (f"no answer within {proxy.connect_timeout:g} s" if isinstance(error, asyncio.TimeoutError)
                     else os.strerror(error.errno) if error.errno else str(error))
            return self._fail(502, "Bad Gateway",
                              f"The endpoint's container does not answer on {host}:{port} ({cause}): it has "
                              "stopped or crashed. See its log (`docker logs`), then deploy it again.")
        if self.closed:
            upstream.transport.close()
            return
        self.upstream = upstream
        for chunk in self.pending or []:
            upstream.transport.write(chunk)
        self.pending = None
        if self.client_eof:
            upstream.transport.write_eof()
        else:
            self.transport.resume_reading()

    def _fail(self, status: int, reason: str, message: str) -> None:
        if not self.closed:
            self.transport.write(http_error(status, reason, message))
            self.transport.close()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.upstream is not None:
            self.upstream.transport.write_eof()
        elif self.pending is None:
            return False  # nothing sent: close
        return True  # half-close: the answer still comes back

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_idle()
        self.proxy.clients.discard(self)
        self.proxy.waiting.pop(self, None)
        if self.upstream is not None:
            self.upstream.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def _cancel_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None


class _Upstream(asyncio.Protocol):
    """The container side of one client connection."""

    def __init__(self, client: _Client):
        self.client = client
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        self.client.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.proxy.upstream_count -= 1
        if not self.client.closed:
            self.client.transport.close()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()
