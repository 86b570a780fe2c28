"""Coach's training throughput inside the training image: a preset (CartPole DQN by default).

    python coach_train.py --presets DIR [--preset NAME] [--steps N] [--heatup H] [--seed S]
                          [--export model.tar.gz]

Runs the preset through the image's own launcher (SageMakerCoachPresetLauncher, the code
path of every training job) with a fixed budget of N training-phase env steps after H
heat-up steps. The graph manager's heatup() and train_and_act() are timed, so the
figures are measured after heat-up and exclude evaluation episodes, checkpoints and
start-up. Gradient steps are the optimiser's updates of the online network (one per
env step for the DQN preset; for clipped PPO, epochs x batches per 2,048-step phase).
Without --steps/--heatup the preset's own schedule runs. The evaluation episodes' rewards
are reported with the env steps at which they ran (learning curves, for seeded runs). With --export, the trained policy is exported as a job would
(save_model=1) and packed like SageMaker's model.tar.gz, for the rollout and serving
benchmarks.
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from common import emit, environment_info


class Phases:
    """Wall time and counters of the heat-up and training phases of one graph manager."""

    def __init__(self) -> None:
        self.heatup_seconds = self.train_seconds = 0.0
        self.heatup_env_steps = self.train_env_steps = self.gradient_steps = 0

    def instrument(self, graph_manager: Any) -> None:
        heatup, train_and_act = graph_manager.heatup, graph_manager.train_and_act

        def timed_heatup(steps: Any) -> None:
            agent = _agent(graph_manager)
            before, started = agent.total_steps_counter, time.perf_counter()
            heatup(steps)
            self.heatup_seconds += time.perf_counter() - started
            self.heatup_env_steps += agent.total_steps_counter - before

        def timed_train_and_act(steps: Any) -> None:
            agent = _agent(graph_manager)
            env_before, grad_before = agent.total_steps_counter, _updates(agent)
            started = time.perf_counter()
            train_and_act(steps)
            self.train_seconds += time.perf_counter() - started
            self.train_env_steps += agent.total_steps_counter - env_before
            self.gradient_steps += _updates(agent) - grad_before

        graph_manager.heatup, graph_manager.train_and_act = timed_heatup, timed_train_and_act


def _agent(graph_manager: Any) -> Any:
    return next(iter(graph_manager.level_managers[0].agents.values()))


def capture_evaluations() -> list[dict]:
    """The evaluation episodes Coach reports ("Testing>" lines), as they are logged."""
    from rl_coach.logger import screen

    evaluations: list[dict] = []
    log_dict = screen.log_dict

    def logged(data: Any, prefix: str = "") -> None:
        if prefix == "Testing" and "Total reward" in data:
            evaluations.append({"episode": data.get("Episode"), "env_steps": data.get("Steps"),
                                "reward": float(data["Total reward"])})
        log_dict(data, prefix=prefix)

    screen.log_dict = logged
    return evaluations


def _updates(agent: Any) -> int:
    """Optimiser updates of the online network so far (MXNet's Optimizer.num_update)."""
    return agent.networks["main"].online_network.trainer._optimizer.num_update


def launcher_class(presets: Path, phases: Phases) -> type:
    from smrl_coach.launcher import SageMakerCoachPresetLauncher

    class BenchLauncher(SageMakerCoachPresetLauncher):
        def preset_dir(self) -> Path:
            return presets  # the repository's presets/, mounted read-only

        def get_graph_manager_from_args(self, args: argparse.Namespace) -> Any:
            graph_manager = super().get_graph_manager_from_args(args)
            phases.instrument(graph_manager)
            return graph_manager

    return BenchLauncher


def pack_model(model_dir: Path, archive: Path) -> None:
    """model.tar.gz as SageMaker makes it: the files of /opt/ml/model at the archive's root."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", type=Path, required=True)
    parser.add_argument("--preset", default="preset-cartpole-dqn")
    parser.add_argument("--steps", type=int, default=None, help="training-phase env steps (default: the preset's)")
    parser.add_argument("--heatup", type=int, default=None, help="heat-up env steps (default: the preset's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--export", type=Path, default=None, help="write the trained policy as this model.tar.gz")
    args = parser.parse_args()

    # The launcher reads SageMaker hyperparameters from argv, as in a training job.
    sys.argv = [sys.argv[0], "--RLCOACH_PRESET", args.preset, "--save_model", "1" if args.export else "0"]
    if args.steps is not None:
        sys.argv += ["--rl.improve_steps:EnvironmentSteps", str(args.steps)]
    if args.heatup is not None:
        sys.argv += ["--rl.heatup_steps:EnvironmentSteps", str(args.heatup)]
    if args.seed is not None:
        sys.argv += ["--seed", str(args.seed)]
    os.environ.setdefault("TRAINING_JOB_NAME", "smrl-bench")
    import smrl_contract as contract

    # A job gets these folders from the platform (SageMaker, or local mode's mounts).
    for folder in (contract.OUTPUT_DATA_DIR, contract.OUTPUT_INTERMEDIATE_DIR, contract.MODEL_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    info = environment_info()  # before Coach changes anything (below)
    phases = Phases()
    evaluations = capture_evaluations()
    launcher = launcher_class(args.presets, phases)()
    started = time.perf_counter()
    launcher.launch()
    total_seconds = time.perf_counter() - started
    if args.export:
        launcher.save_policy()
        pack_model(contract.MODEL_DIR, args.export)
    if not phases.train_seconds or not phases.gradient_steps:
        raise SystemExit("Coach did not train: no train_and_act phase or no gradient step was timed")
    emit({
        **info,
        # Coach's launcher sets OMP_NUM_THREADS=1 in-process (rl_coach/coach.py), after MXNet loaded.
        "omp_num_threads_after_launch": os.environ.get("OMP_NUM_THREADS"),
        "preset": args.preset,
        "heatup_env_steps": phases.heatup_env_steps,
        "heatup_env_steps_per_s": phases.heatup_env_steps / phases.heatup_seconds if phases.heatup_env_steps else None,
        "train_env_steps": phases.train_env_steps,
        "gradient_steps": phases.gradient_steps,
        "train_seconds": phases.train_seconds,
        "train_env_steps_per_s": phases.train_env_steps / phases.train_seconds,
        "gradient_steps_per_s": phases.gradient_steps / phases.train_seconds,
        "ms_per_gradient_step": 1000.0 * phases.train_seconds / phases.gradient_steps,
        "launch_seconds": total_seconds,
        "exported": str(args.export) if args.export else None,
        "seed": args.seed,
        "evaluations": evaluations,
    })


if __name__ == "__main__":
    main()
