"""Checks a user's environment before Coach trains on it, as gymnasium's env checker does:
one property per check, each with a message naming the env class and the mismatch.

Coach builds its networks from the declared spaces and trusts every observation to match:
an env whose `step()` returns shape (3,) under an observation space of (2,) runs 200 heat-up
steps, then fails inside MXNet with a shape error. Here the first `reset()` and `step()`
are checked against the spaces before anything trains, and a `level` string whose module
is missing names the module, the folder searched and the modules that are there.

Pure: duck-typed spaces (gym 0.12's and gymnasium's alike) and numpy, so the host's unit
tests run it with gymnasium.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FIX = "Fix the env: what reset() and step() return must match observation_space and the API Coach uses"


class EnvironmentCheckError(ValueError):
    """The environment does not do what its spaces and the API promise."""


class LevelNotFoundError(ImportError):
    """The preset's `level` names a module or class that is not there."""


def _describe(env: Any) -> str:
    unwrapped = getattr(env, "unwrapped", env)
    return f"{type(unwrapped).__name__} ({type(unwrapped).__module__})"


def observation_problem(observation: Any, space: Any, where: str) -> str | None:
    """Why `observation` (returned by `where`) does not fit `space`, or None when it does."""
    shape = getattr(space, "shape", None)
    if hasattr(space, "n") and not shape:  # Discrete
        if not isinstance(observation, numbers.Integral | np.integer) or not 0 <= int(observation) < int(space.n):
            return f"{where} returned the observation {observation!r}, but observation_space is Discrete({space.n})"
        return None
    if shape is None:
        return None  # Tuple/Dict spaces: Coach's own code reports those
    try:
        array = np.asarray(observation, dtype=np.float64)
    except (TypeError, ValueError):
        return f"{where} returned an observation of type {type(observation).__name__}, not numbers of shape {shape}"
    if array.shape != tuple(shape):
        return f"{where} returned an observation of shape {array.shape}, but observation_space has shape {tuple(shape)}"
    if not np.all(np.isfinite(array)):
        return f"{where} returned an observation with NaN or infinite values: {observation!r}"
    return None


def bounds_warning(observation: Any, space: Any, where: str) -> str | None:
    """A warning when a Box observation lies outside the space's bounds (Coach trains on, but
    normalisation filters and the served model see values the space did not promise)."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None:
        return None
    array = np.asarray(observation, dtype=np.float64)
    if array.shape == np.shape(low) and (np.any(array < low) or np.any(array > high)):
        return f"{where} returned an observation outside observation_space's bounds: {observation!r}"
    return None


def step_problems(result: Any, space: Any) -> list[str]:
    """What is wrong with what `step()` returned, for Coach's API (obs, reward, done, info)."""
    if not isinstance(result, tuple):
        return [f"step() returned a {type(result).__name__}, not a tuple (observation, reward, done, info)"]
    if len(result) == 5:
        return ["step() returned 5 values (gymnasium's observation, reward, terminated, truncated, info) from an "
                "env that is not a gymnasium.Env: subclass gymnasium.Env, or return (observation, reward, done, info)"]
    if len(result) != 4:
        return [f"step() returned {len(result)} values; Coach needs (observation, reward, done, info)"]
    observation, reward, done, info = result
    problems = [p for p in [observation_problem(observation, space, "step()")] if p]
    if not isinstance(reward, numbers.Real | np.number | np.ndarray) or np.size(reward) != 1 \
            or not np.issubdtype(np.asarray(reward).dtype, np.number):
        problems.append(f"step() returned the reward {reward!r} ({type(reward).__name__}), not a number")
    if not isinstance(done, bool | np.bool_) and done not in (0, 1):
        problems.append(f"step() returned done={done!r} ({type(done).__name__}), not a bool")
    if not isinstance(info, dict):
        problems.append(f"step() returned info of type {type(info).__name__}, not a dict")
    return problems


def check_first_steps(env: Any, warn: Callable[[str], None] = print) -> None:
    """Resets `env` and takes one random action, checking both against its spaces.

    Raises:
        EnvironmentCheckError: naming the env class and every mismatch found.
    """
    space = env.observation_space
    observation = env.reset()
    if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
        problems = ["reset() returned (observation, info), gymnasium's API, from an env that is not a "
                    "gymnasium.Env: subclass gymnasium.Env, or return the observation alone"]
    else:
        problems = [p for p in [observation_problem(observation, space, "reset()")] if p]
        if not problems:
            warning = bounds_warning(observation, space, "reset()")
            if warning:
                warn(f"smrl-coach warning: {_describe(env)}: {warning}")
            problems = step_problems(env.step(env.action_space.sample()), space)
    if problems:
        raise EnvironmentCheckError(f"{_describe(env)}: " + "; ".join(problems) + f". {FIX}.")


def python_modules(folder: Path) -> list[str]:
    """The modules importable from `folder`: its .py files and its packages."""
    if not folder.is_dir():
        return []
    files = {p.stem for p in folder.glob("*.py")}
    packages = {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return sorted(name for name in files | packages if name.isidentifier())


def import_level(level: str, importer: Callable[[str], Any], code_dir: Path | None = None) -> Any:
    """The env class a `module:Class` level names, through Coach's `importer`; a
    LevelNotFoundError naming what is missing and what is there instead (in `code_dir`,
    by default the working folder, which is /opt/ml/code in a job)."""
    module, _, name = level.partition(":")
    code_dir = code_dir or Path.cwd()  # the job runs in /opt/ml/code
    try:
        return importer(level)
    except ModuleNotFoundError as error:
        if error.name is None or not module.startswith(error.name.split(".")[0]):
            raise  # the env's module itself imports something missing: its own traceback tells
        there = ", ".join(python_modules(code_dir)) or "(none)"
        raise LevelNotFoundError(
            f"level {level!r}: no module {error.name!r} in {code_dir} (the job's code, searched first) or the image. "
            f"Modules there: {there}. Fix the level string, or add the module to source_dir or dependencies."
        ) from None
    except AttributeError:
        raise LevelNotFoundError(f"level {level!r}: module {module!r} has no {name!r}. Fix the class name in the "
                                 "level string.") from None
