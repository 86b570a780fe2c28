"""`rl.<dotted.path>[:TypeName]` overrides of a Coach preset, bound to Coach's step types.

Parsing, checking and the field walk live in `smrl_coach.override_parsing` (no Coach
import, unit-tested on the host); this module gives them `rl_coach.core_types`.
"""
from __future__ import annotations

from typing import Any

from rl_coach import core_types

from smrl_coach.override_parsing import PREFIX, STEP_TYPE_NAMES, Override, OverrideError, StepTypes

__all__ = ["COACH_STEP_TYPES", "PREFIX", "Override", "OverrideError", "apply"]

COACH_STEP_TYPES = StepTypes(
    base=core_types.StepMethod,
    by_name={name: getattr(core_types, name) for name in STEP_TYPE_NAMES},
)


def apply(override: Override, graph_manager: Any) -> str:
    """Sets the overridden field of the preset's `graph_manager`; returns a line saying what changed."""
    return override.apply(graph_manager, COACH_STEP_TYPES)
