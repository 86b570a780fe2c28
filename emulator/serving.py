"""Local endpoints through the SDK's local mode, minus its slow and leaky parts.

The SDK's local mode publishes the serving port on every interface, sleeps 5 s between
/ping polls (and 30 s more in `deploy(wait=True)`), runs `docker info` and `docker context
inspect` on every `predict()`, always binds port 8080, and leaves endpoints running when
the Python process dies. Here, for endpoints of an `emulator.local_session()`:

* the port is bound to 127.0.0.1 only, 8080 when free, else a free one (and said);
* the endpoint is ready at the first 200 on /ping (polled every 20 ms);
* `predict()` reuses one keep-alive HTTP connection per thread to that port;
* every endpoint is removed when it is deleted, when the process exits or is killed with
  SIGTERM/SIGHUP, or when the `emulator.endpoint()` block raises.

Serving containers run on their own network (`sagemaker-local-serving`, not internal:
a published port needs a normal bridge), apart from the internal network of training jobs.
"""

from __future__ import annotations

import atexit
import datetime
import http.client
import logging
import signal
import socket
import threading
import time
from typing import Any

from sagemaker.local.entities import _LocalEndpoint
from sagemaker.local.local_session import LocalSagemakerClient
from sagemaker.utils import get_config_value

from emulator import contract
from emulator.containers import (
    LOOPBACK,
    SERVING_NETWORK,
    ServingContainer,
    ensure_network,
    port_holder,
    release_network,
    require_image,
)
from emulator.engine import require_engine
from emulator.errors import UserError
from emulator.images import default_region, ensure_sdk_tags
from emulator.inputs import check_port

logger = logging.getLogger(__name__)

DEFAULT_PORT = contract.SERVING_PORT
PING_INTERVAL_S = 0.02
# The SageMaker contract gives a container 4 minutes to become healthy.
READY_TIMEOUT_S = 240.0
# Python's stdlib client writes headers and body in separate sends; without NODELAY the
# second waits for a delayed ACK (about 40 ms on Linux).
_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class EndpointError(UserError, RuntimeError):
    """An endpoint did not start, or answered a request with an error status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as servers do, with
    SO_REUSEADDR: connections in TIME_WAIT do not hold the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int | None = None) -> int:
    """`preferred` when free on 127.0.0.1; unset: 8080 when free, else a free port the
    kernel picks (and said); 0: a free port the kernel picks.

    Raises:
        InputError: `preferred` is not 0-65535.
        EndpointError: `preferred` is taken.
    """
    check_port(preferred)
    if preferred:
        if port_is_free(preferred):
            return preferred
        held = _port_holder(preferred)
        if held:
            raise EndpointError(f"Port {preferred} on {LOOPBACK} is taken {held}.")
        raise EndpointError(f"Port {preferred} on {LOOPBACK} is taken. Pick another port, or 0 (or none) to get a "
                            "free one.")
    if preferred is None and port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    if preferred is None:
        logger.warning("Port %d is taken; serving on %s:%d instead.", DEFAULT_PORT, LOOPBACK, port)
    return port


def _port_holder(port: int) -> str | None:
    """Which endpoint of ours holds `port`, and whose it is (see containers.port_holder)."""
    client = require_engine()
    try:
        return port_holder(client, port)
    finally:
        client.close()


# -- the endpoint: fast readiness, always removed ------------------------------------------

class LoopbackEndpoint(_LocalEndpoint):
    """`_LocalEndpoint` with a loopback port, fast readiness and complete removal."""

    def serve(self) -> None:
        client = require_engine()
        image = self.primary_container["Image"]
        ensure_sdk_tags(default_region(), client)
        require_image(client, image, "serving")
        session = self.local_session
        # The SDK's own setting for the port; unset, 8080 or the next free port.
        self.port = choose_port(get_config_value("local.serving_port", session.config))
        ensure_network(client, SERVING_NETWORK, internal=False)
        self.create_time = datetime.datetime.now()
        self.container = ServingContainer(
            self.production_variant["InstanceType"],
            self.production_variant["InitialInstanceCount"],
            image,
            session,
            port=self.port,
        )
        live_endpoints.add(self)
        try:
            self.container.serve(self.primary_container["ModelDataUrl"], self.primary_container["Environment"])
            self.ready_seconds = wait_until_ready(self.port, self.container, time.monotonic())
        except BaseException:
            self.stop()
            raise
        self.state = _LocalEndpoint._IN_SERVICE
        logger.debug("Endpoint %s ready on http://%s:%d after %.2f s", self.name, LOOPBACK, self.port,
                     self.ready_seconds)

    def stop(self) -> None:
        """Stops and removes the containers, the network when unused, and the temp folders."""
        container = self.container
        if container is None:
            return
        self.container = None
        live_endpoints.discard(self)
        client = require_engine()
        try:
            if container.container is not None:
                container.container.down()  # ends `docker-compose up`
            container.remove(client)
            release_network(client, SERVING_NETWORK)
            runtime = getattr(self.local_session, "sagemaker_runtime_client", None)
            if isinstance(runtime, LoopbackRuntimeClient):
                runtime.close_port(self.port)
            _wait_for_port_release(self.port)
        finally:
            client.close()


def _wait_for_port_release(port: int, timeout: float = 5.0) -> None:
    """Docker's port proxy exits shortly after its container; the port is ours again after."""
    deadline = time.monotonic() + timeout
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until_ready(port: int, container: ServingContainer, started: float,
                     timeout: float = READY_TIMEOUT_S) -> float:
    """Polls GET /ping until 200; returns the seconds it took. Fails fast if compose exits."""
    deadline = started + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
            connection.request("GET", "/ping")
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            connection.close()
            if response.status == 200:
                return time.monotonic() - started
            if response.status == 503:
                # Workers accept connections only after loading the model: a 503 is a load
                # failure, not "still starting".
                raise EndpointError(f"The serving container could not load the model: {body.strip()[:1000]}")
            last = f"{response.status} {body.strip()[:300]}"
        except OSError as error:
            last = str(error)
        hosting = container.container
        if hosting is not None and hosting.process is not None and hosting.process.poll() is not None:
            raise EndpointError(f"The serving container exited before it was ready (last /ping: {last}). "
                                "Its log is above; check the model archive and the inference script.")
        time.sleep(PING_INTERVAL_S)
    raise EndpointError(f"The serving container was not ready within {timeout:.0f} s (last /ping: {last}).")


