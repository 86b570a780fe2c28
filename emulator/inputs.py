"""Checks of what a user passes (ports, step budgets, output folders, preset names), made on
the host before anything starts, each failing with one line that says what to pass instead.

`smrl-local` and the Python API (`train`, `endpoint`, `run`) share them, so that a bad value
fails the same way from both, and never as a traceback from deep inside (an OverflowError
from `bind()`, a NotADirectoryError from `mkdir`, a preset path the container would
resolve). Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from emulator.errors import UserError

MAX_PORT = 65535
# The spot-interruption drill for every job of a Python script or notebook ("30" or "30,45").
INTERRUPT_AFTER_ENV = "SMRL_INTERRUPT_AFTER"


class InputError(UserError, ValueError):
    """A value the user passed that cannot work; the message names it and what to pass instead."""


def check_port(port: int | None, name: str = "port") -> int | None:
    """`port` if it is None (the default port), 0 (a free one, picked when serving) or 1-65535.

    Raises:
        InputError: anything else.
    """
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
        raise InputError(f"{name} {port!r}".strip() + f" is not a port: pass 1-{MAX_PORT}, or 0 to have a free one "
                         "picked.")
    return port


def check_steps(steps: int | None, name: str = "steps") -> int | None:
    """`steps` if it is None (the job's own budget) or a positive whole number.

    Raises:
        InputError: zero, a negative number or not a whole number; a job given no steps would
            train nothing and still export a model.
    """
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise InputError(f"{name} {steps!r}".strip() + " is not a training budget: pass a positive number of "
                         "environment steps (e.g. 2000), or leave it out for the job's own.")
    return steps


def check_output_folder(path: str | os.PathLike, name: str = "output folder") -> Path:
    """`path` as a Path if it is a folder this process can write in, or can be created.

    Raises:
        InputError: it is a file, or it is missing and cannot be created (a file in the way,
            no permission).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{name} {folder} is a file, not a folder. Pass a folder (it is created when missing).")
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{name} {folder} cannot be created: {existing} is a file. Pass another folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "in it" if existing == folder.absolute() else f"in {existing}, where it would be created"
        raise InputError(f"{name} {folder}: no permission to write {where}. Pass a folder you can write to.")
    return folder


def check_preset_name(preset: str, source_dir: str | os.PathLike, name: str = "preset") -> str:
    """`preset` if it names a preset file in `source_dir` (`<source_dir>/<preset>.py`).

    Raises:
        InputError: it is a path (the training container would look for it outside the job's
            code, or run any .py file it finds there), or there is no such file; the message
            lists the presets that are there.
    """
    folder = Path(source_dir)
    available = ", ".join(sorted(p.stem for p in folder.glob("*.py") if "preset" in p.stem.lower())) or "(none)"
    if not preset or "/" in preset or "\\" in preset or preset.startswith("."):
        raise InputError(f"{name} {preset!r} is not a preset name: pass the name of a preset file in {folder} "
                         f"(without .py), not a path. Presets there: {available}.")
    if not (folder / f"{preset.removesuffix('.py')}.py").is_file():
        raise InputError(f"Preset {preset!r} not found: no file {preset.removesuffix('.py')}.py in {folder}. "
                         f"Presets there: {available}.")
    return preset


def preset_and_folder(preset: str, source_dir: str | os.PathLike | None, default_dir: Path) -> tuple[str, Path]:
    """The preset's name and the folder of the job's code: `preset` is the name of a preset
    file in `source_dir` (default: `default_dir`), or the path of a preset file
    (`path/to/preset-mine.py`), whose folder is then the job's code.

    Raises:
        InputError: as ``check_preset_name``; a path that is no file; a path outside
            `source_dir`; a `source_dir` that is not a folder.
    """
    if preset.endswith(".py") and ("/" in preset or "\\" in preset):
        path = Path(preset).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"preset {preset!r}: no such file. Pass the path of a preset .py file, or a preset's "
                             "name with --source-dir.")
        if source_dir is not None and Path(source_dir).resolve() != path.parent:
            raise InputError(f"preset {path} is not in the source dir {Path(source_dir).resolve()}: pass the "
                             "preset's name with --source-dir, or its path alone.")
        return path.stem, path.parent
    folder = Path(source_dir) if source_dir is not None else default_dir
    if not folder.is_dir():
        raise InputError(f"source dir {folder} is not a folder: pass the folder that holds your preset and env module.")
    return check_preset_name(preset, folder), folder


def parse_interrupt_plan(text: str | None, name: str = "--interrupt-after") -> list[float]:
    """"30" or "30,45" -> [30.0, 45.0] (one interruption per value, seconds into its attempt);
    None or "" -> [].

    Raises:
        InputError: a value that is not a positive number of seconds.
    """
    plan = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        try:
            seconds = float(item)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise InputError(f"{name} {text!r}: each value must be a number of seconds > 0, e.g. 30 or 30,45 "
                             "(one interruption per value).")
        plan.append(seconds)
    return plan
