"""Runs a Coach preset as a SageMaker RL Coach job.

A user entry point is usually three lines::

    from smrl_coach.launcher import SageMakerCoachPresetLauncher

    class MyLauncher(SageMakerCoachPresetLauncher):
        def default_preset_name(self):
            return "preset-cartpole-dqn"

    if __name__ == "__main__":
        MyLauncher.train_main()

Checkpoints go to /opt/ml/checkpoints (SageMaker's checkpoint_local_path, restored from and
synced to checkpoint_s3_uri) with the whole training state (smrl_coach.training_state). A
job starts from the newest checkpoint there (a restart, e.g. after a spot interruption),
else from one in a `checkpoint` input channel (another job's), else from scratch. SIGTERM
stops training at the end of the episode with a checkpoint. When the job ends, its last
checkpoint is also copied to /opt/ml/output/data/checkpoint, into output.tar.gz.

Hyperparameters arrive as `--name value` pairs (the SageMaker training contract):
`RLCOACH_PRESET` (a .py file next to the entry point that defines `graph_manager`),
`save_model` (1: export the policy to /opt/ml/model), `seed`, and any number of
`rl.<field.path>[:TypeName]` overrides of the preset (see `smrl_coach.override_parsing`).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from rl_coach import logger as coach_logger
from rl_coach.base_parameters import Frameworks
from rl_coach.coach import CoachLauncher
from rl_coach.logger import screen

import smrl_contract as contract
from smrl_coach import model_export, overrides, training_state
from smrl_coach.errors import LauncherError
from smrl_coach.overrides import Override
from smrl_training.outcome import write_failure

CHECKPOINT_SAVE_SECS = 60
# Coach writes the newest checkpoint's name here once all its files are saved.
COACH_CHECKPOINT_POINTER = ".coach_checkpoint"


class PresetError(LauncherError):
    """The preset named by RLCOACH_PRESET cannot be found or loaded."""


class SageMakerCoachPresetLauncher(CoachLauncher):
    """Coach's launcher, configured by SageMaker hyperparameters instead of Coach's CLI."""

    def __init__(self) -> None:
        super().__init__()
        self.overrides: list[Override] = []
        self.graph_manager: Any = None

    # -- what subclasses customise -------------------------------------------------
    def default_preset_name(self) -> str:
        """The preset used when the job sets no RLCOACH_PRESET hyperparameter."""
        raise PresetError(
            f"No preset: set the hyperparameter {contract.COACH_PRESET_PARAM} (e.g. 'preset-cartpole-dqn'), "
            "or override default_preset_name() in your launcher subclass."
        )

    def map_hyperparameter(self, name: str, value: str) -> None:
        """Handles one hyperparameter that is not a launcher option. Default: `rl.*` overrides."""
        if name.startswith(contract.COACH_OVERRIDE_PREFIX):
            self.overrides.append(Override.parse(name, value))
        else:
            raise LauncherError(
                f"Unknown hyperparameter {name!r}. This launcher takes {contract.COACH_PRESET_PARAM}, "
                f"{contract.SAVE_MODEL_PARAM}, seed and {contract.COACH_OVERRIDE_PREFIX}<field> overrides; "
                "handle others by overriding map_hyperparameter()."
            )

    # -- SageMaker side ------------------------------------------------------------
    def sagemaker_argparser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(add_help=False)
        preset = contract.COACH_PRESET_PARAM
        parser.add_argument(f"--{preset}", f"--{preset.lower()}", dest="preset", default=None)
        parser.add_argument(f"--{contract.SAVE_MODEL_PARAM}", dest="save_model", type=int, default=0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("-n", "--num_workers", type=int, default=1)
        return parser

    def get_config_args(
        self, parser: argparse.ArgumentParser, arguments: list[str] | None = None
    ) -> argparse.Namespace:
        args = parser.parse_args([])  # Coach's defaults for every option it reads later
        sage_args, rest = self.sagemaker_argparser().parse_known_args(arguments)
        if len(rest) % 2:
            raise LauncherError(f"Hyperparameter arguments must come in --name value pairs, got {rest}.")
        for flag, value in zip(rest[::2], rest[1::2]):
            if not flag.startswith("--"):
                raise LauncherError(f"Expected a --name before {flag!r} in the hyperparameter arguments.")
            self.map_hyperparameter(flag[2:], value)

        # Colours off: the SDK's Coach metric definitions match only the plain log format.
        screen.set_use_colors(False)
        backend = os.environ.get("COACH_BACKEND", "mxnet")
        args.framework = Frameworks[backend]
        args.preset = sage_args.preset or self.default_preset_name()
        args.seed = sage_args.seed
        args.num_workers = sage_args.num_workers
        args.experiment_name = os.environ.get("TRAINING_JOB_NAME", "sagemaker-experiment")
        args.experiment_path = str(contract.OUTPUT_INTERMEDIATE_DIR)
        coach_logger.experiment_path = args.experiment_path
        args.checkpoint_save_dir = str(contract.CHECKPOINT_LOCAL_DIR)
        args.checkpoint_save_secs = CHECKPOINT_SAVE_SECS
        args.checkpoint_restore_dir = checkpoint_to_resume_from()
        args.export_onnx_graph = sage_args.save_model == 1 and backend == "mxnet"
        args.no_summary = True
        self.save_model = sage_args.save_model == 1
        return args

    def preset_dir(self) -> Path:
        main = sys.modules["__main__"]
        return Path(main.__file__).resolve().parent if getattr(main, "__file__", None) else Path.cwd()

    def load_preset(self, name: str) -> Any:
        return load_preset(self.preset_dir(), name)

    def get_graph_manager_from_args(self, args: argparse.Namespace) -> Any:
        graph_manager = self.load_preset(args.preset)
        for override in self.overrides:
            print(f"Applying RL hyperparameter {overrides.apply(override, graph_manager)}", flush=True)
        for agent_params in _agent_params(graph_manager):
            for network in agent_params.network_wrappers.values():
                network.framework = args.framework
        if args.seed is not None and graph_manager.env_params is not None:
            graph_manager.env_params.seed = args.seed
        return graph_manager

    def run_graph_manager(self, graph_manager: Any, args: argparse.Namespace) -> None:
        self.graph_manager = graph_manager
        super().run_graph_manager(graph_manager, args)

    def save_policy(self) -> list[Path]:
        """Exports the trained policy to /opt/ml/model (ONNX + MXNet symbol/params)."""
        contract.MODEL_DIR.mkdir(parents=True, exist_ok=True)
        network = model_export.policy_network(self.graph_manager)
        written = model_export.export_mxnet(network, contract.MODEL_DIR)
        written.append(model_export.export_reference_predictions(network, contract.MODEL_DIR))
        onnx_file = model_export.export_onnx(contract.CHECKPOINT_LOCAL_DIR, contract.MODEL_DIR, network.name)
        if onnx_file is None:
            screen.warning(f"No ONNX export found in {contract.CHECKPOINT_LOCAL_DIR}; model.onnx not written.")
        else:
            written.insert(0, onnx_file)
        return written

    @classmethod
    def train_main(cls) -> None:
        """Entry point: train, then export the model when save_model=1. Exits 1 on a user error."""
        launcher = cls()
        training_state.install_stop_handler()
        try:
            try:
                launcher.launch()
            finally:  # also when SIGTERM stopped training: output.tar.gz gets the last checkpoint
                copy_last_checkpoint(contract.CHECKPOINT_LOCAL_DIR, contract.CHECKPOINT_DIR)
            if launcher.save_model:
                for path in launcher.save_policy():
                    print(f"Saved model file {path}", flush=True)
        except LauncherError as error:
            message = f"{contract.COACH_ERROR_PREFIX}{error}"
            print(message, file=sys.stderr, flush=True)
            write_failure(message)
            sys.exit(1)


def holds_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a Coach checkpoint (ours, with training state, or stock)."""
    return directory.is_dir() and (training_state.holds_training_state(directory)
                                   or (directory / COACH_CHECKPOINT_POINTER).is_file())


