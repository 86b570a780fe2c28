"""Guard rails around one local training job: checks before it, isolation during it,
cleanup after it.

The SageMaker SDK's local mode pulls missing images from ECR, lets containers reach any
network, and never removes the containers, the ``sagemaker-local`` network or its temp
folders. ``JobGuard`` closes those gaps; ``emulator.session`` runs every training job
inside one.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from urllib.parse import urlparse

import docker

from emulator import contract, ownership
from emulator.containers import (
    TRAINING_NETWORK,
    ContainerSetupError,
    TrainingContainer,
    containers_of,
    ensure_network,
    release_network,
    remove_tree,
    require_image,
)
from emulator.engine import has_nvidia_runtime
from emulator.images import ensure_sdk_tags
from emulator.network_holds import NetworkHold

# What an interrupted job's model.tar.gz becomes when it holds anything: no longer a name
# that `serve`, `latest` or a user takes for a finished model.
UNFINISHED_MODEL_ARCHIVE = "model.unfinished.tar.gz"


class JobSetupError(ContainerSetupError):
    """A training job cannot start safely; the message says why and how to fix it."""


def check_job_can_start(client: docker.DockerClient, image: str, instance_type: str, region: str) -> None:
    """Fails before any container starts if the job could not run offline and isolated.

    Raises:
        JobSetupError: a GPU job on an engine without NVIDIA support.
        ContainerSetupError: the image is not on this machine (local mode would pull it).
    """
    ensure_sdk_tags(region, client)
    if instance_type == "local_gpu" and not has_nvidia_runtime(client):
        raise JobSetupError(
            'instance_type="local_gpu" needs GPU support in the Docker engine, and it has '
            "no NVIDIA runtime. Install the NVIDIA driver and nvidia-container-toolkit "
            "(then `nvidia-ctk runtime configure --runtime=docker` and restart dockerd), "
            'or train on the CPU with instance_type="local".'
        )
    require_image(client, image, "training")


def raise_if_a_host_failed(client: docker.DockerClient, hosts: list[str]) -> None:
    """Raises like the SDK does for a failed job when any host's container exited non-zero.

    `docker-compose up --abort-on-container-exit` (1.29) sometimes exits 0 when the one
    container fails within a second of starting, and the SDK then reports success; the
    containers' own exit codes are the truth.
    """
    for container in containers_of(client, hosts):
        code = container.attrs.get("State", {}).get("ExitCode", 0)
        if code not in (0, None):
            raise RuntimeError(f"Failed to run: the training container {container.name} exited with code {code}")


def set_aside_unfinished_model(artifacts: str | None) -> Path | None:
    """An interrupted job's model.tar.gz (the SDK packs /opt/ml/model even when the job was
    interrupted) is no model: deleted when it holds nothing, else renamed
    ``model.unfinished.tar.gz``. Returns the renamed archive, if any. Archives the SDK
    uploaded to an s3:// output are left as they are."""
    if not artifacts:
        return None
    parsed = urlparse(artifacts)
    if parsed.scheme not in ("", "file"):
        return None
    archive = Path(parsed.netloc + parsed.path if parsed.scheme else artifacts)
    if archive.name != contract.MODEL_ARCHIVE or not archive.is_file():
        return None
    try:
        with tarfile.open(archive) as tar:
            empty = tar.next() is None
    except (tarfile.TarError, OSError):
        empty = False
    if empty:
        archive.unlink()
        return None
    renamed = archive.with_name(UNFINISHED_MODEL_ARCHIVE)
    archive.replace(renamed)
    return renamed


class JobGuard:
    """Context for one training job: checks and network on entry, cleanup on exit.

    Cleanup runs on success, failure and KeyboardInterrupt alike: the containers and temp
    folders of ``container``, the folders in ``extra_folders``, and the network when no
    other job (of any process) uses it. After an interrupt (KeyboardInterrupt, or a signal
    turned into one by ``emulator.signals``), the job's model archive is set aside
    (``set_aside_unfinished_model``; the result in ``unfinished_model``).
    """

    def __init__(self, client: docker.DockerClient, image: str, instance_type: str, region: str):
        self.client = client
        self.image = image
        self.instance_type = instance_type
        self.region = region
        self.container: TrainingContainer | None = None
        self.extra_folders: list[str] = []
        self.unfinished_model: Path | None = None
        self.network_hold = NetworkHold(TRAINING_NETWORK)

    def own_folder(self, folder: str | Path) -> None:
        """A folder of this job (it may not exist yet): removed with the job, and marked as
        this process's until then, so that a sweep can remove it if the process is killed."""
        ownership.claim_folder(folder)
        self.extra_folders.append(str(folder))

    def __enter__(self) -> JobGuard:
        check_job_can_start(self.client, self.image, self.instance_type, self.region)
        self.network_hold.__enter__()
        try:
            ensure_network(self.client, TRAINING_NETWORK, internal=True)
        except BaseException:
            self.network_hold.__exit__()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        global _active_jobs
        try:
            if self.container is not None:
                self.container.remove(self.client)
                if exc_type is not None and issubclass(exc_type, KeyboardInterrupt | SystemExit):
                    self.unfinished_model = set_aside_unfinished_model(self.container.artifacts)
            for folder in self.extra_folders:
                remove_tree(folder, self.client, self.image)
                ownership.release_folder(folder)
        finally:
            # Another job, of this process or another, may be between ensure_network and
            # compose up: only the last one out removes the network (network_holds).
            try:
                if self.network_hold.last_out():
                    release_network(self.client, TRAINING_NETWORK)
            finally:
                self.network_hold.__exit__()
