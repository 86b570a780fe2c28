"""`smrl-local train`: one Coach preset through `RLEstimator(...).fit()` in local mode.

The job is ordinary SDK code (the same a user sends to the cloud) run with the emulator's
offline session. Around it: the images are built if missing, Coach's log is condensed to
a progress line per few episodes (the full log goes to `train.log`), and afterwards the
reward metrics are parsed with the SDK's own Coach metric definitions into a table and
`reward_curve.png`.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

from emulator import contract, metrics, resources, signals
from emulator.containers import ContainerSetupError
from emulator.engine import EngineError
from emulator.errors import ModelNotFoundError, UserError
from emulator.images import build_image, variant_for
from emulator.inputs import InputError, check_output_folder, check_steps, preset_and_folder
from emulator.interruptions import Interruption
from emulator.job_failure import TrainingJobFailed, describe
from emulator.jobs import UNFINISHED_MODEL_ARCHIVE
from emulator.progress import Log
from emulator.session import LocalRLSession, local_session

DEFAULT_ENTRY_POINT = "train_coach.py"
DEFAULT_OUTPUT_DIR = Path("output")
LATEST_LINK = "latest"
# Each job's checkpoints (its checkpoint_s3_uri, a file:// folder): `--resume` starts from them.
CHECKPOINTS_SUBDIR = "checkpoints"
_PROGRESS_EVERY_EPISODES = 10

class TrainingError(TrainingJobFailed):
    """The training job failed; the message carries the container's reason and the log's path."""


class TrainingConfigError(UserError, ValueError):
    """`train` was called with arguments it cannot run; the message says which and why."""


@dataclass
class TrainingResult:
    job_name: str
    output_dir: Path
    model_data: Path
    output_data: Path
    log_file: Path
    reward_curve: Path | None
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    checkpoints: Path | None = None
    interruptions: list[Interruption] = field(default_factory=list)


def train(
    preset: str = resources.DEFAULT_PRESET,
    *,
    hyperparameters: dict[str, Any] | None = None,
    steps: int | None = None,
    environment: dict[str, str] | None = None,
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    instance_type: str = "local",
    source_dir: str | Path | None = None,
    entry_point: str = DEFAULT_ENTRY_POINT,
    build: bool = True,
    interrupt_after: list[float] | None = None,
    resume: str | None = None,
    log: Log = print,
) -> TrainingResult:
    """Trains `preset` in local mode and collects model, output, log and reward curve.

    Args:
        preset: Name of a preset file (without .py) in `source_dir`, or the path of a preset
            file (its folder is then `source_dir`).
        hyperparameters: Extra hyperparameters, e.g. `{"rl.agent_params.algorithm.discount": 0.95}`.
        steps: Training budget in environment steps, > 0 (overrides the preset's `improve_steps`).
        environment: Environment variables for the training container (RLEstimator's
            `environment`), e.g. `{"SMRL_COACH_FAST": "0"}` for stock Coach. AWS_* names are
            refused: the emulator keeps AWS credentials out of containers.
        output_dir: Each job gets `<output_dir>/<job name>/`; `<output_dir>/latest` points at the newest.
        instance_type: "local" (CPU image) or "local_gpu" (GPU image, needs an NVIDIA runtime).
        source_dir: Folder of the preset, its env module and `entry_point`; default: the
            project's presets. Without `entry_point` in it, the image's Coach launcher is
            added to a copy of it (under the work folder's `sources/`, removed after the job).
        build: Build the training image first if it is missing or out of date.
        interrupt_after: The spot-interruption drill: seconds into each attempt at which the
            job is stopped as SageMaker stops it (SIGTERM, SIGKILL 120 s later) and started
            again from its checkpoints, e.g. ``[30, 30]`` for two interruptions.
        resume: A job under `output_dir` (its name, or "latest") whose checkpoints this job
            starts from: an interrupted job goes on to its own end, a finished one trains
            `steps` (or the preset's improve_steps) more.

    Every job checkpoints to ``<output_dir>/<job>/checkpoints/`` (its checkpoint_s3_uri).

    Raises:
        InputError: a preset that is a path or not in `source_dir`, steps <= 0, an output
            folder that is a file or cannot be created; before anything is built or started.
    """
    if instance_type not in ("local", "local_gpu"):
        raise TrainingConfigError(f'instance_type must be "local" or "local_gpu" here, got {instance_type!r}.')
    aws_names = sorted(name for name in (environment or {}) if name.upper().startswith("AWS_"))
    if aws_names:
        raise TrainingConfigError(f"environment: {', '.join(aws_names)} refused: the emulator keeps AWS settings "
                                  "and credentials out of training containers. Remove them; jobs here need none.")
    preset, source_dir = preset_and_folder(preset, source_dir, resources.presets_dir())
    check_steps(steps)
    check_output_folder(output_dir)
    resume_from = checkpoints_of(output_dir, resume) if resume else None
    if build:
        build_image("training", variant_for(instance_type), log=log)

    job_name = _job_name(preset)
    job_dir = (Path(output_dir) / job_name).resolve()
    job_dir.mkdir(parents=True)
    params: dict[str, Any] = {contract.COACH_PRESET_PARAM: preset, contract.SAVE_MODEL_PARAM: 1,
                              **(hyperparameters or {})}
    if steps is not None:
        params[contract.IMPROVE_STEPS_PARAM] = int(steps)

    session = local_session(interrupt_after=interrupt_after or [])
    if entry_point == DEFAULT_ENTRY_POINT and not (source_dir / entry_point).is_file():
        source_dir = with_the_launcher(source_dir, session.work_dir / "sources" / job_name)
    estimator = local_estimator(
        instance_type=instance_type,
        output_dir=job_dir,
        session=session,
        entry_point=entry_point,
        source_dir=str(source_dir),
        hyperparameters=params,
        environment=dict(environment or {}),
        checkpoint_s3_uri=(job_dir / CHECKPOINTS_SUBDIR).as_uri(),
        use_spot_instances=bool(interrupt_after),
    )
    log_file = job_dir / "train.log"
    log(f"training {preset} as job {job_name} ({instance_type}); full log: {log_file}")
    if resume_from:
        log(f"starting from the checkpoints of {resume_from.parent.name} ({resume_from})")
    inputs = {contract.CHECKPOINT_CHANNEL: resume_from.as_uri()} if resume_from else None
    started = time.monotonic()
    try:
        interrupted = fit_with_progress(estimator, job_name, log_file, log, inputs)
    except (EngineError, ContainerSetupError):
        # Refused before any container started: there is nothing of this job to keep.
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    except RuntimeError as error:
        raise TrainingError(failure_message(job_dir, log_file, error)) from None
    finally:
        shutil.rmtree(session.work_dir / "sources" / job_name, ignore_errors=True)  # a copy, when one was made
    if interrupted:
        # fit() swallows KeyboardInterrupt (its telemetry wrapper returns from `finally`);
        # the session's guard has already removed the containers. Pass the interrupt on.
        raise interrupted.interrupted(interrupted_message(job_dir))
    seconds = time.monotonic() - started

    log_text = log_file.read_text()
    found = metrics.parse_metrics(log_text)
    curve = metrics.plot_reward_curve(found, job_dir / "reward_curve.png") if found.get(metrics.TRAINING) else None
    _point_latest(Path(output_dir), job_dir)
    interruptions = session.interruptions.get(job_name, [])
    for interruption in interruptions:
        log(f"  {interruption.describe()}")
    return TrainingResult(
        job_name=job_name,
        output_dir=job_dir,
        model_data=job_dir / contract.MODEL_ARCHIVE,
        output_data=job_dir / contract.OUTPUT_ARCHIVE,
        log_file=log_file,
        reward_curve=curve,
        metrics=found,
        seconds=seconds,
        checkpoints=job_dir / CHECKPOINTS_SUBDIR,
        interruptions=interruptions,
    )


def checkpoints_of(output_dir: str | Path, job: str) -> Path:
    """The checkpoint folder of `job` (a job name under `output_dir`, or "latest").

    Raises:
        InputError: no such job, or it kept no checkpoints; the message lists the jobs that did.
    """
    folder = Path(output_dir) / job / CHECKPOINTS_SUBDIR
    if folder.is_dir() and any(folder.glob("*.ckpt*")):
        return folder.resolve()
    usable = sorted(p.parent.name for p in Path(output_dir).glob(f"*/{CHECKPOINTS_SUBDIR}")
                    if any(p.glob("*.ckpt*")) and not p.parent.is_symlink())
    what = "is no job" if not (Path(output_dir) / job).is_dir() else "kept no checkpoints"
    raise InputError(f"--resume {job}: {Path(output_dir) / job} {what}. Jobs with checkpoints in {output_dir}: "
                     f"{', '.join(usable[-5:]) or '(none)'}; pass one of them, or latest.")


def with_the_launcher(source_dir: Path, staged: Path) -> Path:
    """A copy of a user's code folder (a preset and its env module) in `staged`, with the
    image's Coach launcher beside it as ``train_coach.py``: what `train --source-dir` runs
    when the folder brings no entry point of its own."""
    shutil.copytree(source_dir, staged, ignore=shutil.ignore_patterns("__pycache__", ".*", "output"))
    shutil.copy2(resources.presets_dir() / DEFAULT_ENTRY_POINT, staged / DEFAULT_ENTRY_POINT)
    return staged


def local_estimator(*, instance_type: str, output_dir: Path, session: LocalRLSession, **estimator_args: Any) -> Any:
    """An ``RLEstimator`` built from `estimator_args` as cloud code passes them, run in local
    mode on `instance_type` with its output in `output_dir`.

    Arguments the caller leaves out are those of the classic Coach + MXNet job: toolkit
    Coach 0.11.0, framework MXNet, one instance, a placeholder role and the SDK's Coach
    metric definitions.
    """
    defaults: dict[str, Any] = {
        "toolkit": RLToolkit.COACH,
        "toolkit_version": contract.SDK_COACH_VERSION,
        "framework": RLFramework.MXNET,
        "role": contract.PLACEHOLDER_ROLE,
        "instance_count": 1,
        "metric_definitions": RLEstimator.default_metric_definitions(RLToolkit.COACH),
    }
    return RLEstimator(**{**defaults, **estimator_args}, instance_type=instance_type,
                       output_path=output_dir.as_uri(), sagemaker_session=session)


def fit_with_progress(estimator: Any, job_name: str, log_file: Path, log: Log,
                      inputs: Any = None) -> signals.Interrupts | None:
    """Runs fit() with its output condensed for the user and kept whole in `log_file`;
    returns the signals (SIGINT, SIGTERM, SIGHUP) that interrupted it, None when none did."""
    with open(log_file, "w") as full_log, signals.handled() as interrupts:
        real_stdout = sys.stdout
        progress = _Progress(full_log, log, real_stdout)
        sys.stdout = progress
        try:
            estimator.fit(inputs, job_name=job_name, wait=True, logs=True)
        finally:
            sys.stdout = real_stdout
            progress.flush()
    return interrupts if interrupts.received else None


def interrupted_message(job_dir: Path) -> str:
    """What an interrupted job kept, and where; and that it left no model."""
    kept = [f"{name} ({what})" for name, what in (
        ("train.log", "the job's log"),
        (CHECKPOINTS_SUBDIR, "checkpoints so far: `--resume` continues from them"),
        (contract.OUTPUT_ARCHIVE, "what /opt/ml/output held"),
        (UNFINISHED_MODEL_ARCHIVE, "what /opt/ml/model held: not a finished model"),
    ) if (job_dir / name).exists()]
    return (f"the training job's containers and temp folders are removed. Kept in {job_dir}: "
            f"{', '.join(kept) or 'nothing'}. No model.tar.gz: the job did not finish, and `latest` is unchanged.")


def _job_name(preset: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", preset.removeprefix("preset-")).strip("-")[:30] or "job"
    return f"smrl-{slug}-{datetime.now():%Y%m%d-%H%M%S-%f}"[:63]


class _Progress(io.TextIOBase):
    """Stands in for stdout during fit(): every line to the full log, a summary to the user."""

    def __init__(self, full_log: TextIO, log: Log, real_stdout: TextIO):
        self.full_log = full_log
        self._log = log
        self.real_stdout = real_stdout
        self.partial = ""
        self.training_rewards: list[float] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.full_log.write(text)
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self._show(metrics.normalise_line(line))
        return len(text)

    def flush(self) -> None:
        self.full_log.flush()

    def log(self, text: str) -> None:
        # `log` may be print, which writes to sys.stdout: that is this object during fit().
        replaced, sys.stdout = sys.stdout, self.real_stdout
        try:
            self._log(text)
        finally:
            sys.stdout = replaced

    def _show(self, line: str) -> None:
        if line.startswith("Training>"):
            reward = metrics.field(line, "Total reward")
            if reward is not None:
                self.training_rewards.append(reward)
            episode = metrics.field(line, "Episode")
            if episode is not None and episode % _PROGRESS_EVERY_EPISODES == 0:
                recent = self.training_rewards[-_PROGRESS_EVERY_EPISODES:]
                steps = metrics.field(line, "Steps")
                self.log(f"  episode {int(episode):5d}  steps {int(steps or 0):6d}  "
                         f"training reward (mean of last {len(recent)}) {sum(recent) / len(recent):6.1f}")
        elif line.startswith("Testing>"):
            self.log(f"  evaluation after episode {int(metrics.field(line, 'Episode') or 0):5d}: "
                     f"reward {metrics.field(line, 'Total reward')}")
        elif contract.COACH_ERROR_PREFIX in line or "Traceback" in line or line.startswith(
                ("Saved model file", "!!", contract.STOPPED_LOG)):
            self.log(f"  {line}")


def failure_message(job_dir: Path, log_file: Path, error: Exception) -> str:
    """The container's own reason (its /opt/ml/output/failure file, or the error line of the log)."""
    if isinstance(error, TrainingJobFailed):
        return f"{error}\n  also in: {log_file}"  # the session told it from the same files
    log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
    return describe(job_dir.name, job_dir / contract.OUTPUT_ARCHIVE, log_text, log_file, str(error))


def _point_latest(output_dir: Path, job_dir: Path) -> None:
    link = output_dir / LATEST_LINK
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(job_dir.name, target_is_directory=True)


def newest_model(output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> Path:
    """The model.tar.gz of the newest job under `output_dir` (what `smrl-local serve` serves)."""
    latest = Path(output_dir) / LATEST_LINK / "model.tar.gz"
    if latest.is_file():
        return latest.resolve()
    raise ModelNotFoundError(f"No trained model at {latest}: run `make local-train` (or `smrl-local train`) first, "
                            "or pass --model PATH.")