def checkpoint_to_resume_from() -> str | None:
    """The job's own checkpoints (restored by SageMaker into checkpoint_local_path) first,
    then a `checkpoint` channel; None: train from scratch."""
    for directory in (contract.CHECKPOINT_LOCAL_DIR, contract.CHECKPOINT_CHANNEL_DIR):
        if holds_checkpoint(directory):
            return str(directory)
    return None


def copy_last_checkpoint(source: Path, target: Path) -> None:
    """Copies the newest complete checkpoint's files (and Coach's pointer) from `source` to `target`."""
    pointer = source / COACH_CHECKPOINT_POINTER
    if not pointer.is_file():
        return
    name = pointer.read_text().strip()
    target.mkdir(parents=True, exist_ok=True)
    for path in [pointer, *source.glob(f"{name}.*")]:
        if path.is_file() and not path.name.endswith(".partial"):
            shutil.copy2(path, target / path.name)


def load_preset(directory: Path, name: str) -> Any:
    """The `graph_manager` of preset file `<directory>/<name>.py`, or a PresetError saying why not."""
    path = directory / f"{name.removesuffix('.py')}.py"
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.py") if "preset" in p.stem.lower())
        raise PresetError(
            f"Preset {name!r} not found: no file {path.name} in {path.parent}. "
            f"Presets there: {', '.join(available) or '(none)'}. "
            f"Fix {contract.COACH_PRESET_PARAM} or add the file to source_dir."
        )
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        detail = traceback.format_exc(limit=-3)
        raise PresetError(
            f"Preset {name!r} ({path.name}) raised {type(error).__name__}: {error}. Fix the preset file.\n{detail}"
        ) from error
    if not hasattr(module, "graph_manager"):
        raise PresetError(f"Preset {name!r} ({path.name}) defines no 'graph_manager'. A Coach preset must.")
    return module.graph_manager


def _agent_params(graph_manager: Any) -> list[Any]:
    # Some graph managers (hierarchical ones) hold several agents under agents_params.
    if hasattr(graph_manager, "agent_params"):
        return [graph_manager.agent_params]
    return list(getattr(graph_manager, "agents_params", []))
