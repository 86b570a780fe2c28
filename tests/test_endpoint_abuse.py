"""Endpoints under abuse, with the real engine: stalled requests, many idle connections, a
container that dies, and a served model's code trying to reach the internet.

The model needs no training: an inference script whose `model_fn` returns a constant and
whose `transform_fn` echoes the request, with what its import-time connection attempts to
outside addresses got.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

import emulator
from conftest import REPO, make_tar_gz
from emulator.containers import SERVING_NETWORK, containers_of
from emulator.serving import PING_TIMEOUT_S, WATCH_INTERVAL_S, WATCH_MISSES, EndpointError, endpoint_named, ping, watch
from smrl_serving.limits import BODY_TIMEOUT_S, HEADER_TIMEOUT_S
from test_serving import _listening_addresses

ECHO_SCRIPT = '''
import json, socket, time


def _try(address):
    started = time.monotonic()
    try:
        socket.create_connection(address, timeout=2).close()
        outcome = "connected"
    except OSError as error:
        outcome = f"{type(error).__name__}: {error}"
    return {"address": "%s:%d" % address, "outcome": outcome, "seconds": time.monotonic() - started}


# Tried at import, as any module of a served model could.
EGRESS = [_try(("1.1.1.1", 53)), _try(("8.8.8.8", 53))]


def model_fn(model_dir):
    return "no model"


def transform_fn(model, data, content_type, accept):
    return json.dumps({"echo": json.loads(data), "egress": EGRESS})
'''


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model.tar.gz, source dir with inference.py)."""
    folder = tmp_path_factory.mktemp("echo")
    code = folder / "code"
    code.mkdir()
    (code / "inference.py").write_text(ECHO_SCRIPT)
    return make_tar_gz(folder / "model.tar.gz", {"README.txt": b"the inference script needs no files"}), code


@pytest.fixture(scope="module")
def echo_endpoint(echo_model, inference_image_ready, docker_engine):
    archive, code = echo_model
    with emulator.endpoint(archive, entry_point="inference.py", source_dir=code) as predictor:
        yield predictor, int(predictor.url.rsplit(":", 1)[1])


def test_served_code_cannot_open_connections_off_the_machine_while_predict_works(echo_endpoint, docker_engine):
    predictor, port = echo_endpoint
    answer = predictor.predict([1, 2])
    assert answer["echo"] == [1, 2]
    for attempt in answer["egress"]:
        assert attempt["outcome"] != "connected", attempt
        assert attempt["outcome"].startswith(("TimeoutError", "OSError: [Errno 101]")), attempt  # dropped or unreachable
        assert attempt["seconds"] < 2.5, attempt
    network = docker_engine.networks.get(SERVING_NETWORK)
    assert network.attrs["Internal"] is True


def test_nothing_is_published_and_only_loopback_listens(echo_endpoint, docker_engine):
    predictor, port = echo_endpoint
    endpoint = endpoint_named(predictor.endpoint_name)
    (container,) = containers_of(docker_engine, endpoint.container.hosts)
    assert not container.attrs["HostConfig"]["PortBindings"]
    assert not container.attrs["NetworkSettings"]["Ports"]
    assert _listening_addresses(port) == {"127.0.0.1"}


