"""Why a training job failed, told from what its container left: the failure file (the
SageMaker contract's /opt/ml/output/failure, inside output.tar.gz), the launcher's error
line, and the last Python traceback of the log with the frame of the user's own code.

Pure: reads an archive and a log's text, runs nothing.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from emulator import contract
from emulator.errors import UserError
from emulator.metrics import normalise_line

TRACEBACK_TAIL_LINES = 12
_ERROR_LINE = re.compile(re.escape(contract.COACH_ERROR_PREFIX) + r"(.*)")
_TRACEBACK_START = "Traceback (most recent call last)"
_USER_FRAME = re.compile(r'File "' + re.escape(str(contract.CODE_DIR)) + r'/([^"]+)", line (\d+), in (\S+)')


class TrainingJobFailed(UserError, RuntimeError):
    """A training job's container failed; the message carries its cause and the kept log."""


def _last_traceback(log_text: str) -> list[str]:
    """The log's last traceback: its frames (indented) and the exception's line."""
    lines = [normalise_line(line) for line in log_text.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK_START)]
    if not starts:
        return []
    traceback = [lines[starts[-1]]]
    for line in lines[starts[-1] + 1:]:
        if line.strip():
            traceback.append(line)
            if not line[0].isspace():
                break
    return traceback


def traceback_tail(log_text: str, lines: int = TRACEBACK_TAIL_LINES) -> str:
    """The end of the last Python traceback in a job's log (without compose's prefixes), or
    of the log itself when it holds none."""
    shown = _last_traceback(log_text) or [line for line in map(normalise_line, log_text.splitlines()) if line.strip()]
    return "\n".join(shown[-lines:])


def user_code_frame(log_text: str) -> str | None:
    """`file:line in function` of the innermost frame in the job's own code (under
    /opt/ml/code) of the log's last traceback."""
    frames = [_USER_FRAME.search(line) for line in _last_traceback(log_text)]
    found = [f for f in frames if f]
    return f"{found[-1][1]}:{found[-1][2]} in {found[-1][3]}" if found else None


def _failure_file(output_archive: Path | None) -> str | None:
    if output_archive is None or not output_archive.is_file():
        return None
    try:
        with tarfile.open(output_archive) as tar:
            name = contract.FAILURE_FILE.name
            member = next((m for m in tar.getmembers() if m.name.removeprefix("./") == name), None)
            extracted = tar.extractfile(member) if member is not None else None
            text = extracted.read().decode(errors="replace").strip() if extracted is not None else ""
    except (tarfile.TarError, OSError, EOFError):
        return None  # a partial archive: the log still tells
    return (text.splitlines()[-1] if text.startswith(_TRACEBACK_START) else text) or None


def container_reason(output_archive: Path | None, log_text: str) -> str | None:
    """The container's own reason, the most precise first: the launcher's error line, the
    last line of the log's last traceback (the exception), the failure file."""
    errors = _ERROR_LINE.findall(log_text)
    traceback = _last_traceback(log_text)
    return (errors[-1].strip() if errors else None) or (traceback[-1] if traceback else None) \
        or _failure_file(output_archive)


def describe(job_name: str, output_archive: Path | None, log_text: str, log_file: Path, fallback: str) -> str:
    """The message of a failed job: the cause, where in the user's code, the traceback's
    tail, and the kept log."""
    reason = container_reason(output_archive, log_text) or fallback
    lines = [f"Training job {job_name} failed: {reason}"]
    frame = user_code_frame(log_text)
    if frame:
        lines.append(f"  in your code: {frame}")
    tail = traceback_tail(log_text)
    if _last_traceback(log_text) and tail:
        lines.append("  traceback (end):\n    " + tail.replace("\n", "\n    "))
    lines.append(f"  full log: {log_file}")
    return "\n".join(lines)
