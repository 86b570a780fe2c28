"""The loopback proxy in front of endpoints, against a small HTTP server on this machine (no Docker)."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import socket
import threading
import time

import pytest

from emulator.loopback_proxy import FD_RESERVE, LoopbackProxy, connection_limits, http_error


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the echo server itself waits for delayed ACKs

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream):
    proxy = LoopbackProxy(0, max_connections=20, idle_timeout=0.5)
    proxy.upstream = upstream
    proxy.start()
    yield proxy
    proxy.close()


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", "/invocations", body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_requests_pass_through_and_keep_alive_works(proxy):
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for body in (b"[1, 2]", b"x" * 300_000):
        connection.request("POST", "/invocations", body=body)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, body)
    connection.close()


def test_the_proxy_listens_on_loopback_only_and_frees_the_port_on_close(upstream):
    proxy = LoopbackProxy(0)
    proxy.upstream = upstream
    port = proxy.start()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.bind(("0.0.0.0", 0))  # the wildcard address is not taken by the proxy on another port
    proxy.close()
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


def test_a_taken_port_raises_at_start(upstream):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(OSError):
            LoopbackProxy(holder.getsockname()[1]).start()


def test_idle_connections_that_send_nothing_are_closed_after_the_idle_timeout(proxy):
    idle = socket.create_connection(("127.0.0.1", proxy.port))
    idle.settimeout(5)
    started = time.monotonic()
    assert idle.recv(1) == b""  # closed by the proxy
    assert 0.4 < time.monotonic() - started < 3
    idle.close()


def test_at_the_limit_the_longest_waiting_silent_client_makes_room(proxy):
    silent = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(proxy.max_connections)]
    assert _wait_for(lambda: len(proxy.clients) == proxy.max_connections)
    assert _post(proxy.port, b"still served") == (200, b"still served")
    assert proxy.evicted >= 1
    silent[0].settimeout(5)
    assert silent[0].recv(1) == b""  # the oldest was the one closed
    for sock in silent:
        sock.close()


def test_a_client_over_the_upstream_limit_gets_a_503_at_once(upstream):
    proxy = LoopbackProxy(0, max_upstream=1)
    proxy.upstream = upstream
    proxy.start()
    try:
        busy = socket.create_connection(("127.0.0.1", proxy.port))
        busy.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")  # body never comes
        assert _wait_for(lambda: proxy.upstream_count == 1)
        started = time.monotonic()
        status, body = _post(proxy.port, b"x")
        assert status == 503 and b"Too many requests" in body
        assert time.monotonic() - started < 1
        busy.close()
    finally:
        proxy.close()


def test_a_container_that_does_not_answer_gives_a_502_naming_the_cause():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()  # nothing listens here once closed
    proxy = LoopbackProxy(0)
    proxy.upstream = dead
    proxy.start()
    try:
        status, body = _post(proxy.port, b"x")
    finally:
        proxy.close()
    assert status == 502
    assert b"does not answer" in body and b"refused" in body.lower()


def test_before_the_container_is_known_clients_get_a_503_starting():
    proxy = LoopbackProxy(0)
    proxy.start()
    try:
        assert _post(proxy.port, b"x") == (503, b"The endpoint is starting; retry shortly.\n")
    finally:
        proxy.close()


def test_limits_keep_handles_for_the_rest_of_the_process():
    clients, upstream = connection_limits(20_000)
    assert clients + upstream + FD_RESERVE <= 20_000
    assert clients >= 10_000
    small_clients, small_upstream = connection_limits(1024)
    assert small_clients + small_upstream + FD_RESERVE <= 1024
    assert small_upstream >= 8


def test_error_responses_are_complete_http_messages():
    response = http_error(502, "Bad Gateway", "gone")
    head, body = response.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway") and b"Connection: close" in head
    assert body == b"gone\n" and b"Content-Length: 5" in head


def test_a_request_through_the_proxy_takes_no_delayed_ack(proxy):
    """Answers in two segments (headers, body) must not wait for the client's delayed ACK (~40 ms)."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(30):
        started = time.perf_counter()
        connection.request("POST", "/invocations", body=b"[1]")
        connection.getresponse().read()
        times.append(time.perf_counter() - started)
    connection.close()
    assert sorted(times)[len(times) // 2] < 0.02, times  # 40 ms when a delayed ACK is waited for


def test_a_proxy_starts_from_a_thread_that_runs_an_event_loop_of_its_own(upstream):
    """As in a Jupyter kernel, where deploy() is called while the kernel's loop runs."""

    async def deploy_inside_a_running_loop() -> int:
        proxy = LoopbackProxy(0)
        proxy.upstream = upstream
        proxy.start()
        try:
            return _post(proxy.port, b"hello")[0]
        finally:
            proxy.close()

    assert asyncio.run(deploy_inside_a_running_loop()) == 200