# -- requests: one keep-alive connection per thread ----------------------------------------

class _Body:
    """The part of botocore's StreamingBody that the SDK's deserializers use."""

    def __init__(self, data: bytes):
        self._data = data

    def read(self, amount: int | None = None) -> bytes:
        data, self._data = (self._data, b"") if amount is None else (self._data[:amount], self._data[amount:])
        return data

    def close(self) -> None:
        pass


class LoopbackRuntimeClient:
    """`invoke_endpoint` for local endpoints: straight to 127.0.0.1:<port>, no `docker` call."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: dict[int, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self.config: dict | None = None  # LocalSession assigns its config here; ports come from the endpoint

    def _connection(self, port: int) -> http.client.HTTPConnection:
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get(port)
        if connection is None:
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=70)
            connection.connect()
            connection.sock.setsockopt(*_NODELAY)
            connections[port] = connection
            with self._lock:
                self._opened.setdefault(port, []).append(connection)
        return connection

    def close_port(self, port: int) -> None:
        """Closes every kept-alive connection to `port`. Until then the server's side of each
        lingers (FIN-WAIT-2) and keeps the port from being bound again."""
        with self._lock:
            connections = self._opened.pop(port, [])
        for connection in connections:
            connection.close()

    def invoke_endpoint(self, Body: Any, EndpointName: str, ContentType: str | None = None,
                        Accept: str | None = None, **_: Any) -> dict[str, Any]:
        endpoint = endpoint_named(EndpointName)
        body = Body.encode() if isinstance(Body, str) else Body
        headers = {"Content-Type": ContentType or "application/json"}
        if Accept:
            headers["Accept"] = Accept
        for attempt in (1, 2):
            connection = self._connection(endpoint.port)
            try:
                connection.request("POST", "/invocations", body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # A keep-alive connection the server closed: reconnect once.
                connection.close()
                self._local.connections.pop(endpoint.port, None)
                if attempt == 2:
                    raise
        if response.status >= 400:
            raise EndpointError(f"Endpoint {EndpointName} answered {response.status}: "
                                f"{data.decode(errors='replace').strip()}", status=response.status)
        return {"Body": _Body(data), "ContentType": response.getheader("Content-Type", Accept)}


def endpoint_named(name: str) -> LoopbackEndpoint:
    """The running local endpoint `name` of this process.

    Raises:
        EndpointError: there is none (never deployed, or deleted).
    """
    endpoint = LocalSagemakerClient._endpoints.get(name)
    if not isinstance(endpoint, LoopbackEndpoint) or endpoint.container is None:
        raise EndpointError(f"No running local endpoint named {name!r}: deploy it first (it may have been deleted).")
    return endpoint


# -- removal at exit -----------------------------------------------------------------------

class _LiveEndpoints:
    """Endpoints of this process that still run; all removed at exit or on SIGTERM/SIGHUP."""

    def __init__(self) -> None:
        self._endpoints: set[LoopbackEndpoint] = set()
        self._lock = threading.Lock()
        self._hooked = False

    def add(self, endpoint: LoopbackEndpoint) -> None:
        with self._lock:
            self._endpoints.add(endpoint)
            if not self._hooked:
                self._hook()

    def discard(self, endpoint: LoopbackEndpoint) -> None:
        with self._lock:
            self._endpoints.discard(endpoint)

    def stop_all(self) -> None:
        with self._lock:
            endpoints = list(self._endpoints)
        for endpoint in endpoints:
            try:
                endpoint.stop()
            except Exception as error:  # keep removing the others
                logger.warning("Could not remove endpoint %s: %s", endpoint.name, error)

    def _hook(self) -> None:
        self._hooked = True
        # The SDK serves each endpoint from a non-daemon thread (`docker-compose up`), and
        # Python joins those before it runs atexit: a script that ends with an endpoint up
        # would wait forever. Hooks registered here run before that join.
        threading._register_atexit(self.stop_all)  # type: ignore[attr-defined]
        atexit.register(self.stop_all)  # endpoints added after the join began
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(signum)

            def on_signal(number: int, frame: Any, previous: Any = previous) -> None:
                self.stop_all()
                if callable(previous):
                    previous(number, frame)
                else:
                    raise SystemExit(128 + number)

            signal.signal(signum, on_signal)


live_endpoints = _LiveEndpoints()

