"""The abuse battery: bad inputs over the CLI (real `smrl-local` processes), model archives
and a live endpoint's HTTP, each answered with one clear line (or a clean HTTP error) and
nothing left behind. The last test counts what the battery tried, the tracebacks printed
(goal 0) and what was left (goal 0).

Every case runs in a folder of its own with its own work folder; the expected text is the
part of the message that names the cause or the fix.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import nbformat
import pytest

import emulator
from conftest import REPO, gzip_bomb, job_container_count, make_tar_gz
from emulator.serving import endpoint_named
from emulator.training import train

SMRL = str(REPO / ".venv" / "bin" / "smrl-local")
TALLY: dict[str, int] = {"tried": 0, "tracebacks": 0}


def _files(folder: Path) -> dict[str, Path]:
    """The bad files the cases pass, made once per case folder."""
    (folder / "a-file.txt").write_text("not a folder, not a model")
    make_tar_gz(folder / "escape.tar.gz", {"../../evil.py": b"print('escaped')"})
    make_tar_gz(folder / "absolute.tar.gz", {"/etc/cron.d/evil": b"x"})
    make_tar_gz(folder / "empty.tar.gz", {})
    gzip_bomb(folder / "bomb.tar.gz", 5 * 1024**3)
    broken = folder / "broken.ipynb"
    broken.write_text('{"cells": [ this is not json')
    raising = nbformat.v4.new_notebook()
    raising.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('no reward file')")]
    nbformat.write(raising, str(folder / "raises.ipynb"))
    dying = nbformat.v4.new_notebook()
    dying.cells = [nbformat.v4.new_code_cell("import os\nos._exit(3)")]
    nbformat.write(dying, str(folder / "dies.ipynb"))
    (folder / "ec2.py").write_text("import boto3\nboto3.client('ec2').describe_instances()\n")
    (folder / "builds-nothing.py").write_text("x = 1\n")
    (folder / "raises-job.py").write_text("raise RuntimeError('no config')\n")
    (folder / "no-estimator.yaml").write_text("fit: {}\n")
    (folder / "job.txt").write_text("")
    (folder / "symlink.tar.gz").write_bytes(_symlink_archive(folder))
    return {p.name: p for p in folder.iterdir()}


def _symlink_archive(folder: Path) -> bytes:
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        link = tarfile.TarInfo("model.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    return packed.getvalue()


# (arguments, expected exit status, text the one line must hold). {name} is a file of _files.
CLI_CASES = [
    (["serve", "--port", "99999"], 2, "99999 is not a port: pass 1-65535, or 0"),
    (["serve", "--port", "-1"], 2, "-1 is not a port"),
    (["serve", "--port", "http"], 2, "'http' is not a whole number"),
    (["serve", "--episodes", "-3"], 2, "-3 is negative"),
    (["serve", "--model", "{nothing.tar.gz}"], 1, "nothing.tar.gz"),
    (["serve", "--model", "{a-file.txt}"], 1, "is not gzip-compressed"),
    (["serve", "--model", "{bomb.tar.gz}"], 1, "unpack"),
    (["serve", "--model", "{escape.tar.gz}"], 1, "../../evil.py"),
    (["serve", "--model", "{absolute.tar.gz}"], 1, "/etc/cron.d/evil"),
    (["serve", "--model", "{symlink.tar.gz}"], 1, "link"),
    (["serve", "--model", "{empty.tar.gz}"], 1, "empty"),
    (["serve", "--entry-point", "missing_inference.py", "--model", "{escape.tar.gz}"], 1, "missing_inference.py"),
    (["serve"], 1, "No trained model"),
    (["train", "--steps", "-5"], 2, "-5 is not a training budget"),
    (["train", "--steps", "0"], 2, "0 is not a training budget"),
    (["train", "--output", "{a-file.txt}"], 1, "is a file, not a folder"),
    (["train", "--preset", "../../etc/passwd"], 1, "is not a preset name"),
    (["train", "--preset", "/nonexistent/preset-x.py"], 1, "no such file"),
    (["train", "--preset", "preset-nope"], 1, "Preset 'preset-nope' not found"),
    (["train", "--source-dir", "/nonexistent-folder", "--preset", "preset-x"], 1, "is not a folder"),
    (["train", "-p", "no-equals-sign"], 2, "NAME=VALUE"),
    (["train", "--env", "AWS_SECRET_ACCESS_KEY=x"], 1, "AWS_SECRET_ACCESS_KEY refused"),
    (["train", "--instance-type", "ml.m5.large"], 2, "invalid choice: 'ml.m5.large'"),
    (["train", "--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    (["trian"], 2, "invalid choice: 'trian'"),
    (["build", "--image", "both"], 2, "invalid choice: 'both'"),
    (["preflight", "{nothing.py}"], 1, "No job description"),
    (["preflight", "{job.txt}"], 1, "a job description is a .py, .yaml/.yml or .toml file"),
    (["preflight", "{raises-job.py}"], 1, "raised RuntimeError: no config"),
    (["preflight", "{builds-nothing.py}"], 1, "built no RLEstimator"),
    (["preflight", "{no-estimator.yaml}"], 1, "has no 'estimator' table"),
    (["preflight", "{raises.ipynb}", "--static-only"], 1, "--static-only: a notebook's jobs are known only by running"),
    (["preflight", "{raises.ipynb}", "--steps", "0"], 2, "0 is not a training budget"),
    (["run", "{nothing.ipynb}"], 1, "No script or notebook"),
    (["run", "{a-file.txt}"], 1, "runs a .py script or an .ipynb notebook"),
    (["run", "{broken.ipynb}"], 1, "is not a notebook Jupyter can read"),
    (["run", "{raises.ipynb}"], 1, "Cell 2 (notebook cell 1) of raises.ipynb failed at line 1: ValueError: no reward"),
    (["run", "{dies.ipynb}"], 1, "The kernel died (exit status 3) while running cell 1"),
    (["run", "{ec2.py}"], 1, "ec2.py failed at line 2: AWSCallRefused: "),
    (["run", "{raises.ipynb}", "--param", "1x=2"], 1, "expected NAME=VALUE"),
    (["run", "{raises.ipynb}", "--output", "{a-file.txt}"], 1, "is a file, not a folder"),
    (["s3", "ls", "not-an-s3-uri"], 1, "s3://"),
]


def _argv(arguments: list[str], files: dict[str, Path], folder: Path) -> list[str]:
    def fill(argument: str) -> str:
        if argument.startswith("{") and argument.endswith("}"):
            name = argument[1:-1]
            return str(files.get(name, folder / name))
        return argument

    return [fill(a) for a in arguments]


@pytest.mark.integration
@pytest.mark.parametrize(("arguments", "status", "expected"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_a_bad_cli_input_gets_one_line_and_leaves_nothing(tmp_path, arguments, status, expected):
    files = _files(tmp_path)
    env = {**os.environ, "SMRL_WORK_DIR": str(tmp_path / "work")}
    done = subprocess.run([SMRL, *_argv(arguments, files, tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)
    TALLY["tried"] += 1
    TALLY["tracebacks"] += "Traceback" in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("smrl-local")]
    assert done.returncode == status, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert len(lines) == 1 and expected in lines[0], done.stderr[-3000:]
    assert not list(tmp_path.glob("work/containers/*")), "no temp folder left"
    assert not list(tmp_path.glob("**/*.tar.gz.d")), "no archive unpacked"


def _http(port: int, request: bytes, timeout: float = 30) -> tuple[int | None, float]:
    """Sends `request` raw; returns the status the server answered (None: it closed without
    one) and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return None, time.monotonic() - started
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else None
    return status, time.monotonic() - started


