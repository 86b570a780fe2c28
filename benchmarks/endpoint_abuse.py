"""An endpoint under abuse: 10,000 idle connections plus 100 stalled half-requests.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.endpoint_abuse              # the emulator's endpoint
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.endpoint_abuse --target docker-publish
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.endpoint_abuse --target bridge-ip

Targets (same image, same inference script, 2 workers):

* `emulator` (default): `emulator.endpoint()`, i.e. the container on the internal serving
  network behind the loopback proxy in this process; the normal client is the SDK's
  `Predictor.predict()`;
* `docker-publish`: `docker run -p 127.0.0.1:PORT:8080` on a routable bridge, through the
  engine's userland proxy (what endpoints used before); plain keep-alive HTTP client;
* `bridge-ip`: that container's own address on the bridge, no proxy at all.

An attacker process (its own RLIMIT_NOFILE raised) opens the idle connections, then keeps
100 half-requests open (half of them half-sent headers, half a body that stops), opening
a new one whenever the server closes one. Meanwhile a normal client sends one request
after another for `--seconds`, and another thread GETs /ping on a new connection every
0.5 s. Reported: the client's p50/p99 and errors, /ping failures, the server's memory
(RSS of its processes) before and under attack, the proxy's (this process's RSS) and its
counters, and what the attacker managed to open. About 1-2 minutes per target.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ECHO_SCRIPT = '''
import json


def model_fn(model_dir):
    return "no model"


def transform_fn(model, data, content_type, accept):
    return json.dumps({"predictions": [json.loads(data)]})
'''
OBSERVATION = [0.01, 0.02, 0.03, 0.04]
HALF_HEADERS = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Ty"
HALF_BODY = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[1,"


def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the attacker (its own process) --------------------------------------------------------

def attack(host: str, port: int, idle: int, stalled: int, seconds: float) -> dict[str, Any]:
    """Opens `idle` silent connections and keeps `stalled` half-requests open for `seconds`."""
    _raise_file_limit()
    idle_socks, errors = [], {}
    started = time.monotonic()
    for _ in range(idle):
        try:
            idle_socks.append(socket.create_connection((host, port), timeout=5))
        except OSError as error:
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
    opened_in = time.monotonic() - started
    selector = selectors.DefaultSelector()

    def open_stalled(n: int) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(HALF_BODY if n % 2 else HALF_HEADERS)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, n)
        except OSError as error:
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1

    for n in range(stalled):
        open_stalled(n)
    print(json.dumps({"ready": True}), flush=True)
    closed_by_server, lifetimes, reopened = 0, [], 0
    opened_at: dict[int, float] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                data = sock.recv(4096)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]
                closed_by_server += 1
                lifetimes.append(time.monotonic() - opened_at.pop(key.data, started + opened_in))
                opened_at[key.data] = time.monotonic()
                open_stalled(key.data)
                reopened += 1
    return {"idle_opened": len(idle_socks), "idle_still_open": _close_counting_open(idle_socks), "open_errors": errors,
            "seconds_to_open": round(opened_in, 1), "stalled_closed_by_server": closed_by_server,
            "stalled_lifetime_s": [round(min(lifetimes), 1), round(max(lifetimes), 1)] if lifetimes else None}


def _close_counting_open(socks: list[socket.socket]) -> int:
    """Closes `socks`; returns how many the other side had not closed."""
    alive = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            alive += sock.recv(1) != b""
        except BlockingIOError:  # nothing to read: still open
            alive += 1
        except OSError:
            pass
        sock.close()
    return alive


# -- the targets ---------------------------------------------------------------------------

def _echo_model(folder: Path) -> tuple[Path, Path]:
    """(model.tar.gz, code folder): the archive needs no model, the script answers alone."""
    code = folder / "code"
    code.mkdir()
    (code / "inference.py").write_text(ECHO_SCRIPT)
    note = folder / "README.txt"
    note.write_text("echo")
    with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
        tar.add(note, arcname="README.txt")
    return folder / "model.tar.gz", code


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def _server_pids(container: str) -> list[int]:
    """Host pids of the container's processes (the uvicorn parent and its workers)."""
    top = _docker("top", container, "-eo", "pid")
    return [int(line) for line in top.splitlines()[1:] if line.strip().isdigit()]


