"""Where the package finds its files: the images' build contexts, the presets, the work folder.

A checkout has them beside the package (``containers/``, ``presets/``); a wheel carries a
copy inside the package (``emulator/_bundled/``, see pyproject.toml); ``SMRL_SOURCE_DIR``
points at another checkout. Caches and job files go to the work folder, ``SMRL_WORK_DIR``
or ``./.smrl``. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from emulator.errors import UserError

SOURCE_DIR_ENV = "SMRL_SOURCE_DIR"
WORK_DIR_ENV = "SMRL_WORK_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent
_CANDIDATES = (PACKAGE_DIR / "_bundled", PACKAGE_DIR.parent)
# The preset `make local-train` trains: CartPole with DQN, in presets/.
DEFAULT_PRESET = "preset-cartpole-dqn"


class ResourceError(UserError):
    """The build contexts or presets are not where the package looks for them."""


def _holds_resources(folder: Path) -> bool:
    return (folder / "containers" / "training" / "Dockerfile").is_file() and (folder / "presets").is_dir()


def source_dir() -> Path:
    """The folder holding ``containers/`` and ``presets/``.

    Raises:
        ResourceError: none of ``$SMRL_SOURCE_DIR``, the wheel's copy and the checkout holds them.
    """
    given = os.environ.get(SOURCE_DIR_ENV)
    candidates = (Path(given).expanduser().resolve(),) if given else _CANDIDATES
    for folder in candidates:
        if _holds_resources(folder):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise ResourceError(
        f"The images' build contexts and the presets are not there (looked in {looked}). "
        f"Reinstall sagemaker-rl-local, or set {SOURCE_DIR_ENV} to a checkout of it (the folder "
        "holding containers/ and presets/)."
    )


def containers_dir() -> Path:
    """The images' build contexts, one folder per image kind."""
    return source_dir() / "containers"


def presets_dir() -> Path:
    """The Coach presets and the launcher `smrl-local train` runs them with."""
    return source_dir() / "presets"


def work_dir() -> Path:
    """Build caches and job files: ``$SMRL_WORK_DIR``, else ``.smrl`` in the current folder."""
    return Path(os.environ.get(WORK_DIR_ENV) or Path.cwd() / ".smrl").resolve()
