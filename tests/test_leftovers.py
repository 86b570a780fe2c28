"""Killed and interrupted commands, against the real engine: what they leave, and who removes it.

Other work shares the engine, so every assertion looks only at what carries the owner
label of this test's own subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, make_tar_gz
from emulator import images, ownership
from emulator.serving import port_is_free

SMRL = [sys.executable, "-m", "emulator.cli"]
INFERENCE_SCRIPT = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return b"[1]", "application/json"
"""


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "SMRL_WORK_DIR": str(work)}


def _smrl(args: list[str], work: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(SMRL + args, capture_output=True, text=True, env=_env(work), cwd=work.parent,
                          timeout=300, **kwargs)


def _containers_of(client, pid: int) -> list:
    return client.containers.list(all=True, filters={"label": f"{ownership.LABEL_PREFIX}pid={pid}"})


def _networks_of(client, pid: int) -> list:
    """Networks `pid` created that no other process's container uses."""
    found = []
    for network in client.networks.list(filters={"label": f"{ownership.LABEL_PREFIX}pid={pid}"}):
        network.reload()
        if not network.attrs.get("Containers"):
            found.append(network.name)
    return found


def _owner_files(work: Path) -> list[Path]:
    return sorted(work.rglob(f"*{ownership.OWNER_FILE_SUFFIX}"))


def _assert_nothing_left(client, pid: int, work: Path) -> None:
    assert _containers_of(client, pid) == []
    assert _networks_of(client, pid) == []
    assert _owner_files(work) == []
    for root in ("containers", "code", "endpoints"):
        assert not any((work / root).iterdir()) if (work / root).is_dir() else True, sorted((work / root).iterdir())


def _wait_for_container(client, pid: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if _containers_of(client, pid):
            return
        time.sleep(0.5)
    raise AssertionError(f"no container of pid {pid} appeared (exit status {process.poll()})")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_serve(tmp_path: Path, port: int, **popen) -> subprocess.Popen:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "inference.py").write_text(INFERENCE_SCRIPT)
    model = make_tar_gz(tmp_path / "model.tar.gz", {"placeholder.txt": b"x"})
    process = subprocess.Popen(
        SMRL + ["serve", "--model", str(model), "--entry-point", "inference.py", "--source-dir", str(code),
                "--episodes", "0", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path / "work"), cwd=tmp_path,
        **popen)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "serving until Ctrl-C" in line:
            return process
    process.wait()
    raise AssertionError("serve did not come up:\n" + "".join(seen))


def test_a_killed_train_leaves_its_container_and_folders_and_the_next_command_sweeps_them(
    docker_engine, training_image_ready, tmp_path
):
    work = tmp_path / "work"
    train = subprocess.Popen(SMRL + ["train", "--steps", "2000", "--no-build", "--output", str(tmp_path / "out")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(work), cwd=tmp_path)
    try:
        _wait_for_container(docker_engine, train.pid, train)
    finally:
        train.kill()
        train.wait()
    assert _containers_of(docker_engine, train.pid), "SIGKILL left nothing: the test proves nothing"
    assert _owner_files(work)

    listed = _smrl(["ps"], work)
    assert re.search(rf"training +\S+ +smrl-local train pid {train.pid} +no ", listed.stdout), listed.stdout

    # The next command that starts containers sweeps first, and says what it removed.
    following = _smrl(["preflight", str(REPO / "presets" / "cartpole_job.py"), "--static-only"], work)
    assert re.search(rf"removed 1 container, 4 temp folders(, 1 network)? left by smrl-local train pid {train.pid} "
                     r"\(dead\)", following.stderr), following.stderr
    _assert_nothing_left(docker_engine, train.pid, work)


def test_a_killed_serve_frees_its_port_at_once_and_its_container_is_listed_by_ps_and_removed_by_clean(
    docker_engine, inference_image_ready, tmp_path
):
    """The port is the deploying process's loopback proxy: it dies with the process, so no
    orphan holds it (a published port used to stay taken); the container is swept."""
    work, port = tmp_path / "work", _free_port()
    serve = _start_serve(tmp_path, port)
    serve.kill()
    serve.wait()
    assert _containers_of(docker_engine, serve.pid), "SIGKILL left nothing: the test proves nothing"
    assert port_is_free(port), "the port died with the process"
    listed = _smrl(["ps"], work)
    assert re.search(rf"endpoint +\S+ +smrl-local serve pid {serve.pid} +no .* running +{port}$", listed.stdout,
                     re.MULTILINE), listed.stdout

    cleaned = _smrl(["clean"], work)
    assert re.search(rf"removed 1 container, 2 temp folders(, 1 network)? left by smrl-local serve pid {serve.pid} "
                     r"\(dead\)", cleaned.stdout), cleaned.stdout
    _assert_nothing_left(docker_engine, serve.pid, work)


def test_sigint_ends_a_serve_that_inherited_sigint_ignored_and_leaves_nothing(
    docker_engine, inference_image_ready, tmp_path
):
    port = _free_port()
    # As a shell starts a background job: SIGINT ignored.
    serve = _start_serve(tmp_path, port, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    serve.send_signal(signal.SIGINT)
    output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 130, output[-2000:]
    assert "smrl-local: stopped by SIGINT; its containers are removed." in output
    _assert_nothing_left(docker_engine, serve.pid, tmp_path / "work")
    assert port_is_free(port)


def test_an_interrupted_training_job_says_what_it_kept_and_leaves_no_model(docker_engine, training_image_ready,
                                                                            tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    train = subprocess.Popen(SMRL + ["train", "--steps", "20000", "--no-build", "--output", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(work), cwd=tmp_path)
    assert train.stdout is not None
    for line in train.stdout:
        if line.strip().startswith("episode"):  # training is under way
            break
    train.send_signal(signal.SIGTERM)
    rest, _ = train.communicate(timeout=120)
    assert train.returncode == 143, rest
    assert re.search(r"smrl-local: stopped by SIGTERM; the training job's containers and temp folders are removed\. "
                     r"Kept in \S+: train\.log \(the job's log\), output\.tar\.gz .*No model\.tar\.gz", rest), rest
    (job_dir,) = out.iterdir()
    assert not (job_dir / "model.tar.gz").exists()
    assert not (out / "latest").exists()
    _assert_nothing_left(docker_engine, train.pid, work)


def test_a_build_removes_its_build_stage_image(docker_engine):
    base = images.offline_base_image()
    if not images._image_exists(docker_engine, base):
        pytest.skip(f"no {base} to build on")
    tag = f"smrl-test/stages:{uuid.uuid4().hex[:8]}"
    dockerfile = (f"FROM {base} AS build\nRUN echo {uuid.uuid4().hex} > /stage.txt\n"
                  f"FROM {base}\nCOPY --from=build /stage.txt /stage.txt\n")
    context = make_tar_gz(Path(os.environ.get("TMPDIR", "/tmp")) / f"ctx-{uuid.uuid4().hex}.tar.gz",
                          {"Dockerfile": dockerfile.encode()})
    try:
        with open(context, "rb") as archive:
            output = images._follow_build(docker_engine.api.build(fileobj=archive, custom_context=True, encoding="gzip",
                                                                  tag=tag, rm=True, decode=True), lambda line: None)
        (stage,) = images.stage_images(output)
        assert docker_engine.images.get(stage).tags == []
        images._remove_leftovers(docker_engine, tag, [stage], lambda line: None)
        with pytest.raises(images.docker.errors.ImageNotFound):
            docker_engine.images.get(stage)
    finally:
        context.unlink()
        docker_engine.images.remove(tag)


def test_a_killed_run_leaves_its_s3_server_which_clean_stops(docker_engine, tmp_path):
    work = tmp_path / "work"
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell('import time\nprint("SLEEPING", flush=True)\ntime.sleep(120)')]
    nbformat.write(notebook, str(tmp_path / "sleep.ipynb"))
    run = subprocess.Popen(SMRL + ["run", str(tmp_path / "sleep.ipynb"), "--output", str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(work), cwd=tmp_path)
    assert run.stdout is not None
    for line in run.stdout:
        if "SLEEPING" in line:
            break
    servers = {server.name: server for server in ownership.read_pid_files(work / ownership.SERVERS_DIR)}
    run.kill()
    run.wait()
    assert servers["s3-server"].running(), "SIGKILL left no server: the test proves nothing"

    cleaned = _smrl(["clean"], work)

    # The kernel (in a session of its own too) usually notices its parent is gone and exits first.
    assert re.search(rf"removed (1 server|2 servers) left by smrl-local run pid {run.pid} \(dead\)",
                     cleaned.stdout), cleaned.stdout
    deadline = time.monotonic() + 10
    while any(server.running() for server in servers.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(server.running() for server in servers.values())
    assert list((work / ownership.SERVERS_DIR).iterdir()) == []
