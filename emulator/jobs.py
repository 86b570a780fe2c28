"""Guard rails around one local training job: checks before it, isolation during it,
cleanup after it.

The SageMaker SDK's local mode pulls missing images from ECR, lets containers reach any
network, and never removes the containers, the ``sagemaker-local`` network or its temp
folders. The functions here close those gaps; ``emulator.session`` calls them around
every training job.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import docker
import docker.errors
from sagemaker import image_uris

from emulator.engine import has_nvidia_runtime
from emulator.images import inference_image, training_image

logger = logging.getLogger(__name__)

NETWORK_NAME = "sagemaker-local"
LOCAL_TRAINING_IMAGES = {"local": training_image("cpu"), "local_gpu": training_image("gpu")}
LOCAL_INFERENCE_IMAGES = {"local": inference_image("cpu"), "local_gpu": inference_image("gpu")}
# The MXNet serving version the SDK picks for a Coach MXNet RLEstimator's model (MXNetModel).
SDK_MXNET_SERVING_VERSION = "1.3"
BUILD_IMAGES_FIX = "Build the images: `smrl-local build` (or `make images`)."

_active_jobs = 0
_active_jobs_lock = threading.Lock()


class JobSetupError(RuntimeError):
    """A training job cannot start safely; the message says why and how to fix it."""


def sdk_training_image_uri(region: str, instance_type: str = "local") -> str:
    """The image URI ``RLEstimator`` (Coach 0.11.0, MXNet) computes for ``region``."""
    return image_uris.retrieve(
        "coach-mxnet",
        region,
        version="0.11.0",
        py_version="py3",
        instance_type=instance_type,
        image_scope="training",
    )


def sdk_inference_image_uri(region: str, instance_type: str = "local") -> str:
    """The serving image URI ``MXNetModel`` (framework 1.3, py3) computes for ``region``."""
    return image_uris.retrieve(
        "mxnet",
        region,
        version=SDK_MXNET_SERVING_VERSION,
        py_version="py3",
        instance_type=instance_type,
        image_scope="inference",
    )


def ensure_sdk_tags(region: str, client: docker.DockerClient | None = None) -> list[str]:
    """Give each locally built image the ECR URI the SDK computes for ``region``.

    Local mode uses an image carrying that exact URI as is, so user code that names any
    region runs our images instead of pulling. Images that are not built yet are skipped:
    the job's preflight reports them. Idempotent.

    Returns:
        The SDK URIs that now point at a local image.
    """
    client = client or docker.from_env()
    wanted = [(tag, sdk_training_image_uri, kind) for kind, tag in LOCAL_TRAINING_IMAGES.items()]
    wanted += [(tag, sdk_inference_image_uri, kind) for kind, tag in LOCAL_INFERENCE_IMAGES.items()]
    tagged = []
    for local_tag, uri_for, instance_type in wanted:
        try:
            image = client.images.get(local_tag)
        except docker.errors.ImageNotFound:
            continue
        uri = uri_for(region, instance_type)
        if uri not in image.tags:
            repository, tag = uri.rsplit(":", 1)
            image.tag(repository, tag)
        tagged.append(uri)
    return tagged


def preflight(client: docker.DockerClient, image: str, instance_type: str, region: str) -> None:
    """Fail before any container starts if the job could not run offline and isolated.

    Raises:
        JobSetupError: a GPU job on an engine without NVIDIA support, or an image that is
            not on this machine (local mode would try to pull it from a registry).
    """
    ensure_sdk_tags(region, client)
    if instance_type == "local_gpu" and not has_nvidia_runtime(client):
        raise JobSetupError(
            'instance_type="local_gpu" needs GPU support in the Docker engine, and it has '
            "no NVIDIA runtime. Install the NVIDIA driver and nvidia-container-toolkit "
            "(then `nvidia-ctk runtime configure --runtime=docker` and restart dockerd), "
            'or train on the CPU with instance_type="local".'
        )
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        ours = image in LOCAL_TRAINING_IMAGES.values() or "/sagemaker-rl-mxnet:" in image
        fix = (
            BUILD_IMAGES_FIX
            if ours
            else "Build or load it first (`docker build -t IMAGE ...` or `docker load`)."
        )
        raise JobSetupError(
            f"Image {image} is not on this machine, and local training never pulls from a "
            f"registry. {fix}"
        ) from None


def ensure_network(client: docker.DockerClient) -> None:
    """Create the ``sagemaker-local`` network as an internal one, so that training
    containers can talk to each other but have no route off this machine.

    A non-internal network of that name (the SDK creates one for local endpoints) is
    replaced when no container uses it.

    Raises:
        JobSetupError: the non-internal network is in use.
    """
    for network in client.networks.list(names=[NETWORK_NAME]):
        if network.name != NETWORK_NAME:  # the filter matches substrings
            continue
        if network.attrs.get("Internal"):
            return
        network.reload()  # list() leaves out the attached containers
        users = [c["Name"] for c in (network.attrs.get("Containers") or {}).values()]
        if users:
            raise JobSetupError(
                f"Docker network {NETWORK_NAME} exists without internal=True and is used by "
                f"{', '.join(users)} (a local endpoint?). Training containers must not reach "
                "beyond this machine. Stop those containers (`predictor.delete_endpoint()` or "
                f"`docker rm -f {' '.join(users)}`) and run fit() again."
            )
        network.remove()
    try:
        client.networks.create(NETWORK_NAME, driver="bridge", internal=True)
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: a parallel job created it first
            raise


def release_network(client: docker.DockerClient, name: str = NETWORK_NAME) -> None:
    """Remove the network ``name`` unless a container still uses it."""
    for network in client.networks.list(names=[name]):
        if network.name != name:  # the filter matches substrings
            continue
        network.reload()
        if network.attrs.get("Containers"):
            return
        try:
            network.remove()
        except docker.errors.APIError as exc:
            # A container of another process attached meanwhile: leave it to that job.
            logger.debug("Kept network %s: %s", name, exc)


def count_job_containers(client: docker.DockerClient) -> int:
    """Containers of local-mode jobs and endpoints on this engine (compose labels them)."""
    return len(client.containers.list(all=True, filters={"label": "com.docker.compose.project"}))


def raise_if_a_host_failed(client: docker.DockerClient, hosts: list[str]) -> None:
    """Raise like the SDK does for a failed job when any host's container exited non-zero.

    `docker-compose up --abort-on-container-exit` (1.29) sometimes exits 0 when the one
    container fails within a second of starting, and the SDK then reports success; the
    containers' own exit codes are the truth.
    """
    for host in hosts:
        for container in client.containers.list(all=True, filters={"label": f"com.docker.compose.service={host}"}):
            code = container.attrs.get("State", {}).get("ExitCode", 0)
            if container.name.endswith(host) and code not in (0, None):
                raise RuntimeError(f"Failed to run: the training container {container.name} exited with code {code}")


def remove_job_containers(client: docker.DockerClient, hosts: list[str]) -> list[str]:
    """Remove the containers of one job, running or not; return their names.

    The SDK names each service after its host (``algo-N-<random suffix>``, unique per job)
    and compose labels the containers with it, so the label finds exactly this job's.
    """
    removed = []
    for host in hosts:
        containers = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.service={host}"}
        )
        for container in containers:
            if container.name.endswith(host):
                container.remove(force=True, v=True)
                removed.append(container.name)
    return removed


def remove_tree(path: str | os.PathLike, client: docker.DockerClient, image: str) -> None:
    """Delete a job folder, including files the containers wrote as root.

    Those files cannot be deleted by a non-root user on Linux, so on a permission error
    the folder's content is deleted from inside a throwaway container of the job image.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    client.containers.run(
        image,
        entrypoint=["/bin/sh", "-c", "rm -rf /smrl-cleanup/* /smrl-cleanup/.[!.]*"],
        volumes={str(path.resolve()): {"bind": "/smrl-cleanup", "mode": "rw"}},
        user="0",
        network_mode="none",
        remove=True,
    )
    try:
        shutil.rmtree(path)
    except OSError as exc:
        logger.warning(
            "Could not delete %s (%s). Delete it with `sudo rm -rf %s`.", path, exc, path
        )


class JobGuard:
    """Context for one training job: preflight and network on entry, cleanup on exit.

    Cleanup runs on success, failure and KeyboardInterrupt alike.
    """

    def __init__(self, client: docker.DockerClient, image: str, instance_type: str, region: str):
        self.client = client
        self.image = image
        self.instance_type = instance_type
        self.region = region
        self.hosts: list[str] = []
        self.folders: list[str] = []

    def __enter__(self) -> JobGuard:
        global _active_jobs
        preflight(self.client, self.image, self.instance_type, self.region)
        with _active_jobs_lock:
            ensure_network(self.client)
            _active_jobs += 1
        return self

    def __exit__(self, *exc_info) -> None:
        global _active_jobs
        try:
            remove_job_containers(self.client, self.hosts)
            for folder in self.folders:
                remove_tree(folder, self.client, self.image)
        finally:
            with _active_jobs_lock:
                _active_jobs -= 1
                # Another job of this process may be between ensure_network and compose up.
                if _active_jobs == 0:
                    release_network(self.client)
