"""The job itself, shrunk: a short training run through the SDK's local mode, interrupted
once as a spot instance is taken back (the drill of ``emulator.interruptions``, at its first
training episode), then what it left (checkpoint, model archive), whether it resumed, and
the model served by a local endpoint.

``smoke_run`` runs them in order; the archive checks are pure functions of the files.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
from sagemaker.rl import RLEstimator

from emulator import contract, metrics, ownership
from emulator.containers import count_job_containers
from emulator.diagnosis import diagnose
from emulator.endpoints import endpoint
from emulator.interruptions import Interruption
from emulator.job_failure import traceback_tail
from emulator.jobspec import JobSpec
from emulator.metrics import normalise_line
from emulator.preflight.report import FAIL, PASS, SKIP, WARN, Check, Report
from emulator.progress import Log, quiet
from emulator.serving import EndpointError
from emulator.session import local_session
from emulator.training import TrainingError, failure_message, fit_with_progress, local_estimator

# Coach ends a phase at the end of an episode, so a job may overshoot its budget by one
# episode (200 steps of CartPole); past twice the budget it did not take the budget at all.
STEP_BUDGET_SLACK = 2
# The drill stops the smoke run when its log first shows a training episode: past heat-up,
# whatever the machine's speed.
DRILL_AFTER_LOG = "Training>"
SPOT_FIX = ("set checkpoint_s3_uri (SageMaker restores it into checkpoint_local_path, /opt/ml/checkpoints, "
            "before the job starts) and have the entry point save and restore there: "
            "smrl_coach.launcher.SageMakerCoachPresetLauncher does")


def smoke_run(client: docker.DockerClient, spec: JobSpec, local_type: str, steps: int, report: Report,
              log: Log) -> None:
    """Trains the job shrunk to `steps` on `local_type`, then checks its metrics, checkpoint,
    model archive, endpoint, and that nothing was left behind."""
    before = count_job_containers(client)
    with tempfile.TemporaryDirectory(prefix="smrl-preflight-") as tmp, ownership.claimed(tmp):
        work = Path(tmp)
        inputs = spec.fit.get("inputs")
        if inputs is not None and "s3://" in json.dumps(inputs, default=str):
            report.add(Check("inputs", WARN, "the job's fit() inputs are on S3, which the pre-flight cannot read: the "
                             "smoke run goes without them",
                             "keep a small local copy and pass file:// inputs to check them too"), log)
            inputs = None
        trained, log_text, interruptions = _smoke_training(spec, local_type, steps, work, inputs, report, log)
        if not trained:
            # One cause, one FAIL: what the job would have made cannot be checked.
            for name in ("metrics", "checkpoint", "resume", "endpoint"):
                report.add(Check(name, SKIP, "not run: the smoke training failed (above)"), log)
            report.add(check_cleanup(count_job_containers(client) - before), log)
            return
        definitions = (spec.estimator.get("metric_definitions")
                       or RLEstimator.default_metric_definitions(spec.estimator["toolkit"]))
        for check in check_metrics(definitions, log_text):
            report.add(check, log)
        output, model = work / "out" / contract.OUTPUT_ARCHIVE, work / "out" / contract.MODEL_ARCHIVE
        if output.exists():
            report.add(check_checkpoint(output), log)
        report.add(check_resume(spec.estimator.get("checkpoint_s3_uri"), interruptions, log_text), log)
        if not model.exists():
            report.add(Check("endpoint", SKIP, "not run: no trained model"), log)
        else:
            report.add(check_model_archive(model), log)
            report.add(check_endpoint(spec, model, work / "endpoint.log"), log)
    report.add(check_cleanup(count_job_containers(client) - before), log)


def _smoke_estimator(spec: JobSpec, instance_type: str, work: Path, steps: int) -> Any:
    """The user's estimator as written, run locally for `steps` environment steps with the model saved."""
    kwargs = {k: v for k, v in spec.estimator.items() if k not in ("sagemaker_session", "instance_type", "output_path")}
    kwargs["source_dir"] = str(spec.source_dir) if spec.source_dir else None
    kwargs["entry_point"] = spec.estimator["entry_point"] if spec.source_dir else str(spec.entry_point_file)
    kwargs["dependencies"] = [str(spec.resolve(d)) for d in spec.estimator.get("dependencies") or []]
    hyperparameters = spec.hyperparameters
    if steps:
        hyperparameters[contract.IMPROVE_STEPS_PARAM] = steps
    hyperparameters[contract.SAVE_MODEL_PARAM] = 1
    kwargs["hyperparameters"] = hyperparameters
    if kwargs.get("checkpoint_s3_uri"):  # the job's own (on S3): a local folder stands in
        kwargs["checkpoint_s3_uri"] = (work / "checkpoints").as_uri()
    session = local_session(work_dir=work / "session", interrupt_after=[])
    session.interrupt_when_logged = DRILL_AFTER_LOG
    return local_estimator(instance_type=instance_type, output_dir=work / "out", session=session, **kwargs)