def _half_request(port: int, body_part: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if body_part:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n[1,")
    else:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Ty")
    return sock


def _seconds_until_closed(sock: socket.socket, started: float, limit: float) -> tuple[float, bytes]:
    sock.settimeout(max(0.1, started + limit - time.monotonic()))
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return time.monotonic() - started, received


def test_stalled_half_requests_are_closed_within_the_timeouts_and_others_are_served(echo_endpoint):
    predictor, port = echo_endpoint
    started = time.monotonic()
    stalled = [_half_request(port, body_part=i % 2 == 1) for i in range(20)]
    time.sleep(1)
    assert predictor.predict([3])["echo"] == [3]  # served while they stall
    limit = max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 5
    closed = [_seconds_until_closed(sock, started, limit) for sock in stalled]
    for sock in stalled:
        sock.close()
    for seconds, _ in closed:
        assert seconds < limit, closed  # before: open for 200 s and more
        assert seconds > min(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) - 1, closed
    assert any(b"408 Request Timeout" in received for _, received in closed[0::2])  # half headers: a 408
    print(f"\nstalled requests closed after {min(s for s, _ in closed):.1f}-{max(s for s, _ in closed):.1f} s")


def test_two_thousand_idle_connections_do_not_kill_the_port(echo_endpoint):
    predictor, port = echo_endpoint
    idle = []
    try:
        for _ in range(2000):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        assert predictor.predict([4])["echo"] == [4]
        assert ping(port)[0] == 200  # a new connection is served
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)
    assert ping(port)[0] == 200
    assert predictor.predict([5])["echo"] == [5]


def _kill_container_of(endpoint_name: str, client) -> None:
    for container in containers_of(client, endpoint_named(endpoint_name).container.hosts):
        container.kill()


def test_predict_on_an_endpoint_whose_container_died_raises_endpoint_error_with_the_cause(
    echo_model, inference_image_ready, docker_engine
):
    archive, code = echo_model
    with emulator.endpoint(archive, entry_point="inference.py", source_dir=code) as predictor:
        assert predictor.predict([1])["echo"] == [1]
        _kill_container_of(predictor.endpoint_name, docker_engine)
        time.sleep(1)  # compose notices the container's exit
        started = time.monotonic()
        with pytest.raises(EndpointError) as raised:
            predictor.predict([1])
        seconds = time.monotonic() - started
    assert "exited" in str(raised.value) and "deploy the model again" in str(raised.value), raised.value
    assert seconds < 5, seconds


def test_the_watchdog_reports_an_endpoint_whose_container_hangs(echo_model, inference_image_ready, docker_engine):
    archive, code = echo_model
    with emulator.endpoint(archive, entry_point="inference.py", source_dir=code) as predictor:
        (container,) = containers_of(docker_engine, endpoint_named(predictor.endpoint_name).container.hosts)
        container.pause()  # running, but answers nothing
        started = time.monotonic()
        try:
            with pytest.raises(EndpointError) as raised:
                watch(predictor.endpoint_name)
        finally:
            container.unpause()
        seconds = time.monotonic() - started
    assert "stopped answering /ping" in str(raised.value) and "is paused" in str(raised.value), raised.value
    assert seconds < WATCH_MISSES * (PING_TIMEOUT_S + WATCH_INTERVAL_S) + 5, seconds


def test_serve_exits_non_zero_with_one_line_when_its_endpoint_stops_answering(
    echo_model, inference_image_ready, docker_engine
):
    archive, code = echo_model
    network = docker_engine.networks.get(SERVING_NETWORK) if docker_engine.networks.list(names=[SERVING_NETWORK]) \
        else None
    before = set((network.attrs.get("Containers") or {}) if network else {})
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/smrl-local"), "serve", "--model", str(archive), "--entry-point", "inference.py",
         "--source-dir", str(code), "--episodes", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line or "serving until Ctrl-C" in line:
                break
        network = docker_engine.networks.get(SERVING_NETWORK)
        ours = set(network.attrs.get("Containers") or {}) - before
        assert ours, "no endpoint container found"
        for container_id in ours:
            docker_engine.containers.get(container_id).kill()
        stopped = time.monotonic()
        returncode = process.wait(timeout=60)
        seconds = time.monotonic() - stopped
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    message = [line for line in stderr.splitlines() if line.startswith("smrl-local:")]
    assert returncode == 1, stderr
    assert len(message) == 1 and "is down. Its container exited" in message[0], stderr
    assert "Traceback" not in stderr
    assert seconds < 30, seconds
    print(f"\nserve exited {seconds:.1f} s after its container was killed: {message[0]}")


def test_an_http_client_sees_the_endpoint_answer_json(echo_endpoint):
    """Plain HTTP through the loopback proxy, as curl or any language's client would."""
    _, port = echo_endpoint
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/invocations", body=b"[7]", headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["echo"] == [7]
    connection.close()

