"""`smrl-local preflight NOTEBOOK.ipynb`: the pre-flight of a notebook written for the cloud.

The notebook runs as `smrl-local run` runs it (a real kernel, the local S3, the emulator's
runtime), with every RLEstimator's training shrunk to the smoke-run budget, and with a
journal of what it built, trained, deployed and asked (``emulator.run_journal``). The
report then holds, in order:

* the notebook: every cell ran, or the cell, its line and the cause;
* per RLEstimator, the checks of a job that need nothing run (``static_checks``);
* per training job: its outcome, its metric definitions against its log, whether it kept
  to the step budget, and, for jobs that trained, their checkpoint and (when deployed)
  their model archive;
* per endpoint: it answered; and whether the notebook deleted what it deployed;
* nothing left behind.

``journal_checks`` is a pure function of the journal and the files it names.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sagemaker.rl import RLEstimator, RLToolkit

from emulator import contract, resources, run_journal
from emulator.containers import count_job_containers
from emulator.engine import has_nvidia_runtime, require_engine
from emulator.errors import UserError
from emulator.images import build_image, training_image, variant_for
from emulator.jobspec import from_mapping
from emulator.preflight.report import FAIL, PASS, SKIP, WARN, Check, Report
from emulator.preflight.smoke_run import (
    check_checkpoint,
    check_cleanup,
    check_metrics,
    check_model_archive,
    check_step_budget,
    failed_training,
)
from emulator.preflight.static_checks import static_checks
from emulator.progress import Log, quiet
from emulator.run import run as run_code
from emulator.runtime import SMOKE_STEPS_ENV

# Executed copies of pre-flighted notebooks: <this>/<notebook>-<time>/<notebook>.ipynb.
OUTPUT_DIR = Path("output") / "preflight"


def run(path: str | Path, *, steps: int, log: Log = print) -> Report:
    """Runs the notebook at `path` shrunk to `steps` environment steps per training job and
    checks what it did; see the module docstring."""
    path = Path(path).resolve()
    started = time.monotonic()
    report = Report(job=str(path))
    client = require_engine()
    try:
        gpu_available = has_nvidia_runtime(client) and bool(client.images.list(name=training_image("gpu")))
        for kind in ("training", "inference"):
            build_image(kind, variant_for("local"), log=quiet)  # seconds when up to date
        before = count_job_containers(client)
        work_dir = resources.work_dir()
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="smrl-preflight-", dir=work_dir) as tmp:
            journal = Path(tmp) / "journal.jsonl"
            begun = time.monotonic()
            try:
                result = run_code(path, output_dir=OUTPUT_DIR, log=log, echo=False,
                                  environment={run_journal.JOURNAL_ENV: str(journal), SMOKE_STEPS_ENV: str(steps)})
                report.add(Check("notebook", PASS, f"every cell ran; executed copy: {result.executed_copy}",
                                 seconds=time.monotonic() - begun), log)
            except UserError as error:
                report.add(Check("notebook", FAIL, str(error), "fix the cell; the executed copy shows its output",
                                 seconds=time.monotonic() - begun), log)
            for check in journal_checks(path, run_journal.read(journal), steps, gpu_available):
                report.add(check, log)
        report.add(check_cleanup(count_job_containers(client) - before), log)
        return report
    finally:
        report.seconds = time.monotonic() - started
        client.close()


def _label(arguments: dict[str, Any], index: int) -> str:
    return str(arguments.get("base_job_name") or arguments.get("entry_point") or f"estimator {index}")


def journal_checks(notebook: Path, events: list[dict[str, Any]], steps: int, gpu_available: bool) -> list[Check]:
    """The checks of what the notebook's code did, from its journal; see the module docstring."""
    estimators = {e["estimator"]: e["arguments"] for e in events if e["event"] == run_journal.ESTIMATOR}
    if not estimators:
        return [Check("estimators", WARN, "the notebook built no RLEstimator: only its cells were checked",
                      "build the job with sagemaker.rl.RLEstimator to have it checked")]
    labels = {key: _label(arguments, i) for i, (key, arguments) in enumerate(estimators.items(), 1)}
    deployed = {e["estimator"]: {"entry_point": e.get("entry_point")}
                for e in events if e["event"] == run_journal.DEPLOY}
    checks = []
    for key, arguments in estimators.items():
        spec = from_mapping(notebook, {"estimator": arguments, "deploy": deployed.get(key, {})})
        checks += [_named(c, labels[key]) for c in static_checks(spec, gpu_available)
                   if c.name != "endpoint clean-up" and not (c.name == "serving code" and c.status == SKIP)]
    for fit in (e for e in events if e["event"] == run_journal.FIT):
        arguments = estimators.get(fit["estimator"], {})
        checks += _fit_checks(notebook, fit, arguments, labels.get(fit["estimator"], fit["job"]), steps,
                              fit["estimator"] in deployed)
    return checks + _endpoint_checks(events)


