"""Where a cloud training job leaves its artifacts in S3, made from what local mode wrote.

SageMaker writes ``<output_path>/<job>/output/model.tar.gz``, ``.../output/output.tar.gz``
holding the contents of /opt/ml/output/data, and uploads /opt/ml/output/intermediate to
``.../output/intermediate/``. The SDK's local mode writes ``<job>/model.tar.gz`` and an
``output.tar.gz`` of all of /opt/ml/output. Code written for the cloud (the public
notebooks) reads the cloud's keys, so jobs that asked for an ``ml.*`` instance type get them.
"""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from emulator import contract

DATA_PREFIX = "data/"
INTERMEDIATE_PREFIX = "intermediate/"
LOCAL_INTERMEDIATE_DIR = Path("output") / "intermediate"
# How often files new in /opt/ml/output/intermediate are uploaded while a job runs. The
# cloud uploads them as they appear; code that polls for them (the public notebooks poll
# every 5 s) sees them within this delay.
INTERMEDIATE_UPLOAD_INTERVAL_S = 2.0


def job_prefix(output_path: str, job_name: str) -> tuple[str, str]:
    """(bucket, key prefix ending in /) of a job's cloud output folder, `<output_path>/<job>/output/`."""
    parsed = urlparse(output_path)
    base = parsed.path.strip("/")
    return parsed.netloc, "/".join(filter(None, [base, job_name, "output"])) + "/"


def cloud_output_archive(local_output_archive: Path) -> bytes:
    """The cloud's output.tar.gz (the contents of /opt/ml/output/data) from local mode's
    (all of /opt/ml/output)."""
    packed = io.BytesIO()
    with tarfile.open(local_output_archive) as source, tarfile.open(fileobj=packed, mode="w:gz") as target:
        for member in source.getmembers():
            name = member.name.removeprefix("./")
            if not name.startswith(DATA_PREFIX) or name == DATA_PREFIX.rstrip("/"):
                continue
            extracted = source.extractfile(member) if member.isfile() else None
            # A fresh header: one read from a PAX archive keeps a long name in pax_headers,
            # which would win over a renamed `name` when written.
            moved = tarfile.TarInfo(name.removeprefix(DATA_PREFIX))
            moved.size, moved.mode, moved.mtime, moved.type = member.size, member.mode, member.mtime, member.type
            target.addfile(moved, extracted)
    return packed.getvalue()


def intermediate_files(local_dir: Path) -> dict[str, Path]:
    """The files of /opt/ml/output/intermediate, which local mode copies to
    `<output>/output/intermediate` as the job runs, by their path below it."""
    folder = local_dir / LOCAL_INTERMEDIATE_DIR
    return {str(path.relative_to(folder)): path for path in sorted(folder.rglob("*")) if path.is_file()}


class IntermediateUploads:
    """Uploads the files of a running job's intermediate folder under the cloud's keys as
    they appear or change, every ``INTERMEDIATE_UPLOAD_INTERVAL_S`` seconds, from a thread
    that lives as long as the ``with`` block."""

    def __init__(self, s3_client: Any, local_dir: Path, output_path: str, job_name: str,
                 interval: float = INTERMEDIATE_UPLOAD_INTERVAL_S):
        self.s3_client, self.local_dir, self.interval = s3_client, local_dir, interval
        self.bucket, self.prefix = job_prefix(output_path, job_name)
        self.uploaded: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"intermediate-uploads-{job_name}", daemon=True)

    def upload_changed(self) -> None:
        for name, path in intermediate_files(self.local_dir).items():
            stat = path.stat()
            if self.uploaded.get(name) != (stat.st_size, stat.st_mtime_ns):
                self.s3_client.upload_file(str(path), self.bucket, self.prefix + INTERMEDIATE_PREFIX + name)
                self.uploaded[name] = (stat.st_size, stat.st_mtime_ns)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.upload_changed()
            except Exception:  # a file being written or removed, the S3 server busy: retried next round,
                pass  # and upload_as_the_cloud_does uploads every file once more when the job ends

    def __enter__(self) -> IntermediateUploads:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def upload_as_the_cloud_does(s3_client: Any, local_dir: Path, output_path: str, job_name: str) -> str:
    """Uploads local mode's artifacts in `local_dir` under the cloud's keys; returns the
    model archive's s3:// URI (what DescribeTrainingJob reports as S3ModelArtifacts)."""
    bucket, prefix = job_prefix(output_path, job_name)
    local_output = local_dir / contract.OUTPUT_ARCHIVE
    model_key = prefix + contract.MODEL_ARCHIVE
    s3_client.upload_file(str(local_dir / contract.MODEL_ARCHIVE), bucket, model_key)
    if local_output.is_file():
        s3_client.put_object(Bucket=bucket, Key=prefix + contract.OUTPUT_ARCHIVE,
                             Body=cloud_output_archive(local_output))
    for name, path in intermediate_files(local_dir).items():
        s3_client.upload_file(str(path), bucket, prefix + INTERMEDIATE_PREFIX + name)
    return f"s3://{bucket}/{model_key}"
