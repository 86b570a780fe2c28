"""Owners, sweeps and signals without Docker: who is alive, what a sweep may remove, what it says."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from conftest import REPO, make_tar_gz
from emulator import ownership
from emulator.images import stage_images
from emulator.jobs import UNFINISHED_MODEL_ARCHIVE, set_aside_unfinished_model
from emulator.ownership import ALIVE, DEAD, ELSEWHERE, Leftover, Owner
from emulator.sweep import Running, _sweep_folders, _sweep_servers, format_running


def _finished_process_owner() -> Owner:
    """The owner record of a process that ran and has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    owner = Owner(child.pid, ownership.start_ticks(child.pid), ownership.boot_id(), socket.gethostname(), "child")
    child.communicate(b"")
    return owner


# -- is the owner alive ----------------------------------------------------------------------

def test_this_process_is_alive():
    assert Owner.current().state() == ALIVE


def test_a_process_that_exited_is_dead():
    assert _finished_process_owner().state() == DEAD


def test_a_reused_pid_is_not_mistaken_for_the_owner():
    me = Owner.current()
    assert me.start is not None
    earlier_process_with_my_pid = dataclasses.replace(me, start=me.start - 1)
    assert earlier_process_with_my_pid.state() == DEAD


def test_an_owner_from_before_a_reboot_is_dead():
    assert dataclasses.replace(Owner.current(), boot="another-boot").state() == DEAD


def test_an_owner_on_another_host_cannot_be_judged_from_here():
    assert dataclasses.replace(Owner.current(), host="another-host").state() == ELSEWHERE


def test_the_start_time_is_read_even_when_the_command_name_holds_spaces_and_parentheses(tmp_path, monkeypatch):
    (tmp_path / "4242").mkdir()
    fields = ["S"] + ["0"] * 18 + ["987654"] + ["0"] * 30  # field 3 on; field 22 is the start time
    (tmp_path / "4242" / "stat").write_text(f"4242 (a (weird) name) {' '.join(fields)}\n")
    monkeypatch.setattr(ownership, "_PROC", tmp_path)
    assert ownership.start_ticks(4242) == 987654
    assert ownership.start_ticks(4243) is None


def test_the_owner_travels_in_docker_labels_and_nothing_else_reads_as_one():
    me = Owner.current()
    assert Owner.from_labels(me.labels()) == me
    assert Owner.from_labels({"com.docker.compose.project": "x"}) is None
    assert Owner.from_labels(None) is None


# -- what a sweep removes --------------------------------------------------------------------

def test_a_sweep_removes_only_what_a_dead_owner_left():
    dead, alive = _finished_process_owner(), Owner.current()
    things = [Leftover("container", "a", dead), Leftover("container", "b", alive), Leftover("container", "c", None),
              Leftover("container", "d", dataclasses.replace(dead, host="another-host"))]
    assert [thing.name for thing in ownership.abandoned(things)] == ["a"]


def test_the_sweep_says_what_it_removed_in_one_line_per_dead_owner():
    dead = dataclasses.replace(_finished_process_owner(), pid=1234, program="smrl-local train")
    removed = [Leftover("container", "x", dead), Leftover("temp folder", "t1", dead), Leftover("temp folder", "t2", dead)]
    assert ownership.summary(removed) == ["removed 1 container, 2 temp folders left by smrl-local train pid 1234 (dead)"]


def test_folders_of_a_dead_owner_go_and_those_of_a_live_one_stay(tmp_path):
    work = tmp_path / "work"
    dead_folder, live_folder, unclaimed = work / "containers" / "tmpdead", work / "code" / "job", work / "containers" / "x"
    for folder in (dead_folder, live_folder, unclaimed):
        folder.mkdir(parents=True)
        (folder / "model.tar.gz").write_bytes(b"...")
    ownership.claim_folder(dead_folder, _finished_process_owner())
    ownership.claim_folder(live_folder)

    removed = _sweep_folders(None, [work / "containers", work / "code"])

    assert [thing.name for thing in removed] == [str(dead_folder)]
    assert not dead_folder.exists() and not ownership.owner_file(dead_folder).exists()
    assert live_folder.exists() and unclaimed.exists()


def test_a_server_whose_owner_died_is_stopped_and_its_pid_file_removed(tmp_path):
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        pid_file = ownership.write_pid_file(tmp_path / "servers", "s3-server", server.pid, 9000)
        # The owner recorded is this test's process; make it a dead one.
        text = pid_file.read_text().replace(f'"pid": {os.getpid()}', '"pid": 1, "_": 0').replace(
            f'"start": {ownership.start_ticks(os.getpid())}', '"start": 0')
        pid_file.write_text(text)
        removed = _sweep_servers(tmp_path)
        assert [(thing.kind, thing.name) for thing in removed] == [("server", "s3-server")]
        assert server.wait(5) == -signal.SIGTERM
        assert not pid_file.exists()
    finally:
        if server.poll() is None:
            server.kill()