def _named(check: Check, label: str) -> Check:
    check.name = f"{check.name} ({label})"
    return check


def _fit_checks(notebook: Path, fit: dict[str, Any], arguments: dict[str, Any], label: str, steps: int,
                deployed: bool) -> list[Check]:
    log_file = Path(fit["log"])
    log_text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    if fit["error"]:
        return [failed_training(f"training ({label})", f"job {fit['job']} failed: {fit['error']}; log: {log_file}",
                                log_text, notebook.parent, fit["seconds"])]
    checks = [Check(f"training ({label})", PASS, f"job {fit['job']} succeeded; log: {log_file}",
                    seconds=fit["seconds"])]
    definitions = arguments.get("metric_definitions") or RLEstimator.default_metric_definitions(RLToolkit.COACH)
    # A job may log only some metrics (an evaluation job no training rewards): WARN, not FAIL.
    checks += check_metrics(definitions, log_text, suffix=f" ({label})", unmatched=WARN)
    budget = check_step_budget(log_text, steps, f"step budget ({label})")
    checks.append(budget)
    artifacts = Path(fit["artifacts"]) if fit.get("artifacts") else None
    if budget.status == SKIP or artifacts is None:
        return checks  # it trained nothing (an evaluation), or its artifacts are not on this machine
    if (artifacts / contract.OUTPUT_ARCHIVE).is_file():
        checks.append(_named(check_checkpoint(artifacts / contract.OUTPUT_ARCHIVE), label))
    if deployed and (artifacts / contract.MODEL_ARCHIVE).is_file():
        checks.append(_named(check_model_archive(artifacts / contract.MODEL_ARCHIVE), label))
    return checks


def _endpoint_checks(events: list[dict[str, Any]]) -> list[Check]:
    endpoints = list(dict.fromkeys(e["endpoint"] for e in events if e["event"] == run_journal.DEPLOY and e["endpoint"]))
    if not endpoints:
        return [Check("endpoints", SKIP, "the notebook deploys no endpoint")]
    deleted = {e["endpoint"] for e in events if e["event"] == run_journal.DELETE_ENDPOINT}
    checks = []
    for name in endpoints:
        answers = [e for e in events if e["event"] == run_journal.PREDICT and e["endpoint"] == name]
        errors = [e["error"] for e in answers if e["error"]]
        if errors:
            checks.append(Check(f"endpoint {name}", FAIL, f"{len(errors)} of {len(answers)} predictions failed; "
                                f"first: {errors[0]}", "fix the inference script or the request"))
        elif answers:
            checks.append(Check(f"endpoint {name}", PASS, f"answered {len(answers)} predictions"))
        else:
            checks.append(Check(f"endpoint {name}", WARN, "deployed, but the notebook asked it nothing",
                                "call predictor.predict() once to prove the model serves"))
    left = [name for name in endpoints if name not in deleted]
    if left:
        checks.append(Check("endpoint clean-up", WARN, f"{', '.join(left)} left up at the end: on SageMaker an "
                            "endpoint keeps running (and billing) until deleted; locally the emulator removed it",
                            "call predictor.delete_endpoint() when the notebook is done with it"))
    else:
        checks.append(Check("endpoint clean-up", PASS, "the notebook deletes every endpoint it deploys"))
    return checks
