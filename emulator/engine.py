"""Is there a Docker engine, and a Docker Compose the SageMaker SDK accepts?

Local mode needs three things on the host: the ``docker`` CLI (the SDK shells out to
it), an engine that answers, and a compose command. This module checks them and says
what to do when one is missing. ``python -m emulator.engine ensure`` goes further and
provisions them on Debian/Ubuntu when run as root.

It deliberately does not import the SageMaker SDK: ``ensure`` must answer in well under
a second when everything is in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors

from emulator.errors import UserError

PING_TIMEOUT_S = 3
# For every call after the ping: on this 2-core machine under load (an image build beside a
# job), listing or removing containers took over 3 s, and a ReadTimeout is no answer.
API_TIMEOUT_S = 120
START_TIMEOUT_S = 60
DOCKERD_LOG = Path("/var/log/smrl-dockerd.log")
DEBIAN_PACKAGES = ("docker.io", "docker-compose", "debootstrap")
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

START_ENGINE_FIX = (
    "Start it: `make engine` (Debian/Ubuntu as root installs docker.io + docker-compose "
    "and starts dockerd) or start Docker Desktop."
)


class EngineError(UserError, RuntimeError):
    """The Docker engine or compose cannot run local-mode jobs; the message says why and
    how to fix it."""


def docker_host() -> str:
    """The engine address docker-py and the docker CLI will use."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def compose_command() -> list[str] | None:
    """The compose command the SageMaker SDK 2.x will pick, or None if it would find none.

    Mirrors ``sagemaker.local.image._SageMakerContainer._get_compose_cmd_prefix``: the
    ``docker compose`` plugin counts only if its version output contains "v2", otherwise
    a ``docker-compose`` executable on PATH is used.
    """
    if shutil.which("docker"):
        try:
            version = subprocess.run(
                ["docker", "compose", "version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            version = ""
        if "v2" in version:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _ping(timeout: int = PING_TIMEOUT_S) -> tuple[docker.DockerClient | None, str]:
    """A client whose engine answered, or None and the reason it did not."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        client.api.timeout = API_TIMEOUT_S
        return client, ""
    except docker.errors.DockerException as exc:
        return None, str(exc)


def _engine_problem(reason: str) -> str:
    if "Permission denied" in reason or "PermissionError" in reason:
        return (
            f"Permission denied talking to the Docker engine at {docker_host()}. "
            "Add your user to the docker group (`sudo usermod -aG docker $USER`, then log in "
            "again) or run as root."
        )
    return f"Docker engine not answering at {docker_host()} ({reason}). {START_ENGINE_FIX}"


def check_engine() -> list[str]:
    """Problems that stop local-mode jobs, each naming its cause and fix; empty when ready."""
    problems = []
    if not shutil.which("docker"):
        problems.append(
            "The `docker` command is not on PATH; the SageMaker SDK runs it for local mode. "
            "Install the Docker CLI: `make engine` (Debian/Ubuntu as root) or Docker Desktop."
        )
    client, reason = _ping()
    if client is None:
        problems.append(_engine_problem(reason))
    else:
        client.close()
    if compose_command() is None:
        problems.append(
            "No Docker Compose the SageMaker SDK accepts: it needs `docker compose version` to "
            "report v2, or a `docker-compose` command on PATH. Install one: `make engine` "
            "(Debian/Ubuntu as root installs docker-compose), `apt-get install docker-compose`, "
            "the compose v2 plugin, or Docker Desktop."
        )
    return problems


def require_engine() -> docker.DockerClient:
    """A docker-py client for an engine that is ready for local-mode jobs.

    Raises:
        EngineError: the docker CLI, the engine or compose is missing; the message says
            what to install or start.
    """
    problems = check_engine()
    if problems:
        raise EngineError("\n".join(problems))
    client, reason = _ping()
    if client is None:  # the engine went away between the two pings
        raise EngineError(_engine_problem(reason))
    return client


def has_nvidia_runtime(client: docker.DockerClient | None = None) -> bool:
    """Whether the engine can hand GPUs to containers (what ``instance_type="local_gpu"``
    asks compose for).

    True when the engine lists an NVIDIA runtime, or when the engine is on this machine and
    the NVIDIA container toolkit's hook is installed (dockerd then serves ``--gpus``
    without a named runtime).
    """
    owned = client is None
    client = client or docker.from_env(timeout=API_TIMEOUT_S)
    try:
        runtimes = client.info().get("Runtimes") or {}
    finally:
        if owned:
            client.close()
    if any("nvidia" in name for name in runtimes):
        return True
    local_engine = docker_host().startswith("unix://")
    return local_engine and shutil.which("nvidia-container-runtime-hook") is not None


# --- provisioning: `python -m emulator.engine ensure` -------------------------------


def _is_debian_root() -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    try:
        release = Path("/etc/os-release").read_text()
    except OSError:
        return False
    return "debian" in release.lower() or "ubuntu" in release.lower()


def _missing_packages() -> list[str]:
    missing = []
    for package in DEBIAN_PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        ).stdout
        if status != "install ok installed":
            missing.append(package)
    return missing


def _install(packages: list[str]) -> None:
    print(f"Installing {' '.join(packages)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )


def _dockerd_running() -> bool:
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _start_dockerd() -> None:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError("dockerd is not installed. Install it: `apt-get install docker.io`.")
    print(f"Starting dockerd (log: {DOCKERD_LOG}) ...", flush=True)
    with DOCKERD_LOG.open("ab") as log:
        # A new session keeps dockerd alive after this command (and its terminal) ends.
        subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_engine(timeout: float = START_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client, _ = _ping(timeout=2)
        if client is not None:
            client.close()
            return True
        time.sleep(0.5)
    return False


def ensure() -> int:
    """Make the engine and compose ready; return a process exit status.

    Fast and side-effect free when all is in place. On Debian/Ubuntu as root it installs
    what is missing of docker.io, docker-compose and debootstrap (the offline base image
    needs it) and starts dockerd in the background; elsewhere it prints what to do.
    """
    problems = check_engine()
    debian_root = _is_debian_root()
    if not problems and (not debian_root or shutil.which("debootstrap")):
        print("Docker engine and compose are ready.")
        return 0
    if not debian_root:
        print("\n".join(problems), file=sys.stderr)
        return 1
    try:
        missing = _missing_packages()
        if missing:
            _install(missing)
        client, _ = _ping()
        if client is not None:
            client.close()
        else:
            if not _dockerd_running():
                _start_dockerd()
            if not _wait_for_engine():
                print(
                    f"dockerd did not answer within {START_TIMEOUT_S} s. "
                    f"Read {DOCKERD_LOG} for the reason.",
                    file=sys.stderr,
                )
                return 1
    except (subprocess.CalledProcessError, EngineError) as exc:
        print(f"Provisioning the Docker engine failed: {exc}", file=sys.stderr)
        return 1
    problems = check_engine()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print("Docker engine and compose are ready.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["ensure"]:
        return ensure()
    if args == ["check"]:
        problems = check_engine()
        print("\n".join(problems) or "Docker engine and compose are ready.")
        return 1 if problems else 0
    print("usage: python -m emulator.engine {ensure|check}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
