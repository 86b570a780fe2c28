"""The containers of local jobs and endpoints, owned from creation to removal.

The SDK's local mode runs each job or endpoint through compose (``_SageMakerContainer``)
but never removes what it creates: containers, temp folders (partly written as root),
networks. ``OwnedContainer`` is that runner, recording its temp folders and rewriting the
compose file it runs (never the copy the SDK goes on reading); ``TrainingContainer`` and
``ServingContainer`` differ only in what they rewrite. The functions below create our
networks and remove everything again.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import sagemaker.local.image
import yaml
from sagemaker.local.image import DOCKER_COMPOSE_FILENAME, _SageMakerContainer, _Volume

from emulator import contract, ownership
from emulator.archives import check_model_archive
from emulator.errors import UserError
from emulator.images import is_our_image
from emulator.ownership import KIND_LABEL, PORT_LABEL, Owner

logger = logging.getLogger(__name__)

# Training containers talk to each other here and reach nothing beyond this machine.
TRAINING_NETWORK = "sagemaker-local"
# Serving containers are internal too: the host reaches them at their address on this
# bridge (serving.LoopbackEndpoint proxies 127.0.0.1:PORT there), since Docker publishes no
# port for containers on an internal network. Not the name of earlier versions' routable
# serving network, so that endpoints of both can run on one engine.
SERVING_NETWORK = "sagemaker-local-endpoints"
LOOPBACK = "127.0.0.1"
BUILD_IMAGES_FIX = "Build the images: `smrl-local build --image all` (or `make images`)."


class ContainerSetupError(UserError, RuntimeError):
    """A container cannot start safely; the message says why and how to fix it."""


class OwnedContainer(_SageMakerContainer):
    """The SDK's compose runner, recording the temp folders it creates (``created_folders``)
    and marking them, and its containers, as this process's (``emulator.ownership``)."""

    kind = "container"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.created_folders: list[str] = []

    def _create_tmp_folder(self) -> str:
        folder = super()._create_tmp_folder()
        ownership.claim_folder(folder)
        self.created_folders.append(folder)
        return folder

    def _generate_compose_file(self, command, additional_volumes=None, additional_env_vars=None):
        content = super()._generate_compose_file(command, additional_volumes, additional_env_vars)
        # Compose runs the rewritten file; the SDK goes on reading `content`, whose volume
        # strings it parses as host:container (it cannot read a mode).
        written = self.rewrite_compose(copy.deepcopy(content))
        for service in written["services"].values():
            service["labels"] = {**service.get("labels", {}), **self.labels()}
        with open(os.path.join(str(self.container_root), DOCKER_COMPOSE_FILENAME), "w") as f:
            yaml.safe_dump(written, f, default_flow_style=False)
        return content

    def _compose(self, detached: bool = False) -> list[str]:
        # The SDK's _compose extends self.compose_cmd_prefix in place: a second run of one
        # container object (a job restarted after an interruption) passed "-f FILE up ..."
        # twice, and compose printed its usage instead of running.
        prefix = list(self.compose_cmd_prefix)
        try:
            return super()._compose(detached)
        finally:
            self.compose_cmd_prefix = prefix

    def rewrite_compose(self, content: dict) -> dict:
        """What compose runs instead of the SDK's compose file; unchanged here."""
        return content

    def labels(self) -> dict[str, str]:
        """The labels of each container: its owner (this process) and kind."""
        return {**Owner.current().labels(), KIND_LABEL: self.kind}

    def remove(self, client: docker.DockerClient) -> None:
        """Removes the containers (running or not) and the temp folders."""
        remove_containers(client, self.hosts)
        for folder in self.created_folders:
            remove_tree(folder, client, self.image)
            ownership.release_folder(folder)


