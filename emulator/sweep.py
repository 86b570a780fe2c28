"""What processes that died left behind, removed; what runs now, and whose it is.

A process killed with SIGKILL (or a machine that lost power) runs no cleanup: its
containers run on or stay as exited containers, its temp folders (the trained model among
them) stay under the work folder, its S3 server and kernels run on. Everything the emulator
creates records its owner (``emulator.ownership``); ``sweep`` removes what a *dead* owner
left and never what a live owner holds, and ``running`` lists it all for ``smrl-local ps``.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from emulator import ownership
from emulator.checkpoint_sync import CHECKPOINTS_ROOT, rescue
from emulator.containers import owned_containers, remove_tree
from emulator.images import IMAGES, VARIANTS
from emulator.ownership import DEAD, KIND_LABEL, PORT_LABEL, Leftover, Owner, Server
from emulator.progress import Log

logger = logging.getLogger(__name__)
# Where, under the work folder, the emulator keeps folders of one job or endpoint.
FOLDER_ROOTS = ("containers", "code", "endpoints", CHECKPOINTS_ROOT)


def folder_roots(work_dir: Path) -> list[Path]:
    """Where owned folders are: under the work folder, and the system's temp folder
    (pre-flight's smoke runs)."""
    return [*(work_dir / name for name in FOLDER_ROOTS), Path(tempfile.gettempdir())]


def servers_dir(work_dir: Path) -> Path:
    """Pid files of the servers (local S3, notebook kernels) the emulator started."""
    return work_dir / ownership.SERVERS_DIR


def sweep(client: docker.DockerClient, work_dir: Path, log: Log = print) -> list[Leftover]:
    """Removes what dead owners left: containers (any work folder's), then temp folders and
    servers of `work_dir`, then networks no container uses; says so in one line per owner.

    Returns:
        What was removed.
    """
    removed = [*_sweep_containers(client), *_sweep_folders(client, folder_roots(work_dir), log),
               *_sweep_servers(work_dir), *_sweep_networks(client)]
    for line in ownership.summary(removed):
        log(line)
    return removed


def _sweep_containers(client: docker.DockerClient) -> list[Leftover]:
    removed = []
    for container in owned_containers(client):
        thing = Leftover("container", str(container.name), Owner.from_labels(container.labels))
        if ownership.abandoned([thing]):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                continue  # its owner's cleanup, or another sweep, was first
            removed.append(thing)
    return removed


def _sweep_folders(client: docker.DockerClient | None, roots: list[Path], log: Log = print) -> list[Leftover]:
    removed = []
    for folder, owner in ownership.owned_folders(roots):
        thing = Leftover("temp folder", str(folder), owner)
        if ownership.abandoned([thing]):
            if folder.parent.name == CHECKPOINTS_ROOT:  # nothing lost: what was not synced yet goes first
                rescued = rescue(folder)
                if rescued:
                    log(rescued)
            _remove_folder(client, folder)
            removed.append(thing)
    return removed


def _sweep_servers(work_dir: Path) -> list[Leftover]:
    removed = []
    for server in ownership.read_pid_files(servers_dir(work_dir)):
        if server.owner.state() == DEAD:
            if server.running():
                server.stop()
                removed.append(Leftover("server", server.name, server.owner))
            server.pid_file.unlink(missing_ok=True)
    return removed


def _sweep_networks(client: docker.DockerClient) -> list[Leftover]:
    removed = []
    for network in client.networks.list(filters={"label": f"{ownership.LABEL_PREFIX}pid"}):
        thing = Leftover("network", str(network.name), Owner.from_labels(network.attrs.get("Labels")))
        if not ownership.abandoned([thing]):
            continue
        # The networks have fixed names and are shared: one whose creator died may serve a
        # live process's job; only an unused one goes. (A live process between creating its
        # compose file and `compose up` holds no container yet; that window, about a second,
        # is the same one in which two processes' own cleanups already race.)
        network.reload()
        if network.attrs.get("Containers"):
            continue
        try:
            network.remove()
        except docker.errors.APIError:
            continue  # attached meanwhile, or already gone
        removed.append(thing)
    return removed


def _remove_folder(client: docker.DockerClient | None, folder: Path) -> None:
    """Deletes `folder`, with the files containers wrote as root through one of our images."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except PermissionError:
        image = next((spec.tag(variant) for spec in IMAGES.values() for variant in VARIANTS
                      if client is not None and _image_present(client, spec.tag(variant))), None)
        if client is None or image is None:
            logger.warning("Could not delete %s (files written as root). Delete it with `sudo rm -rf %s`.",
                           folder, folder)
            return
        remove_tree(folder, client, image)
    if not folder.exists():
        ownership.release_folder(folder)


def _image_present(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


# -- what runs now ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Running:
    """One row of ``smrl-local ps``."""

    kind: str
    name: str
    owner: Owner
    state: str
    started: str
    status: str
    port: int | None = None


def running(client: docker.DockerClient, work_dir: Path) -> list[Running]:
    """Containers of every owner on this engine, and the servers started from `work_dir`."""
    rows = []
    for container in owned_containers(client):
        owner = Owner.from_labels(container.labels)
        if owner is None:
            continue
        labels = container.labels or {}
        port = labels.get(PORT_LABEL, "")
        rows.append(Running(labels.get(KIND_LABEL, "container"), container.name, owner, owner.state(),
                            _started(container.attrs), container.status, int(port) if port.isdigit() else None))
    for server in ownership.read_pid_files(servers_dir(work_dir)):
        rows.append(_server_row(server))
    return rows


def _server_row(server: Server) -> Running:
    started = datetime.datetime.fromtimestamp(server.pid_file.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    return Running(server.name, f"pid {server.pid}", server.owner, server.owner.state(), started,
                   "running" if server.running() else "gone", server.port)


def _started(attrs: dict[str, Any]) -> str:
    """When the container started (or was created), local time to the second."""
    text = (attrs.get("State", {}).get("StartedAt") or "").removeprefix("0001-01-01T00:00:00Z") \
        or attrs.get("Created", "")
    try:
        moment = datetime.datetime.fromisoformat(text[:19] + "+00:00")
    except ValueError:
        return "?"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_running(rows: list[Running]) -> str:
    """``smrl-local ps``'s table."""
    if not rows:
        return "nothing of sagemaker-rl-local is running"
    table = [("KIND", "NAME", "OWNER", "OWNER ALIVE", "STARTED", "STATUS", "PORT")]
    alive = {ownership.ALIVE: "yes", DEAD: "no", ownership.ELSEWHERE: "other host"}
    table += [(row.kind, row.name, row.owner.describe(), alive[row.state], row.started, row.status,
               "" if row.port is None else str(row.port)) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in table)
