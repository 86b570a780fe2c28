"""Local endpoints through the SDK's local mode, minus its slow and leaky parts.

The SDK's local mode publishes the serving port on every interface, sleeps 5 s between
/ping polls (and 30 s more in `deploy(wait=True)`), runs `docker info` and `docker context
inspect` on every `predict()`, always binds port 8080, and leaves endpoints running when
the Python process dies. Here, for endpoints of an `emulator.local_session()`:

* the port is bound to 127.0.0.1 only, 8080 when free, else a free one (and said), by
  a proxy in this process (`loopback_proxy`) that forwards to the container's address on
  the internal serving network: no Docker port proxy to die under many connections, and
  no route from the container off the machine (Docker publishes no port for internal
  networks, and a routable network would let a served model's code reach the internet);
* the endpoint is ready at the first 200 on /ping (polled every 20 ms);
* `predict()` reuses one keep-alive HTTP connection per thread to that port, and raises
  `EndpointError` naming the cause when the endpoint stopped, never a raw socket error;
* `watch()` (what `smrl-local serve` runs) raises `EndpointError` once /ping stops answering;
* every endpoint is removed when it is deleted, when the process exits or is killed with
  SIGTERM/SIGHUP, or when the `emulator.endpoint()` block raises.
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
from sagemaker.local.image import _HostingContainer
from sagemaker.local.local_session import LocalSagemakerClient
from sagemaker.utils import get_config_value

from emulator import contract
from emulator.containers import (
    LOOPBACK,
    SERVING_NETWORK,
    ServingContainer,
    address_on,
    containers_of,
    ensure_network,
    port_holder,
    release_network,
    require_image,
)
from emulator.diagnosis import diagnose
from emulator.engine import require_engine
from emulator.errors import UserError
from emulator.images import default_region, ensure_sdk_tags
from emulator.inputs import check_port
from emulator.loopback_proxy import LoopbackProxy
from emulator.network_holds import NetworkHold

logger = logging.getLogger(__name__)
# The containers' addresses this process's endpoint proxies connect to: on the engine's
# internal bridge, on this machine (runtime's audit hook lets them through).
endpoint_addresses: set[str] = set()

DEFAULT_PORT = contract.SERVING_PORT
PING_INTERVAL_S = 0.02
# The SageMaker contract gives a container 4 minutes to become healthy.
READY_TIMEOUT_S = 240.0
# The watchdog: /ping every second, 2 s to answer (the SageMaker contract's limit), and
# three misses in a row (a busy machine may miss one) before the endpoint counts as down.
WATCH_INTERVAL_S = 1.0
PING_TIMEOUT_S = 2.0
WATCH_MISSES = 3
# A request may take the server's 60 s (SAGEMAKER_MODEL_SERVER_TIMEOUT) and a little more.
REQUEST_TIMEOUT_S = 70.0
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
        self.proxy = LoopbackProxy(self.port)
        self.proxy.health_check = self.exit_reason
        try:
            self.proxy.start()
        except OSError as error:
            raise EndpointError(f"Port {self.port} on {LOOPBACK} is taken ({error.strerror}). Pick another port, "
                                "or 0 (or none) to get a free one.") from None
        self.network_hold: NetworkHold | None = NetworkHold(SERVING_NETWORK).__enter__()
        ensure_network(client, SERVING_NETWORK, internal=True)
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
            started = time.monotonic()
            self.container.serve(self.primary_container["ModelDataUrl"], self.primary_container["Environment"])
            address = wait_for_address(client, self.container, started)
            endpoint_addresses.add(address)
            self.proxy.upstream = (address, contract.SERVING_PORT)
            self.ready_seconds = wait_until_ready(self.port, self.container, started)
        except BaseException:
            self.stop()
            raise
        self.state = _LocalEndpoint._IN_SERVICE
        logger.debug("Endpoint %s ready on http://%s:%d after %.2f s", self.name, LOOPBACK, self.port,
                     self.ready_seconds)

    def exit_reason(self) -> str | None:
        """Why the endpoint's container is gone, once its `docker-compose up` has exited; else None.

        Cheap (no Docker call): the loopback proxy asks it before each new connection."""
        container = self.container
        hosting = container.container if container is not None else None
        process = getattr(hosting, "process", None)
        if container is None:
            return "It was deleted."
        if process is None or process.poll() is None:
            return None
        return f"Its container exited (docker-compose exit code {process.returncode})."

    def describe_failure(self) -> str:
        """The cause of a failed /ping or request, and the fix, for one-line messages."""
        reason = self.exit_reason()
        if reason is None and self.container is not None:
            client = require_engine()
            try:
                found = containers_of(client, self.container.hosts)
            finally:
                client.close()
            if not found:
                reason = "Its container was removed."
            else:
                state = found[0].attrs.get("State") or {}
                status = "paused" if state.get("Paused") else state.get("Status")
                if status != "running":
                    memory = ", killed for memory" if state.get("OOMKilled") else ""
                    reason = f"Its container {found[0].name} is {status} (exit code {state.get('ExitCode')}{memory})."
                else:
                    reason = f"Its container {found[0].name} runs but does not answer (busy or stuck?)."
        return (f"{reason or 'It was deleted.'} See the container's log above, then deploy the model again "
                "(`smrl-local serve`).")

    def stop(self) -> None:
        """Stops and removes the containers, the network when unused, and the temp folders."""
        container = self.container
        proxy = getattr(self, "proxy", None)
        if proxy is not None:
            proxy.close()  # frees the port at once
        hold, self.network_hold = getattr(self, "network_hold", None), None
        if container is None:
            if hold is not None:
                hold.__exit__()
            return
        self.container = None
        live_endpoints.discard(self)
        client = require_engine()
        try:
            if container.container is not None:
                container.container.down()  # ends `docker-compose up`
            container.remove(client)
            if hold is not None:  # the last endpoint out, of any process, removes the network
                if hold.last_out():
                    release_network(client, SERVING_NETWORK)
                hold.__exit__()
            runtime = getattr(self.local_session, "sagemaker_runtime_client", None)
            if isinstance(runtime, LoopbackRuntimeClient):
                runtime.close_port(self.port)
        finally:
            client.close()


def wait_for_address(client: Any, container: ServingContainer, started: float,
                     timeout: float = READY_TIMEOUT_S) -> str:
    """Polls Docker until the endpoint's container has its address on the serving network."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        address = address_on(client, container.hosts, SERVING_NETWORK)
        if address:
            return address
        hosting = container.container
        if hosting is not None and hosting.process is not None and hosting.process.poll() is not None:
            raise EndpointError("The serving container exited before it started. Its log is above; check the "
                                "model archive and the inference script.")
        time.sleep(PING_INTERVAL_S)
    raise EndpointError(f"The serving container did not start within {timeout:.0f} s: is the engine overloaded? "
                        "Check `docker ps -a` and try again.")


