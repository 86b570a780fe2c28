"""Checkpoints and the spot-interruption drill, end to end (container start-up included).

* The CartPole DQN preset, 10,000 training steps, seed 1: once straight through, once
  interrupted twice by the drill (`emulator.train(interrupt_after=[T/3, T/3])`, T the plain
  run's time: SIGTERM, the job saves a checkpoint and exits, a new container restores it).
  Figures: both wall times and the time lost per interruption; asserted: the interrupted
  run took the very same training episodes and evaluations (no step lost or repeated).
  The two reward curves go to `docs/interruption-drill.png`.
* Checkpoint size and save time per save (from the jobs' "Saved checkpoint" lines, measured
  in the container: the whole training state, replay memory included), DQN and clipped PPO.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "interruption-drill.png"
SAVED = re.compile(r"Saved checkpoint (\d+) at env step ([\d,]+) \((\w+)\): ([\d.]+) MB, (.*?), in ([\d.]+) s")
STEPS = 10_000


def _train(variant: str, output: Path, preset: str = "preset-cartpole-dqn", steps: int = STEPS, **kwargs):
    from emulator.training import train

    return train(preset, steps=steps, hyperparameters={"seed": 1}, output_dir=output, build=False,
                 log=lambda line: None, instance_type="local_gpu" if variant == "gpu" else "local", **kwargs)


def _episodes(log: Path, kind: str) -> list[str]:
    return [re.sub(r".*?Episode=", "Episode=", line) for line in log.read_text().splitlines() if f"{kind}>" in line]


def _rewards(log: Path) -> list[float]:
    return [float(r) for r in re.findall(r"Training>.*?Total reward=([\d.]+)", log.read_text())]


def _saves(log: Path) -> list[tuple[float, float, str]]:
    """(MB, seconds, what the memory line says) of each checkpoint the job saved."""
    return [(float(m[4]), float(m[6]), m[5]) for m in SAVED.finditer(log.read_text())]


@pytest.fixture(scope="module")
def runs() -> dict:
    return {}


def test_dqn_uninterrupted(benchmark, record, training_image, variant, runs, tmp_path_factory):
    result = benchmark.pedantic(_train, args=(variant, tmp_path_factory.mktemp("plain")), rounds=1, iterations=1)
    runs[variant] = result
    record("drill-plain", variant, [result.seconds], training_image, steps=STEPS)
    sizes, seconds, _ = zip(*_saves(result.log_file))
    record("checkpoint-size-dqn", variant, [sizes[-1]], training_image)


def test_dqn_interrupted_twice(benchmark, record, training_image, variant, runs, tmp_path_factory):
    plain = runs.get(variant) or pytest.skip("needs test_dqn_uninterrupted first (same session)")
    third = round(plain.seconds / 3, 1)
    drilled = benchmark.pedantic(_train, args=(variant, tmp_path_factory.mktemp("drill")),
                                 kwargs={"interrupt_after": [third, third]}, rounds=1, iterations=1)
    assert len(drilled.interruptions) == 2, drilled.interruptions
    assert _episodes(drilled.log_file, "Training") == _episodes(plain.log_file, "Training"), "a step lost or repeated"
    assert _episodes(drilled.log_file, "Testing") == _episodes(plain.log_file, "Testing")
    lost = (drilled.seconds - plain.seconds) / 2
    record("drill-twice", variant, [drilled.seconds], training_image, interrupt_after=[third, third],
           stopped_in_s=[i.stopped_in_s for i in drilled.interruptions],
           resumed=[i.resumed for i in drilled.interruptions])
    record("drill-lost", variant, [max(lost, 0.01)], training_image)
    saves = _saves(drilled.log_file)
    record("checkpoint-save-dqn", variant, [s * 1000 for _, s, _ in saves], training_image,
           saves=[f"{mb} MB, {memory}, {s} s" for mb, s, memory in saves])
    if variant == "cpu":
        _plot(plain, drilled, FIGURE)


def test_ppo_checkpoints(benchmark, record, training_image, variant, tmp_path_factory):
    result = benchmark.pedantic(_train, args=(variant, tmp_path_factory.mktemp("ppo")),
                                kwargs={"preset": "preset-cartpole-clippedppo", "steps": 20_000,
                                        "interrupt_after": [6]}, rounds=1, iterations=1)
    saves = _saves(result.log_file)
    record("checkpoint-save-ppo", variant, [s * 1000 for _, s, _ in saves], training_image,
           saves=[f"{mb} MB, {memory}, {s} s" for mb, s, memory in saves])
    record("checkpoint-size-ppo", variant, [statistics.median(mb for mb, _, _ in saves)], training_image)


def _plot(plain, drilled, path: Path) -> None:
    figure = Figure(figsize=(9, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(_rewards(plain.log_file), linewidth=2.5, color="tab:blue", alpha=0.5, label="uninterrupted")
    axes.plot(_rewards(drilled.log_file), linewidth=1, color="tab:red", linestyle="--",
              label="interrupted twice, resumed from checkpoints")
    text = drilled.log_file.read_text()
    for episode in re.findall(r"Resumed from checkpoint \S+ in \S+ at env step [\d,]+, episode ([\d,]+)", text):
        x = int(episode.replace(",", "")) - _first_episode(plain.log_file)
        axes.axvline(x, color="grey", linestyle=":")
        axes.text(x + 0.8, 100, "SIGTERM, restart, resume", rotation=90, fontsize=8, color="dimgrey", va="center")
    axes.set_xlabel("training episode")
    axes.set_ylabel("total reward")
    axes.set_title(f"CartPole DQN, {STEPS:,} steps, seed 1: {plain.seconds:.1f} s straight, "
                   f"{drilled.seconds:.1f} s with two interruptions")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")


def _first_episode(log: Path) -> int:
    first = re.search(r"Training>.*?Episode=(\d+)", log.read_text())
    return int(first.group(1)) if first else 0