class TrainingContainer(OwnedContainer):
    """A training job's containers: on the internal training network, with the job's code
    and the wheels of its requirements.txt mounted read-only."""

    kind = "training"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.wheelhouse: Path | None = None  # wheels of the job's requirements.txt
        self.artifacts: str | None = None  # where the SDK put model.tar.gz (path or URI)
        # (host folder, path in the container) of CheckpointConfig (emulator.checkpoint_sync)
        self.checkpoint_volume: tuple[Path, str] | None = None

    def retrieve_artifacts(self, compose_data, output_data_config, job_name):
        # The SDK runs this in a `finally`: also for a job that was interrupted.
        self.artifacts = super().retrieve_artifacts(compose_data, output_data_config, job_name)
        return self.artifacts

    def _prepare_training_volumes(self, data_dir, input_data_config, output_data_config, hyperparameters):
        volumes = super()._prepare_training_volumes(data_dir, input_data_config, output_data_config, hyperparameters)
        if self.wheelhouse is not None:
            volumes.append(_Volume(str(self.wheelhouse), str(contract.JOB_WHEELHOUSE_DIR)))
        if self.checkpoint_volume is not None:
            volumes.append(_Volume(str(self.checkpoint_volume[0]), self.checkpoint_volume[1]))
        return volumes

    def rewrite_compose(self, content: dict) -> dict:
        if TRAINING_NETWORK in content.get("networks", {}):  # absent in SageMaker Studio
            # Created (internal) and removed by us; compose must not create a routable one.
            content["networks"][TRAINING_NETWORK]["external"] = True
        for service in content["services"].values():
            service["volumes"] = [_read_only(v) for v in service.get("volumes", [])]
        return content


def _read_only(volume: str) -> str:
    """The job's code and wheelhouse are mounted read-only: a job can neither see later edits
    nor change the user's files."""
    if volume.removesuffix(":z").endswith((f":{contract.CODE_DIR}", f":{contract.JOB_WHEELHOUSE_DIR}")):
        return volume + (",ro" if volume.endswith(":z") else ":ro")
    return volume


def _checked_before_unpacking(extract: Callable) -> Callable:
    """The SDK's extraction of a served model's archive, after ``check_model_archive``."""

    def extract_checked(tar: tarfile.TarFile, extract_path: str) -> None:
        check_model_archive(str(tar.name))
        extract(tar, extract_path)

    extract_checked.smrl_checked = True  # type: ignore[attr-defined]
    return extract_checked


# Patch of the SDK (sagemaker.local.image.custom_extractall_tarfile, which local mode runs on
# the host on each archive of a served model, file:// or downloaded from S3, with no limit on
# size or count): the archive is checked first, and refused with one line (emulator.archives).
if not getattr(sagemaker.local.image.custom_extractall_tarfile, "smrl_checked", False):
    sagemaker.local.image.custom_extractall_tarfile = _checked_before_unpacking(
        sagemaker.local.image.custom_extractall_tarfile)