def ping(port: int, timeout: float = PING_TIMEOUT_S) -> tuple[int, str]:
    """GET /ping on 127.0.0.1:`port`: (status, body).

    Raises:
        OSError, http.client.HTTPException: no answer.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def watch(endpoint_name: str, interval: float = WATCH_INTERVAL_S, misses: int = WATCH_MISSES) -> None:
    """Returns only by raising: `EndpointError` once the endpoint stopped answering /ping.

    Raises:
        EndpointError: the container exited (at once), or /ping failed `misses` times in a row;
            the message names the cause and the fix.
    """
    missed = 0
    while True:
        endpoint = endpoint_named(endpoint_name)
        url = f"http://{LOOPBACK}:{endpoint.port}"
        if endpoint.exit_reason() is not None:
            raise EndpointError(f"Endpoint {endpoint_name} on {url} is down. {endpoint.describe_failure()}")
        try:
            status, body = ping(endpoint.port)
            last = f"{status} {body.strip()[:200]}".strip()
            missed = 0 if status == 200 else missed + 1
        except (OSError, http.client.HTTPException) as error:
            last = str(error) or type(error).__name__
            missed += 1
        if missed >= misses:
            raise EndpointError(f"Endpoint {endpoint_name} on {url} stopped answering /ping ({misses} tries, last: "
                                f"{last}). {endpoint.describe_failure()}")
        time.sleep(interval)


def wait_until_ready(port: int, container: ServingContainer, started: float,
                     timeout: float = READY_TIMEOUT_S) -> float:
    """Polls GET /ping until 200; returns the seconds it took. Fails fast if compose exits."""
    deadline = started + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = ping(port)
            if status == 200:
                return time.monotonic() - started
            # Workers accept connections only after loading the model: the server's 503 is a
            # load failure, not "still starting" (the proxy's own 502 is: nothing listens yet).
            if status == 503:
                known = diagnose(body)
                raise EndpointError(f"The serving container could not load the model: {body.strip()[:1000]}"
                                    + (f" Cause: {known.cause}. Fix: {known.fix}." if known else ""))
            last = f"{status} {body.strip()[:300]}"
        except (OSError, http.client.HTTPException) as error:
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
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT_S)
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
            connection = None
            try:
                connection = self._connection(endpoint.port)
                connection.request("POST", "/invocations", body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as error:
                if connection is not None:
                    connection.close()
                    self._local.connections.pop(endpoint.port, None)
                # A keep-alive connection the server closed: reconnect once. Never after a
                # timeout: the request may be running, and a second one would wait as long.
                if attempt == 2 or isinstance(error, TimeoutError):
                    cause = (f"no answer within {REQUEST_TIMEOUT_S:.0f} s" if isinstance(error, TimeoutError)
                             else str(error) or type(error).__name__)
                    raise EndpointError(f"Endpoint {EndpointName} on http://{LOOPBACK}:{endpoint.port} did not "
                                        f"answer ({cause}). {endpoint.describe_failure()}") from error
        if response.status == 502 and endpoint.exit_reason() is not None:
            raise EndpointError(f"Endpoint {EndpointName} on http://{LOOPBACK}:{endpoint.port} is down. "
                                f"{endpoint.describe_failure()}", status=502)
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
        threading.excepthook = _quiet_hosting_exit
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


_thread_excepthook = threading.excepthook


def _quiet_hosting_exit(args: Any) -> None:
    """The SDK's serving thread raises a RuntimeError with a traceback when its container
    exits; `watch()` and `predict()` say that in one line with the cause and the fix."""
    if isinstance(args.thread, _HostingContainer) and isinstance(args.exc_value, RuntimeError):
        logger.debug("%s: %s", args.thread.name, args.exc_value)
        return
    _thread_excepthook(args)


live_endpoints = _LiveEndpoints()

