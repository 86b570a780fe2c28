"""Lets Coach (written for gym 0.12's API) run environments written for gymnasium.

Coach expects `reset() -> obs`, `step() -> (obs, reward, done, info)`, `seed()`,
`render(mode=...)` and gym's own space classes. A gymnasium env has `reset() -> (obs,
info)`, a 5-tuple `step()`, no `seed()`, and its own spaces (with numpy integers where
Coach wants ints). `as_gym_env` wraps such an env so Coach sees the old API; envs
written for the old API pass through untouched.
"""
from __future__ import annotations

from typing import Any

import gym
import numpy as np

try:
    import gymnasium
except ImportError:  # gymnasium is optional: old-API envs need nothing from it
    gymnasium = None


def is_gymnasium_env(env: Any) -> bool:
    return gymnasium is not None and isinstance(env, gymnasium.Env)


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """`gym.make`, falling back to gymnasium's registry for ids only gymnasium knows."""
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error:
        if gymnasium is None:
            raise
        try:
            return as_gym_env(gymnasium.make(env_id, **kwargs))
        except gymnasium.error.Error:
            pass
        raise


def as_gym_env(env: Any) -> Any:
    return GymnasiumToGym(env) if is_gymnasium_env(env) else env


def convert_space(space: Any) -> gym.Space:
    """A gymnasium space as the equivalent gym 0.12 space (plain ints, float32 bounds kept)."""
    spaces = gymnasium.spaces
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"Coach needs Discrete spaces that start at 0; this one starts at {space.start}.")
        return gym.spaces.Discrete(int(space.n))
    if isinstance(space, spaces.Box):
        return gym.spaces.Box(low=space.low, high=space.high, dtype=space.dtype)
    if isinstance(space, spaces.MultiDiscrete):
        return gym.spaces.MultiDiscrete([int(n) for n in np.asarray(space.nvec).ravel()])
    if isinstance(space, spaces.MultiBinary):
        return gym.spaces.MultiBinary(int(np.prod(space.n)))
    if isinstance(space, spaces.Tuple):
        return gym.spaces.Tuple(tuple(convert_space(s) for s in space.spaces))
    if isinstance(space, spaces.Dict):
        return gym.spaces.Dict({key: convert_space(s) for key, s in space.spaces.items()})
    raise TypeError(f"Coach cannot use gymnasium space {space!r}: use Discrete, Box, MultiDiscrete, Tuple or Dict.")


class GymnasiumToGym(gym.Env):
    """The old gym API over a gymnasium env."""

    def __init__(self, env: Any):
        self.env = env
        self.observation_space = convert_space(env.observation_space)
        self.action_space = convert_space(env.action_space)
        self.reward_range = getattr(env, "reward_range", (-float("inf"), float("inf")))
        self.metadata = dict(getattr(env, "metadata", {}) or {})
        self.spec = getattr(env, "spec", None)
        self._next_seed: int | None = None

    @property
    def unwrapped(self) -> Any:
        return self.env.unwrapped

    def seed(self, seed: int | None = None) -> list[int | None]:
        # gymnasium seeds through reset(); keep it for the next one.
        self._next_seed = seed
        self.action_space.seed(seed)
        return [seed]

    def reset(self) -> Any:
        seed, self._next_seed = self._next_seed, None
        observation, _info = self.env.reset(seed=seed)
        return observation

    def step(self, action: Any) -> tuple[Any, float, bool, dict]:
        if isinstance(self.action_space, gym.spaces.Discrete):
            action = int(action)
        observation, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        if truncated and not terminated:
            info["TimeLimit.truncated"] = True
        return observation, float(reward), bool(terminated or truncated), info

    def render(self, mode: str = "human") -> Any:
        # gymnasium fixes the render mode when the env is made; the mode asked for here is ignored.
        return self.env.render()

    def close(self) -> None:
        self.env.close()