def _smoke_training(spec: JobSpec, local_type: str, steps: int, work: Path, inputs: Any, report: Report,
                    log: Log) -> tuple[bool, str, list[Interruption]]:
    """Runs the shrunk job; returns whether it succeeded, its log and its interruptions."""
    estimator = _smoke_estimator(spec, local_type, work, steps)
    log_file = work / "train.log"
    begun = time.monotonic()
    job_name = "smrl-preflight-" + time.strftime("%Y%m%d-%H%M%S")
    try:
        interrupts = fit_with_progress(estimator, job_name, log_file, quiet, inputs=inputs)
        if interrupts:  # fit() swallowed it: the smoke run did not succeed
            raise interrupts.interrupted(f"pre-flight stopped during the smoke run; its log is {log_file}")
        report.add(Check("smoke training", PASS, f"{local_type}, {steps} environment steps: job succeeded",
                         seconds=time.monotonic() - begun), log)
        trained = True
    except (RuntimeError, TrainingError) as error:
        log_text = log_file.read_text() if log_file.exists() else ""
        report.add(failed_training("smoke training", failure_message(work / "out", log_file, error), log_text,
                                   spec.base_dir, time.monotonic() - begun), log)
        trained = False
    log_text = log_file.read_text() if log_file.exists() else ""
    if trained:
        report.add(check_step_budget(log_text, steps), log)
    return trained, log_text, estimator.sagemaker_session.interruptions.get(job_name, [])


def check_resume(checkpoint_uri: str | None, interruptions: list[Interruption], log_text: str) -> Check:
    """Whether the drill's restarted attempt went on from the interrupted one's checkpoint."""
    if not interruptions:
        return Check("resume", SKIP, f"not drilled: the smoke run ended before it logged {DRILL_AFTER_LOG!r}")
    first = interruptions[0]
    if first.resumed:
        return Check("resume", PASS, f"{first.stop()}; {first.resumed}")
    if not checkpoint_uri:
        return Check("resume", WARN, f"{first.stop()}; the job sets no checkpoint_s3_uri, so it trained again from "
                     "scratch: a spot interruption in the cloud loses all its progress the same way", SPOT_FIX)
    if "restored only the online network's weights" in log_text:
        return Check("resume", WARN, f"{first.stop()}; the restarted job restored the online network's weights "
                     "only: its step counter, exploration, optimiser and replay memory started again", SPOT_FIX)
    return Check("resume", WARN, f"{first.stop()}; the restarted job trained from scratch: its entry point neither "
                 f"saves checkpoints to nor restores them from checkpoint_local_path ({contract.CHECKPOINT_LOCAL_DIR})",
                 SPOT_FIX)


def failed_training(name: str, reason: str, log_text: str, base_dir: Path, seconds: float) -> Check:
    """The FAIL of a training job: the container's reason, the known cause and fix when the
    log shows one, and the tail of the traceback."""
    known = diagnose(log_text or reason, base_dir)
    tail = traceback_tail(log_text)
    message = reason + (f"\n      cause: {known.cause}" if known else "")
    if tail and tail.splitlines()[-1] not in reason:
        message += "\n      log tail:\n        " + tail.replace("\n", "\n        ")
    return Check(name, FAIL, message, known.fix if known else "fix the error above", seconds=seconds)


def check_step_budget(log_text: str, steps: int, name: str = "step budget") -> Check:
    """Whether the job kept to the shortened budget: Coach's last ``Training>`` line counts
    the environment steps it took. An entry point that ignores ``rl.improve_steps`` runs in
    full, and the pre-flight takes as long as the job."""
    lines = [normalise_line(line) for line in log_text.splitlines()]

    def last_count(phase: str) -> float | None:
        counts = [metrics.field(line, "Steps") for line in lines if line.startswith(phase)]
        return max((c for c in counts if c is not None), default=None)

    trained_to = last_count("Training>")
    if trained_to is None:
        return Check(name, SKIP, "the log has no Coach training lines to count steps from")
    # Coach's step counter includes heat-up, which the budget does not.
    taken = trained_to - (last_count("Heatup>") or 0)
    if taken > STEP_BUDGET_SLACK * steps:
        return Check(name, WARN, f"the job took {taken:.0f} environment steps, asked for {steps}: its entry point "
                     f"ignored {contract.IMPROVE_STEPS_PARAM}, so the smoke run was not shortened",
                     f"let the entry point pass {contract.IMPROVE_STEPS_PARAM} on to Coach (the sagemaker_rl "
                     "launcher applies every rl.* hyperparameter) to keep pre-flights short")
    return Check(name, PASS, f"{taken:.0f} environment steps after heat-up (budget {steps})")