HTTP_CASES = [
    (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{not json", 4),
    (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-unknown\r\nContent-Length: 2\r\n\r\nhi", 4),
    (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n", 4),
    (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n[[1.0, 2.0]]\r\n", 4),
    (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n\"abc\"", 4),
    (b"GET /invocations HTTP/1.1\r\nHost: x\r\n\r\n", 4),
    (b"GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n", 4),
    (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 4),
    (b"BREW /invocations HTCPCP/1.0\r\n\r\n", 4),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 4),  # a TLS hello to a plain-HTTP port
]


class TestHTTP:
    """Bad requests to one live endpoint serving a freshly trained CartPole model (removed
    when the class is done, before the counts)."""

    @pytest.fixture(scope="class")
    @classmethod
    def live_endpoint(cls, tmp_path_factory, docker_engine, inference_image_ready, training_image_ready):
        result = train(steps=300, output_dir=tmp_path_factory.mktemp("battery-endpoint"), build=False,
                       log=lambda line: None)
        with emulator.endpoint(result.model_data) as predictor:
            yield predictor

    @pytest.mark.parametrize(("request_bytes", "status_class"), HTTP_CASES,
                             ids=[str(i) for i in range(len(HTTP_CASES))])
    def test_a_bad_http_request_gets_a_client_error_and_the_endpoint_keeps_answering(self, live_endpoint,
                                                                                     request_bytes, status_class):
        status, _ = _http(endpoint_named(live_endpoint.endpoint_name).port, request_bytes)
        TALLY["tried"] += 1
        assert status is None or status // 100 == status_class, status
        answer = live_endpoint.predict([0.0, 0.1, 0.0, -0.1])
        assert len(answer["predictions"][0]) == 2, "the endpoint still answers"


@pytest.mark.integration
def test_the_battery_tried_40_inputs_printed_no_traceback_and_left_nothing(docker_engine):
    """Runs last (file order): the counts for the closing note."""
    leftover_processes = subprocess.run(["pgrep", "-f", "rclone serve s3|ipykernel_launcher"], capture_output=True,
                                        text=True).stdout.split()
    containers = job_container_count(docker_engine)
    print(f"\nabuse battery: {TALLY['tried']} bad inputs, {TALLY['tracebacks']} tracebacks, "
          f"{containers} job containers and {len(leftover_processes)} processes left")
    assert TALLY["tried"] >= 40
    assert TALLY["tracebacks"] == 0
    assert leftover_processes == []
    assert containers == 0
