"""A corridor of `length` cells: step right (action 1) to reach the end within `max_steps`.
Written for gymnasium (reset -> (obs, info), step -> 5 values)."""
import gymnasium
import numpy as np


class Corridor(gymnasium.Env):
    def __init__(self, length=8, max_steps=50):
        self.length, self.max_steps = length, max_steps
        self.observation_space = gymnasium.spaces.Box(low=0.0, high=1.0, shape=(1,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.position, self.steps = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.steps = 0, 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.position = max(0, self.position + (1 if action == 1 else -1))
        self.steps += 1
        arrived = self.position >= self.length
        observation = np.array([self.position / self.length], dtype=np.float32)
        return observation, (1.0 if arrived else -0.1), arrived, self.steps >= self.max_steps, {}