def check_metrics(definitions: list[dict[str, str]], log_text: str, *, suffix: str = "",
                  unmatched: str = FAIL) -> list[Check]:
    """One check per metric definition against a job's log: the regex compiles and matches.
    A regex that matches no line has status `unmatched`."""
    lines = [normalise_line(line) for line in log_text.splitlines()]
    checks = []
    for definition in definitions:
        name, regex = definition["Name"], definition["Regex"]
        try:
            pattern = re.compile(regex)
        except re.error as error:
            checks.append(Check(f"metric {name}{suffix}", FAIL, f"regex {regex!r} does not compile: {error}",
                                "fix the regex"))
            continue
        hits = [line for line in lines if pattern.search(line)]
        if hits:
            last = pattern.search(hits[-1])
            value = last.group(1) if last and pattern.groups else hits[-1][:60]
            checks.append(Check(f"metric {name}{suffix}", PASS, f"matched {len(hits)} log lines (last value {value})"))
        else:
            sample = [line for line in lines if line.strip()][-5:]
            checks.append(Check(f"metric {name}{suffix}", unmatched,
                                f"regex {regex!r} matched none of {len(lines)} log lines; "
                                "last lines tried:\n        " + "\n        ".join(sample),
                                "fix the regex against the log above; SageMaker would record no values"
                                + ("" if unmatched == FAIL else " (a job that does not log this metric, such as "
                                   "an evaluation job's training reward, needs no fix)")))
    return checks


def archive_members(path: Path) -> dict[str, int]:
    """The files in a tar.gz by name (without a leading ./), with their sizes."""
    with tarfile.open(path) as tar:
        return {m.name.lstrip("./"): m.size for m in tar.getmembers() if m.isfile()}


def check_checkpoint(output_archive: Path) -> Check:
    checkpoints = [n for n in archive_members(output_archive) if n.startswith(contract.CHECKPOINT_ARCHIVE_PREFIX)]
    if checkpoints:
        return Check("checkpoint", PASS, f"{len(checkpoints)} files in {contract.CHECKPOINT_DIR}")
    return Check("checkpoint", FAIL, "no checkpoint written",
                 f"let the launcher save checkpoints to {contract.CHECKPOINT_DIR}")


def check_model_archive(model_archive: Path) -> Check:
    members = archive_members(model_archive)
    size = model_archive.stat().st_size
    listing = ", ".join(f"{n} ({b / 1024:.0f} KiB)" for n, b in sorted(members.items()))
    if not members:
        return Check("model archive", FAIL, f"{contract.MODEL_ARCHIVE} is empty",
                     "run with save_model=1 so the policy is exported")
    if contract.ONNX_FILE in members or {contract.SYMBOL_FILE, contract.PARAMS_FILE} <= set(members):
        return Check("model archive", PASS, f"{size / 1024:.0f} KiB: {listing}")
    return Check("model archive", WARN, f"{size / 1024:.0f} KiB, no {contract.ONNX_FILE} or MXNet export: {listing}",
                 "only a custom model_fn can serve this; run with save_model=1 to export the policy")


def observation_for(model_archive: Path) -> list[float] | None:
    """A valid observation for the served model: one Coach predicted for, or zeros of the input's shape."""
    with tarfile.open(model_archive) as tar:
        names = {m.name.lstrip("./"): m for m in tar.getmembers()}
        if contract.REFERENCE_FILE in names:
            reference = _json_member(tar, names[contract.REFERENCE_FILE])
            return next(iter(reference["inputs"].values()))[0]
        if contract.SIGNATURE_FILE in names:
            shape = _json_member(tar, names[contract.SIGNATURE_FILE])["inputs"][0]["shape"]
            return [0.0] * math.prod(shape[1:])
    return None


def _json_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    data = tar.extractfile(member)
    return json.load(data) if data is not None else None


def check_endpoint(spec: JobSpec, model_archive: Path, log_file: Path) -> Check:
    """Serves the model as the job deploys it and asks it for one prediction. The serving
    container's log (which the SDK streams to stdout) goes to `log_file`: the report, and
    `--json`, stay readable."""
    inference_entry = spec.deploy.get("entry_point") or spec.estimator["entry_point"]
    source_dir = spec.resolve(spec.deploy["source_dir"]) if spec.deploy.get("source_dir") else spec.source_dir
    observation = observation_for(model_archive)
    begun = time.monotonic()
    try:
        with open(log_file, "w") as serving_log, contextlib.redirect_stdout(serving_log), \
                endpoint(model_archive, entry_point=inference_entry, source_dir=source_dir) as predictor:
            answer = predictor.predict(observation if observation is not None else [0.0])
    except (EndpointError, RuntimeError) as error:
        known = diagnose(str(error) + "\n" + log_file.read_text(errors="replace"))
        return Check("endpoint", FAIL, str(error) + (f"\n      cause: {known.cause}" if known else ""),
                     known.fix if known else "fix the inference script (model_fn/input_fn/predict_fn/"
                     "output_fn or transform_fn) or the exported model", seconds=time.monotonic() - begun)
    return Check("endpoint", PASS, f"served with {inference_entry}; answered {json.dumps(answer)[:120]}",
                 seconds=time.monotonic() - begun)


def check_cleanup(containers_left: int) -> Check:
    if containers_left <= 0:
        return Check("cleanup", PASS, "no container, network or endpoint left")
    return Check("cleanup", FAIL, f"{containers_left} containers left", "docker ps -a; report this as a bug")