def test_a_server_pid_now_used_by_another_process_is_not_signalled(tmp_path):
    pid_file = ownership.write_pid_file(tmp_path, "kernel", os.getpid())
    recorded = ownership.read_pid_files(tmp_path)[0]
    assert recorded.running()
    assert not dataclasses.replace(recorded, start=(recorded.start or 0) - 1).running()
    pid_file.unlink()


def test_ps_shows_kind_name_owner_liveness_start_status_and_port():
    dead = dataclasses.replace(_finished_process_owner(), pid=77, program="smrl-local serve")
    rows = [Running("endpoint", "tmpx_algo-1-abcde_1", dead, DEAD, "2026-11-30 23:00:00", "running", 8080)]
    assert format_running(rows).splitlines() == [
        "KIND      NAME                 OWNER                    OWNER ALIVE  STARTED              STATUS   PORT",
        "endpoint  tmpx_algo-1-abcde_1  smrl-local serve pid 77  no           2026-11-30 23:00:00  running  8080",
    ]
    assert format_running([]) == "nothing of sagemaker-rl-local is running"


# -- an interrupted job leaves no model --------------------------------------------------------

def test_an_interrupted_jobs_empty_model_archive_is_deleted(tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    assert set_aside_unfinished_model(archive.as_uri()) is None
    assert not archive.exists()


def test_an_interrupted_jobs_partial_model_archive_no_longer_looks_like_a_model(tmp_path):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"model.onnx": b"half"})
    assert set_aside_unfinished_model(str(archive)) == tmp_path / UNFINISHED_MODEL_ARCHIVE
    assert not archive.exists()


def test_an_archive_in_s3_is_left_alone():
    assert set_aside_unfinished_model("s3://bucket/job/output/model.tar.gz") is None


# -- images ----------------------------------------------------------------------------------

def test_the_build_stage_images_are_read_from_the_classic_builders_output():
    output = textwrap.dedent("""\
        Step 1/12 : ARG BASE_IMAGE=python:3.11-slim-bookworm
        Step 2/12 : FROM ${BASE_IMAGE} AS build
         ---> 54cabf1cd2a3
        Step 3/12 : RUN python3 -m venv /opt/venv
         ---> Running in 0f0f0f0f0f0f
        Removing intermediate container 0f0f0f0f0f0f
         ---> 9daae76f01d6
        Step 4/12 : COPY src/ /opt/smrl/src/
         ---> Using cache
         ---> ed2ca213162b
        Step 5/12 : FROM ${BASE_IMAGE}
         ---> 54cabf1cd2a3
        Step 6/12 : COPY --from=build /opt/venv /opt/venv
         ---> 22e70d38e7aa
        Successfully built 22e70d38e7aa""").splitlines()
    assert stage_images(output) == ["ed2ca213162b"]


# -- signals ---------------------------------------------------------------------------------

SIGNALLED = """
import sys, time
from emulator import signals
with signals.handled():
    try:
        print("READY", flush=True)
        time.sleep(30)
    except signals.Interrupted as stop:
        time.sleep(0.5)  # a cleanup that a second signal must not cut short
        print("CLEANED", stop.signal_name, flush=True)
        sys.exit(stop.exit_code)
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_each_signal_ends_the_block_with_a_cleanup_even_when_sigint_was_inherited_ignored(signum, code):
    child = subprocess.Popen([sys.executable, "-c", SIGNALLED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    child.send_signal(signum)
    time.sleep(0.2)
    child.send_signal(signum)  # a second one, during the cleanup
    out, err = child.communicate(timeout=20)
    assert (child.returncode, out.strip()) == (code, f"CLEANED {signal.Signals(signum).name}")
    assert "still removing containers" in err


THREAD_FAILS = """
import sys, threading, time
from emulator import signals

def fail():
    raise RuntimeError("Failed to run: docker-compose ... exited with code: 2")

with signals.handled():
    try:
        if sys.argv[1] == "after a signal":
            print("READY", flush=True)
            time.sleep(30)
    except signals.Interrupted:
        pass
    thread = threading.Thread(target=fail)
    thread.start()
    thread.join()
"""


@pytest.mark.parametrize("when", ["after a signal", "without one"])
def test_a_thread_that_dies_of_the_signal_prints_no_traceback_but_other_thread_errors_still_do(when):
    child = subprocess.Popen([sys.executable, "-c", THREAD_FAILS, when], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout is not None
    if when == "after a signal":
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=20)
    assert ("Traceback" in err) == (when == "without one"), err
