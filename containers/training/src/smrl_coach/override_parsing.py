"""`rl.<dotted.path>[:TypeName]` hyperparameters, parsed, checked and applied without Coach.

Example: `rl.agent_params.algorithm.discount=0.95`,
`rl.improve_steps:TrainingSteps=5000`, `rl.agent_params.network_wrappers.main.learning_rate=0.001`.
A field that does not exist is an error (a typo must not be silently ignored), and so is
a type suffix that is not one of Coach's step types.

Pure (standard library and the contract only), so the host's unit tests import it: the
Coach step classes come in as a `StepTypes` argument; `smrl_coach.overrides` binds Coach's.
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import smrl_contract as contract
from smrl_coach.errors import LauncherError

PREFIX = contract.COACH_OVERRIDE_PREFIX
# Only these Coach types (rl_coach.core_types) may be built from a hyperparameter; never an arbitrary name.
STEP_TYPE_NAMES = ("EnvironmentSteps", "EnvironmentEpisodes", "TrainingSteps", "Frames", "Time")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class OverrideError(LauncherError):
    """An `rl.*` hyperparameter that cannot be applied to the preset."""


@dataclass(frozen=True)
class StepTypes:
    """Coach's step budget classes: `base` (StepMethod, built as `cls(num_steps)`, read as
    `.num_steps`) and, by name, those of STEP_TYPE_NAMES."""

    base: type
    by_name: Mapping[str, type]


@dataclass(frozen=True)
class Override:
    name: str
    path: tuple[str, ...]
    type_name: str | None
    raw_value: Any

    @classmethod
    def parse(cls, name: str, raw_value: Any) -> Override:
        if not name.startswith(PREFIX):
            raise OverrideError(f"Hyperparameter {name!r} is not an override: overrides start with {PREFIX!r}.")
        dotted, sep, type_name = name[len(PREFIX):].partition(":")
        if sep and type_name not in STEP_TYPE_NAMES:
            raise OverrideError(
                f"Hyperparameter {name!r}: unknown type suffix ':{type_name}'. "
                f"Use one of {', '.join(':' + t for t in STEP_TYPE_NAMES)}, or no suffix."
            )
        path = tuple(dotted.split("."))
        bad = [part for part in path if not _FIELD.match(part) or part.startswith("__")]
        if bad:
            raise OverrideError(
                f"Hyperparameter {name!r}: {bad[0]!r} is not a field name. "
                f"Write {PREFIX}<field>.<field>..., e.g. {PREFIX}agent_params.algorithm.discount."
            )
        return cls(name=name, path=path, type_name=type_name or None, raw_value=raw_value)

    def apply(self, graph_manager: Any, step_types: StepTypes) -> str:
        """Sets the field on `graph_manager`; returns a line saying what changed."""
        parent = graph_manager
        for depth, part in enumerate(self.path[:-1]):
            parent = _child(parent, part, self.name, self.path[: depth + 1])
        field = self.path[-1]
        old = _child(parent, field, self.name, self.path)
        new = _convert(autotype(self.raw_value), old, self.type_name, self.name, step_types)
        if isinstance(parent, dict):
            parent[field] = new
        else:
            setattr(parent, field, new)
        return f"{self.name} = {_describe(new, step_types)} (preset had {_describe(old, step_types)})"


def autotype(value: Any) -> Any:
    """Hyperparameters arrive as text on the command line; give them back their JSON type."""
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(value)
    except ValueError:
        return value


def _fields(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [str(k) for k in obj]
    return sorted(k for k in vars(obj) if not k.startswith("_")) if hasattr(obj, "__dict__") else []


def _child(obj: Any, part: str, name: str, path: tuple[str, ...]) -> Any:
    if isinstance(obj, dict) and part in obj:
        return obj[part]
    if not isinstance(obj, dict) and hasattr(obj, "__dict__") and part in vars(obj):
        return vars(obj)[part]
    known = _fields(obj)
    close = difflib.get_close_matches(part, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = ".".join(path[:-1]) or "the preset's graph manager"
    raise OverrideError(
        f"Hyperparameter {name!r}: {type(obj).__name__} at {where} has no field {part!r}.{hint} "
        f"Its fields: {', '.join(known[:30]) or '(none)'}."
    )


def _convert(value: Any, old: Any, type_name: str | None, name: str, step_types: StepTypes) -> Any:
    if type_name:
        return step_types.by_name[type_name](_int_steps(value, name))
    # A step budget overridden by a plain number keeps the preset's step type.
    if isinstance(old, step_types.base):
        return type(old)(_int_steps(value, name))
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _int_steps(value: Any, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OverrideError(f"Hyperparameter {name!r}: a step count must be a number, got {value!r}.")
    return int(value) if float(value).is_integer() else value


def _describe(value: Any, step_types: StepTypes) -> str:
    if isinstance(value, step_types.base):
        return f"{type(value).__name__}({value.num_steps})"
    return repr(value)