class _PlainClient:
    """One keep-alive HTTP connection, as a careful client would keep."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.connection: http.client.HTTPConnection | None = None

    def predict(self, observation: list[float]) -> Any:
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.connection.request("POST", "/invocations", body=json.dumps(observation),
                                        headers={"Content-Type": "application/json"})
                response = self.connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status} {body[:100]!r}")
                return json.loads(body)
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        return None


def _measure(client: Any, host: str, port: int, seconds: float) -> dict[str, Any]:
    latencies, errors, pings, ping_failures = [], {}, 0, []
    stop = threading.Event()

    def pinger() -> None:
        nonlocal pings
        while not stop.wait(0.5):
            try:
                connection = http.client.HTTPConnection(host, port, timeout=2)
                connection.request("GET", "/ping")
                status = connection.getresponse().status
                connection.close()
                if status != 200:
                    ping_failures.append(str(status))
            except (OSError, http.client.HTTPException) as error:
                ping_failures.append(type(error).__name__)
            pings += 1

    thread = threading.Thread(target=pinger, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            client.predict(OBSERVATION)
            latencies.append((time.perf_counter() - started) * 1000)
        except Exception as error:  # counted, the run goes on
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
            time.sleep(0.05)
    stop.set()
    thread.join()
    return {"requests": len(latencies), "p50_ms": round(_percentile(latencies, 0.5), 3),
            "p99_ms": round(_percentile(latencies, 0.99), 3), "errors": errors,
            "pings": pings, "ping_failures": len(ping_failures), "ping_failure_kinds": sorted(set(ping_failures))}


def run(target: str, idle: int, stalled: int, seconds: float) -> dict[str, Any]:
    import docker

    import emulator
    from emulator.containers import containers_of
    from emulator.images import build_image, inference_image
    from emulator.serving import endpoint_named

    build_image("inference", "cpu")  # seconds when up to date; the tag may hold another checkout's build
    result: dict[str, Any] = {"target": target, "idle": idle, "stalled": stalled, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="smrl-abuse-") as tmp:
        archive, code = _echo_model(Path(tmp))
        if target == "emulator":
            with emulator.endpoint(archive, entry_point="inference.py", source_dir=code) as predictor:
                port = int(predictor.url.rsplit(":", 1)[1])
                endpoint = endpoint_named(predictor.endpoint_name)
                client = docker.from_env()
                (container,) = containers_of(client, endpoint.container.hosts)
                result.update(_under_attack(predictor, "127.0.0.1", port, container.name, idle, stalled, seconds,
                                            proxy=endpoint.proxy))
            return result
        model = Path(tmp) / "model"
        model.mkdir()
        (model / "code").mkdir()
        (model / "code" / "inference.py").write_text(ECHO_SCRIPT)
        name = f"smrl-abuse-{os.getpid()}"
        _docker("network", "create", name)
        try:
            _docker("run", "-d", "--name", name, "--network", name, "-p", "127.0.0.1::8080",
                    "-v", f"{model}:/opt/ml/model:ro", "-e", "SAGEMAKER_PROGRAM=inference.py",
                    "-e", "SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code", inference_image("cpu"), "serve")
            if target == "docker-publish":
                host, port = "127.0.0.1", int(_docker("port", name, "8080/tcp").splitlines()[0].rsplit(":", 1)[1])
            else:
                host, port = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                     name), 8080
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if _PlainClient(host, port).predict(OBSERVATION):
                        break
                except (OSError, http.client.HTTPException, RuntimeError):
                    time.sleep(0.2)
            result.update(_under_attack(_PlainClient(host, port), host, port, name, idle, stalled, seconds))
            try:
                _PlainClient(host, port).predict(OBSERVATION)
                result["port_alive_after"] = True
            except (OSError, http.client.HTTPException, RuntimeError) as error:
                result["port_alive_after"] = f"no: {type(error).__name__}: {error}"
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            subprocess.run(["docker", "network", "rm", name], capture_output=True)
    return result


def _under_attack(client: Any, host: str, port: int, container: str, idle: int, stalled: int, seconds: float,
                  proxy: Any = None) -> dict[str, Any]:
    pids = _server_pids(container)
    result: dict[str, Any] = {}
    result["quiet"] = _measure(client, host, port, 5.0)
    result["server_rss_mib_quiet"] = round(sum(_rss_kib(p) for p in pids) / 1024, 1)
    result["this_process_rss_mib_quiet"] = round(_rss_kib(os.getpid()) / 1024, 1)
    attacker = subprocess.Popen([sys.executable, "-m", "benchmarks.endpoint_abuse", "--attack", host, str(port),
                                 str(idle), str(stalled), str(seconds + 10)],
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert attacker.stdout is not None
    ready = attacker.stdout.readline()
    if not ready:
        raise RuntimeError("the attacker process failed")
    result["under_attack"] = _measure(client, host, port, seconds)
    result["server_rss_mib_under_attack"] = round(sum(_rss_kib(p) for p in pids) / 1024, 1)
    result["this_process_rss_mib_under_attack"] = round(_rss_kib(os.getpid()) / 1024, 1)
    if proxy is not None:
        result["proxy"] = proxy.stats()
    result["attacker"] = json.loads(attacker.stdout.read().strip().splitlines()[-1])
    attacker.wait()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["emulator", "docker-publish", "bridge-ip"], default="emulator")
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement under attack (default: 30)")
    parser.add_argument("--attack", nargs=5, metavar=("HOST", "PORT", "IDLE", "STALLED", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attack:
        host, port, idle, stalled, seconds = args.attack
        print(json.dumps(attack(host, int(port), int(idle), int(stalled), float(seconds))), flush=True)
        return 0
    print(json.dumps(run(args.target, args.idle, args.stalled, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
