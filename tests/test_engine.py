"""The engine check names what is missing and how to get it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emulator import engine
from emulator.engine import (
    EngineError,
    check_engine,
    compose_command,
    has_nvidia_runtime,
    require_engine,
)


class _Closable:
    """Stands in for a docker client whose engine answered."""

    def close(self):
        pass


class FakeClient(_Closable):
    def __init__(self, runtimes):
        self.runtimes = runtimes

    def info(self):
        return {"Runtimes": self.runtimes}


def fake_command(bin_dir, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


@pytest.fixture
def bare_path(tmp_path, monkeypatch):
    """A PATH holding only the fake commands a test puts there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_compose_v2_plugin_is_used_when_it_reports_v2(bare_path):
    fake_command(bare_path, "docker", 'echo "Docker Compose version v2.27.0"')

    assert compose_command() == ["docker", "compose"]


def test_docker_compose_on_path_is_the_fallback(bare_path):
    fake_command(bare_path, "docker", "exit 1")
    fake_command(bare_path, "docker-compose", "exit 0")

    assert compose_command() == ["docker-compose"]


def test_missing_compose_is_reported_with_how_to_install_it(bare_path, monkeypatch):
    fake_command(bare_path, "docker", "exit 1")
    monkeypatch.setattr(engine, "_ping", lambda timeout=3: (_Closable(), ""))

    problems = check_engine()

    assert len(problems) == 1
    assert "No Docker Compose the SageMaker SDK accepts" in problems[0]
    assert "apt-get install docker-compose" in problems[0]


def test_unreachable_engine_is_reported_with_its_address_and_fix(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")

    with pytest.raises(EngineError) as error:
        require_engine()

    message = str(error.value)
    assert "Docker engine not answering at unix:///nonexistent/docker.sock" in message
    assert "`make engine`" in message and "Docker Desktop" in message


def test_missing_docker_cli_is_reported(bare_path, monkeypatch):
    monkeypatch.setattr(engine, "_ping", lambda timeout=3: (_Closable(), ""))
    fake_command(bare_path, "docker-compose", "exit 0")

    assert check_engine() == [
        "The `docker` command is not on PATH; the SageMaker SDK runs it for local mode. "
        "Install the Docker CLI: `make engine` (Debian/Ubuntu as root) or Docker Desktop."
    ]


def test_nvidia_runtime_is_detected_from_engine_info(bare_path):
    assert has_nvidia_runtime(
        FakeClient({"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}})
    )


def test_no_nvidia_runtime_without_runtime_or_toolkit_hook(bare_path):
    assert not has_nvidia_runtime(FakeClient({"runc": {"path": "runc"}}))


def test_toolkit_hook_on_a_local_engine_counts_as_gpu_support(bare_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    fake_command(bare_path, "nvidia-container-runtime-hook", "exit 0")

    assert has_nvidia_runtime(FakeClient({"runc": {}}))


def test_ensure_without_root_on_debian_prints_the_problems(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(engine, "_is_debian_root", lambda: False)

    assert engine.main(["ensure"]) == 1
    assert "Docker engine not answering" in capsys.readouterr().err


def test_ensure_says_ready_and_changes_nothing_when_the_engine_is_ready(docker_engine):
    result = subprocess.run(
        [sys.executable, "-m", "emulator.engine", "ensure"], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Docker engine and compose are ready.\n"
