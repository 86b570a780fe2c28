"""A failed job's message tells the cause, where in the user's code, the traceback's end and
the kept log; read from the failure file and the log as the container left them."""

from __future__ import annotations

from pathlib import Path

from conftest import make_tar_gz
from emulator import contract
from emulator.job_failure import container_reason, describe, traceback_tail, user_code_frame

LOG = """abc-algo-1 | starting
abc-algo-1 | Traceback (most recent call last):
abc-algo-1 |   File "/opt/ml/code/train.py", line 3, in <module>
abc-algo-1 |     my_env.step(1)
abc-algo-1 |   File "/opt/ml/code/my_env.py", line 2, in step
abc-algo-1 |     return state + reward
abc-algo-1 | NameError: name 'reward' is not defined
abc-algo-1 exited with code 1
Aborting on container exit...
1
"""


def test_the_cause_is_the_exception_of_the_last_traceback():
    assert container_reason(None, LOG) == "NameError: name 'reward' is not defined"


def test_the_launchers_own_error_line_is_the_most_precise_cause():
    log = LOG + f"abc-algo-1 | {contract.COACH_ERROR_PREFIX}Preset 'nope' not found in /opt/ml/code\n"
    assert container_reason(None, log) == "Preset 'nope' not found in /opt/ml/code"


def test_without_a_traceback_the_failure_file_tells(tmp_path):
    archive = make_tar_gz(tmp_path / "output.tar.gz", {"failure": b"pip could not install requirements.txt"})
    assert container_reason(archive, "no traceback here\n") == "pip could not install requirements.txt"


def test_a_partial_output_archive_is_no_reason_to_fail_again(tmp_path):
    archive = tmp_path / "output.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08 truncated")
    assert container_reason(archive, "") is None


def test_the_users_frame_is_the_innermost_one_under_the_code_folder():
    assert user_code_frame(LOG) == "my_env.py:2 in step"
    assert user_code_frame("Traceback (most recent call last):\n  File \"/usr/lib/x.py\", line 1, in f\nE: e\n") is None


def test_the_tail_ends_at_the_exception_without_compose_lines():
    tail = traceback_tail(LOG)
    assert tail.splitlines()[0] == "Traceback (most recent call last):"
    assert tail.splitlines()[-1] == "NameError: name 'reward' is not defined"


def test_the_message_names_cause_frame_and_log():
    message = describe("job-1", None, LOG, Path("/w/logs/job-1.log"), "Failed to run: compose exited with code 1")
    assert message.splitlines()[0] == "Training job job-1 failed: NameError: name 'reward' is not defined"
    assert "  in your code: my_env.py:2 in step" in message
    assert message.splitlines()[-1] == "  full log: /w/logs/job-1.log"


def test_with_nothing_to_read_the_sdks_error_is_the_cause():
    message = describe("job-1", None, "", Path("j.log"), "Failed to run: compose exited with code 1")
    assert message == "Training job job-1 failed: Failed to run: compose exited with code 1\n  full log: j.log"
