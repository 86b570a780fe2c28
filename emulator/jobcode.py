"""A job's code as the cloud lays it out in /opt/ml/code, and the wheels its requirements.txt
needs (no SDK, no Docker)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from emulator import contract
from emulator.errors import UserError


class JobCodeError(UserError, ValueError):
    """The job's code cannot be packed as the cloud would; the message says what to fix."""


def copy_job_code(source_dir: Path, dependencies: list[str], target: Path, entry_point: str | None = None) -> None:
    """Lays out a job's code in ``target`` as the cloud lays it out in /opt/ml/code.

    The cloud tars ``source_dir``'s content (or, given ``entry_point`` without a
    source_dir, that file alone) with each dependency beside it under its own name.

    Raises:
        JobCodeError: a dependency does not exist, or two land on the same name.
    """
    target.mkdir(parents=True, exist_ok=True)
    if entry_point is None:
        shutil.copytree(source_dir, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(source_dir / entry_point, target / Path(entry_point).name)
    for dependency in dependencies:
        path = Path(dependency).resolve()
        if not path.exists():
            raise JobCodeError(
                f"Dependency {dependency!r} does not exist (looked in {path}). The cloud would fail "
                "to package it too: fix the path in dependencies=[...] (relative paths start at "
                f"the current folder, {Path.cwd()})."
            )
        destination = target / path.name
        if destination.exists():
            raise JobCodeError(
                f"Dependency {dependency!r} lands on {path.name!r}, which source_dir or another "
                f"dependency already holds in {contract.CODE_DIR}. Rename one of them."
            )
        if path.is_dir():
            shutil.copytree(path, destination, symlinks=True)
        else:
            shutil.copy2(path, destination)


_UNRESOLVED = re.compile(
    r"(No matching distribution found for .+|Could not find a version that satisfies the requirement .+)")


def requirements_wheelhouse(requirements: Path, constraints: Path, cache: Path) -> Path:
    """Wheels for everything `requirements` (a job's requirements.txt) needs, made on the host.

    The cloud's training toolkit pip-installs requirements.txt before the entry point;
    local training containers have no network, so the host resolves the file once (with the
    image's own pins as constraints, so nothing the image carries changes version) into a
    folder kept per content under `cache`, and the container installs from that folder
    alone. Sdists are built into wheels here, for this host's CPython, which matches the
    image's minor version.

    Raises:
        JobCodeError: a requirement cannot be resolved; the message names it.
    """
    digest = hashlib.sha256(requirements.read_bytes() + b"\0" + constraints.read_bytes()).hexdigest()[:16]
    wheelhouse = cache / digest
    if (wheelhouse / ".complete").exists():
        return wheelhouse
    partial = cache / f"{digest}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial),
                           "--requirement", str(requirements), "--constraint", str(constraints)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        output = done.stdout + done.stderr
        unresolved = _UNRESOLVED.findall(output)
        reason = unresolved[-1] if unresolved else (output.strip().splitlines() or ["pip wheel failed"])[-1]
        raise JobCodeError(
            f"requirements.txt of the job cannot be resolved: {reason}. Fix or remove that "
            "line (the training image's own packages are pinned and cannot change version; see "
            f"{constraints.name})."
        )
    shutil.rmtree(wheelhouse, ignore_errors=True)
    partial.rename(wheelhouse)
    (wheelhouse / ".complete").touch()
    return wheelhouse
