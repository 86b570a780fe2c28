"""SageMaker's checkpoint contract (``CheckpointConfig``) for local jobs.

In the cloud, a job with ``checkpoint_s3_uri`` starts with that prefix's files in
``checkpoint_local_path`` (default /opt/ml/checkpoints), and files written there are
uploaded while the job runs, so that a restarted job (a spot interruption) or a later one
resumes from them. Here the folder is a host folder mounted at that path:
``CheckpointSync`` fills it from the URI before the container starts and uploads new or
changed files every ``SYNC_INTERVAL_S`` seconds from a thread, and once more at the end.
URIs are ``file://`` folders or ``s3://`` prefixes of the local S3 server.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from emulator.errors import UserError

# The cloud uploads checkpoint files as they appear; a stopped job's last files are
# uploaded by the final sync after the container has exited.
SYNC_INTERVAL_S = 2.0
# Beside a job's attempt folders: its URI, for ``rescue`` after its process was killed.
TARGET_FILE = "checkpoint_s3_uri"
# Under the work folder: one folder per job, holding one mounted folder per attempt.
CHECKPOINTS_ROOT = "checkpoints"


class CheckpointConfigError(UserError, ValueError):
    """checkpoint_s3_uri cannot be used here; the message says why and what to pass."""


@dataclass(frozen=True)
class Restored:
    files: int
    bytes: int


def _file_folder(uri: str) -> Path | None:
    parsed = urlparse(uri)
    return Path(parsed.netloc + parsed.path) if parsed.scheme == "file" else None


def check_uri(uri: str) -> None:
    """Refuses a checkpoint URI that is neither file:// nor s3://, or a file:// one that is a file.

    Raises:
        CheckpointConfigError: with the URI and the fix.
    """
    scheme = urlparse(uri).scheme
    folder = _file_folder(uri)
    if scheme not in ("file", "s3"):
        raise CheckpointConfigError(
            f"checkpoint_s3_uri={uri!r}: local jobs take file:///absolute/folder or s3://bucket/prefix "
            "(the local S3 of `smrl-local run`).")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise CheckpointConfigError(f"checkpoint_s3_uri={uri!r} is a file; it must name a folder.")


class CheckpointSync:
    """The checkpoint folder of one job: ``restore()`` before the container starts, then a
    ``with`` block that uploads what the job writes while it runs and once more at the end."""

    def __init__(self, uri: str, folder: Path, s3_client: Any = None, interval: float = SYNC_INTERVAL_S):
        check_uri(uri)
        self.uri, self.folder, self.s3_client, self.interval = uri, folder, s3_client, interval
        self.target = _file_folder(uri)
        parsed = urlparse(uri)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/") + ("/" if parsed.path.strip("/") else "")
        self.uploaded: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def restore(self) -> Restored:
        """Copies the URI's files into the folder (created if missing); returns what came."""
        self.folder.mkdir(parents=True, exist_ok=True)
        files, size = 0, 0
        for name, fetch in self._remote_files():
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            fetch(path)
            stat = path.stat()
            self.uploaded[name] = (stat.st_size, stat.st_mtime_ns)  # already there: not sent back
            files, size = files + 1, size + stat.st_size
        return Restored(files, size)

    def _remote_files(self) -> list[tuple[str, Any]]:
        if self.target is not None:
            if not self.target.is_dir():
                return []
            return [(str(p.relative_to(self.target)), lambda dest, p=p: shutil.copy2(p, dest))
                    for p in sorted(self.target.rglob("*")) if p.is_file()]
        found = []
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix):]
                if name and not name.endswith("/"):
                    found.append((name, lambda dest, key=item["Key"]: self.s3_client.download_file(
                        self.bucket, key, str(dest))))
        return found

    def upload_changed(self) -> int:
        """Sends files new or changed since the last call; returns how many. Files being
        written (``*.partial``) wait for their final name."""
        sent = 0
        with self._lock:
            for path in sorted(self.folder.rglob("*")):
                if not path.is_file() or path.name.endswith(".partial"):
                    continue
                name = str(path.relative_to(self.folder))
                stat = path.stat()
                if self.uploaded.get(name) == (stat.st_size, stat.st_mtime_ns):
                    continue
                if self.target is not None:
                    (self.target / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, self.target / name)
                else:
                    self.s3_client.upload_file(str(path), self.bucket, self.prefix + name)
                self.uploaded[name] = (stat.st_size, stat.st_mtime_ns)
                sent += 1
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.upload_changed()
            except Exception:  # a file removed while read, the S3 server busy: next round,
                pass  # and __exit__ uploads every file once more

    def __enter__(self) -> CheckpointSync:
        self._thread = threading.Thread(target=self._run, name=f"checkpoint-sync-{self.folder.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.upload_changed()


def job_folder(work_dir: Path, job_name: str) -> Path:
    """The folder of a job's attempt folders (owned by the job, swept when its owner died)."""
    return Path(work_dir, CHECKPOINTS_ROOT, job_name)


def remember_target(job_folder: Path, uri: str) -> None:
    """Notes `uri` in the folder of a job's attempts, for ``rescue``."""
    job_folder.mkdir(parents=True, exist_ok=True)
    (job_folder / TARGET_FILE).write_text(uri)


def rescue(job_folder: Path) -> str | None:
    """Sends what the newest attempt of a job whose process was killed wrote after its last
    sync (the container trained on) to the job's file:// URI, before a sweep deletes the
    folder. An s3:// URI's server ended with that process: nothing sent, and the line says so.

    Returns:
        One line for the user, or None when there was nothing to send.
    """
    target = job_folder / TARGET_FILE
    attempts = sorted((p for p in job_folder.glob("attempt-*") if p.is_dir()), key=lambda p: int(p.name[8:] or 0))
    if not target.is_file() or not attempts:
        return None
    uri = target.read_text().strip()
    if _file_folder(uri) is None:
        return f"not sent to {uri}: the checkpoints a killed job wrote after its last sync (its S3 server is gone)"
    sent = CheckpointSync(uri, attempts[-1]).upload_changed()
    return f"sent {sent} checkpoint files a killed job wrote after its last sync to {uri}" if sent else None
