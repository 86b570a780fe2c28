"""Host side of the benchmarks: images, warm containers, and the JSON the bench scripts print.

Per-step figures run in a *warm* container (started once per image and session with
`sleep infinity`; each measurement is a `docker exec` of a script from
benchmarks/inside/), so container start-up is not in them. End-to-end figures
(`docker run`, `fit()`, deploy) start their own containers on purpose.

Everything here uses the docker CLI, as a user reproducing a figure would.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
INSIDE_DIR = Path(__file__).resolve().parent / "inside"
PRESETS_DIR = REPO_ROOT / "presets"
# Where the warm containers see the bench scripts, the presets and the session's work folder.
BENCH_MOUNT, PRESETS_MOUNT, WORK_MOUNT = "/opt/bench", "/opt/presets", "/bench-work"
MARKER = "SMRL-BENCH-JSON "  # the same as inside/common.py
LABEL = "org.smrl.benchmark=1"


class BenchError(RuntimeError):
    """A bench command failed; the message has the command and the tail of its output."""


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise BenchError(f"`docker {' '.join(args[:6])} ...` exited {done.returncode}:\n{tail}")
    return done


def parse_result(output: str) -> dict[str, Any]:
    """The last MARKER line of a bench script's output, as a dict."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise BenchError("the bench script printed no result line; its output ends with:\n"
                     + "\n".join(output.strip().splitlines()[-25:]))


def image_info(image: str) -> dict[str, str]:
    """extra_info for end-to-end figures: MXNet version from the image's label; threads are the image's own."""
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image).stdout) or {}
    return {"mxnet_version": labels.get("org.smrl.mxnet-version", "?"), "threads": "image default"}


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


class WarmContainer:
    """One long-lived container of `image` that runs bench scripts with `docker exec`.

    No network (nothing measured needs one); the scripts and presets mounted read-only,
    a host work folder read-write (exported models come back through it).
    """

    def __init__(self, image: str, work_dir: Path, gpu: bool = False, omp_threads: str | None = None):
        self.image = image
        self.work_dir = work_dir
        self.gpu = gpu
        self.omp_threads = omp_threads
        self.name = f"smrl-bench-{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> WarmContainer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        docker("run", "-d", "--rm", "--name", self.name, "--label", LABEL, "--network", "none",
               *(["--gpus", "all"] if self.gpu else []),
               "-v", f"{INSIDE_DIR}:{BENCH_MOUNT}:ro",
               "-v", f"{PRESETS_DIR}:{PRESETS_MOUNT}:ro",
               "-v", f"{self.work_dir}:{WORK_MOUNT}",
               "-w", BENCH_MOUNT, "--entrypoint", "sleep", self.image, "infinity")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        docker("rm", "-f", self.name, check=False)

    def run_script(self, script: str, *args: str, timeout: float = 600,
                   environment: dict[str, str] | None = None) -> dict[str, Any]:
        """Runs benchmarks/inside/<script> in the container; returns its result dict."""
        env = ["-e", f"OMP_NUM_THREADS={self.omp_threads}"] if self.omp_threads else []
        for name, value in (environment or {}).items():
            env += ["-e", f"{name}={value}"]
        done = docker("exec", *env, self.name, "python3", f"{BENCH_MOUNT}/{script}", *args, timeout=timeout)
        return parse_result(done.stdout)

    def host_path(self, container_path: str) -> Path:
        """The host path of a file the container wrote under WORK_MOUNT."""
        return self.work_dir / Path(container_path).relative_to(WORK_MOUNT)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (served ports are published on loopback only)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_ping(port: int, timeout: float = 120.0, interval: float = 0.02) -> float:
    """Polls GET http://127.0.0.1:port/ping until it answers 200; returns when it did (monotonic)."""
    url = f"http://127.0.0.1:{port}/ping"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(interval)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")


def extract_model(archive: Path, target: Path) -> Path:
    """Unpacks a model.tar.gz into its own folder (what SageMaker mounts at /opt/ml/model)."""
    import tarfile

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def omp_threads_option() -> str | None:
    """SMRL_BENCH_OMP_THREADS, passed to the bench scripts as OMP_NUM_THREADS (unset: MXNet's default)."""
    return os.environ.get("SMRL_BENCH_OMP_THREADS") or None