class ServingContainer(OwnedContainer):
    """An endpoint's container: on the internal serving network, no published port (the
    endpoint's loopback proxy forwards 127.0.0.1:`port` to its address there)."""

    kind = "endpoint"

    def __init__(self, *args: Any, port: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.port = port  # labelled, so that `ps` and a taken port name the endpoint

    def _prepare_serving_volumes(self, model_location):
        # The SDK unpacks only what `tarfile.is_tarfile` accepts and mounts anything else as
        # it is: a file:// model that is not a tar.gz would fail only in the container, as
        # "no model in /opt/ml/model". The check says what the file is instead.
        parsed = urlparse(model_location)
        if parsed.scheme == "file":
            path = Path(parsed.netloc + parsed.path)
            if path.is_file() and not tarfile.is_tarfile(path):
                check_model_archive(path)
        return super()._prepare_serving_volumes(model_location)

    def labels(self) -> dict[str, str]:
        return {**super().labels(), PORT_LABEL: str(self.port)}

    def _create_docker_host(self, host, environment, optml_subdirs, command, volumes):
        config = super()._create_docker_host(host, environment, optml_subdirs, command, volumes)
        config.pop("ports", None)  # the SDK publishes 8080 on every interface
        config["networks"] = {SERVING_NETWORK: {"aliases": [host]}}
        return config

    def rewrite_compose(self, content: dict) -> dict:
        # Created (and removed) by us; compose must not create one of its own.
        content["networks"] = {SERVING_NETWORK: {"name": SERVING_NETWORK, "external": True}}
        return content


# -- images and networks -------------------------------------------------------------------

def require_image(client: docker.DockerClient, image: str, purpose: str) -> None:
    """Local mode would try to pull a missing image from a registry: refuse it first.

    Raises:
        ContainerSetupError: `image` is not on this machine; the message says how to build it.
    """
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        fix = (BUILD_IMAGES_FIX if is_our_image(image)
               else "Build or load it first (`docker build -t IMAGE ...` or `docker load`).")
        raise ContainerSetupError(
            f"Image {image} is not on this machine, and local {purpose} never pulls from a registry. {fix}"
        ) from None


def ensure_network(client: docker.DockerClient, name: str, *, internal: bool) -> None:
    """Creates the bridge network `name`, internal or not, unless it exists as asked.

    A network of that name with the other setting (the SDK creates a routable
    ``sagemaker-local`` for its endpoints) is replaced when no container uses it.

    Raises:
        ContainerSetupError: such a network exists and containers use it.
    """
    for network in client.networks.list(names=[name]):
        if network.name != name:  # the filter matches substrings
            continue
        if bool(network.attrs.get("Internal")) == internal:
            return
        network.reload()  # list() leaves out the attached containers
        users = [c["Name"] for c in (network.attrs.get("Containers") or {}).values()]
        if users:
            raise ContainerSetupError(
                f"Docker network {name} exists with internal={not internal} and is used by {', '.join(users)} "
                f"(a local endpoint?). It must be internal={internal} here. Stop those containers "
                f"(`predictor.delete_endpoint()` or `docker rm -f {' '.join(users)}`) and try again."
            )
        network.remove()
    try:
        created = client.networks.create(name, driver="bridge", internal=internal, check_duplicate=True,
                                         labels={**Owner.current().labels(), KIND_LABEL: "network"})
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: a parallel job created it first
            raise
        return
    # The engine's duplicate check is best effort: two jobs starting together made two
    # networks of one name, and compose then refused both ("network ... is ambiguous").
    # Every process keeps the oldest and removes its own if it is not that one.
    same = [n for n in client.networks.list(names=[name]) if n.name == name]
    oldest = min(same, key=lambda n: (n.attrs.get("Created", ""), n.id))
    if oldest.id != created.id:
        created.remove()


def release_network(client: docker.DockerClient, name: str) -> None:
    """Removes the network `name` unless a container still uses it."""
    for network in client.networks.list(names=[name]):
        if network.name != name:  # the filter matches substrings
            continue
        network.reload()
        if network.attrs.get("Containers"):
            return
        try:
            network.remove()
        except docker.errors.APIError as exc:
            # A container of another process attached meanwhile: leave it to that one.
            logger.debug("Kept network %s: %s", name, exc)


# -- removal -------------------------------------------------------------------------------

def count_job_containers(client: docker.DockerClient) -> int:
    """Containers of local-mode jobs and endpoints on this engine (compose labels them)."""
    return len(client.containers.list(all=True, filters={"label": "com.docker.compose.project"}))


def containers_of(client: docker.DockerClient, hosts: list[str]) -> list[Any]:
    """The containers of one job or endpoint, running or not.

    The SDK names each service after its host (``algo-N-<random suffix>``, unique per job)
    and compose labels the containers with it, so the label finds exactly these.
    """
    found = []
    for host in hosts:
        for container in client.containers.list(all=True, filters={"label": f"com.docker.compose.service={host}"}):
            if (container.name or "").endswith(host):
                found.append(container)
    return found


def address_on(client: docker.DockerClient, hosts: list[str], network: str) -> str | None:
    """The IP address of the first of `hosts`' containers on `network`, once it has one.

    Reads the engine's container list only (no inspect of each): a container removed
    between the two calls would raise NotFound there."""
    for summary in client.api.containers(all=True, filters={"label": f"com.docker.compose.service={hosts[0]}"}):
        networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(network) or {}).get("IPAddress")
        if address:
            return str(address)
    return None


def remove_containers(client: docker.DockerClient, hosts: list[str]) -> list[str]:
    """Removes the containers of one job or endpoint, running or not; returns their names."""
    removed = []
    for container in containers_of(client, hosts):
        container.remove(force=True, v=True)
        removed.append(container.name)
    return removed


def remove_tree(path: str | os.PathLike, client: docker.DockerClient, image: str) -> None:
    """Deletes a job folder, including files the containers wrote as root.

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
        logger.warning("Could not delete %s (%s). Delete it with `sudo rm -rf %s`.", path, exc, path)


# -- owners --------------------------------------------------------------------------------

def owned_containers(client: docker.DockerClient) -> list[Any]:
    """Containers that record an owner (``emulator.ownership``), running or not, of any process."""
    return client.containers.list(all=True, filters={"label": f"{ownership.LABEL_PREFIX}pid"})


def port_holder(client: docker.DockerClient, port: int) -> str | None:
    """Which of our endpoint containers publishes `port`, its owner and the fix; None if none does."""
    for container in client.containers.list(filters={"label": f"{PORT_LABEL}={port}"}):
        owner = Owner.from_labels(container.labels)
        if owner is None:
            continue
        state = owner.state()
        fix = ("`smrl-local clean` removes it" if state == ownership.DEAD
               else f"stop that process (`kill {owner.pid}`), or pick another port")
        return f"by endpoint container {container.name} of {owner.describe()} ({state}): {fix}"
    return None
