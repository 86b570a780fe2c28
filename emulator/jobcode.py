"""A job's code as the cloud lays it out in /opt/ml/code (no SDK, no Docker)."""

from __future__ import annotations

import shutil
from pathlib import Path


class JobCodeError(ValueError):
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
                "dependency already holds in /opt/ml/code. Rename one of them."
            )
        if path.is_dir():
            shutil.copytree(path, destination, symlinks=True)
        else:
            shutil.copy2(path, destination)
