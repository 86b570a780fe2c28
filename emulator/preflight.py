"""`smrl-local preflight JOB`: prove a SageMaker RL job works before it goes to the cloud.

Reads the job as the user wrote it for the cloud (`emulator.jobspec`), checks what can be
checked without running it, then runs it shrunk in the real images: a short training job
through the SDK's local mode, its metrics, checkpoint and model archive, and the model
served by a local endpoint. Each check is PASS, WARN or FAIL with the reason and the fix.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from emulator.diagnosis import diagnose
from emulator.jobcode import copy_job_code
from emulator.jobspec import JobSpec

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
DEFAULT_SMOKE_STEPS = 1500
# SageMaker's CreateTrainingJob limits on hyperparameters.
MAX_HYPERPARAMETERS = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 2500
# Hyperparameters the SDK adds to every framework job (they count towards the 100).
SDK_RESERVED_HYPERPARAMETERS = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_container_log_level",
                                "sagemaker_job_name", "sagemaker_region", "sagemaker_estimator")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
INSTANCE_TYPE = re.compile(r"^ml\.(?P<family>[a-z0-9]+(?:-[a-z0-9]+)?)\.(?P<size>\d*x?large|medium|small|metal)$")
GPU_FAMILIES = {"p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "g3", "g4dn", "g5", "g6", "g6e", "gr6"}
CPU_FAMILIES = {"t2", "t3", "m4", "m5", "m5d", "m6i", "m7i", "c4", "c5", "c5d", "c5n", "c6i", "c7i", "r5", "r5d", "r6i"}

Log = Callable[[str], None]


@dataclass
class Check:
    name: str
    status: str
    message: str
    fix: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    job: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    def add(self, check: Check, log: Log) -> Check:
        self.checks.append(check)
        log(format_check(check))
        return check

    def to_json(self) -> str:
        return json.dumps({"job": self.job, "ok": self.ok, "seconds": round(self.seconds, 2),
                           "checks": [asdict(c) for c in self.checks]}, indent=2)


def format_check(check: Check) -> str:
    line = f"{check.status:4}  {check.name:<22} {check.message}"
    if check.fix and check.status in (FAIL, WARN):
        line += f"\n      fix: {check.fix}"
    return line + (f"  ({check.seconds:.1f} s)" if check.seconds >= 0.05 else "")


def format_report(report: Report) -> str:
    counts = {status: sum(c.status == status for c in report.checks) for status in (PASS, WARN, FAIL, SKIP)}
    verdict = "the job should work on SageMaker" if report.ok else "fix the FAILs before sending the job"
    return (f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed, {counts[SKIP]} skipped "
            f"in {report.seconds:.1f} s: {verdict}")


# -- static checks (no container) ----------------------------------------------------------

def check_toolkit(spec: JobSpec) -> Check:
    from sagemaker.rl import RLFramework, RLToolkit
    from sagemaker.rl.estimator import TOOLKIT_FRAMEWORK_VERSION_MAP

    est = spec.estimator
    toolkit, framework, version = est.get("toolkit"), est.get("framework"), est.get("toolkit_version")
    if est.get("image_uri"):
        return Check("toolkit/framework", WARN, f"image_uri {est['image_uri']} is given: the cloud runs that image, "
                     "the local run uses ours (Coach 1.0.1 + MXNet 1.9.1)", "drop image_uri to use SageMaker's RL image")
    names = (getattr(toolkit, "value", toolkit), getattr(framework, "value", framework), version)
    supported = TOOLKIT_FRAMEWORK_VERSION_MAP.get(names[0], {}).get(version, {})
    if names[1] not in supported:
        choices = [f"{t} {v} + {f}" for t, vs in TOOLKIT_FRAMEWORK_VERSION_MAP.items() for v, fs in vs.items() for f in fs]
        return Check("toolkit/framework", FAIL, f"SDK 2.x has no RL image for {names[0]} {version} + {names[1]}",
                     f"use one of: {', '.join(choices)}")
    if toolkit != RLToolkit.COACH or framework != RLFramework.MXNET:
        return Check("toolkit/framework", FAIL, f"{names[0]} {version} + {names[1]} is valid on SageMaker, but this "
                     "emulator has images for Coach + MXNet only", "use toolkit=RLToolkit.COACH, framework=RLFramework.MXNET")
    return Check("toolkit/framework", PASS, f"coach {version} + mxnet {supported[names[1]]} (SDK 2.x image exists)")


def instance_kind(instance_type: str) -> str | None:
    """'gpu', 'cpu', or None when not a SageMaker instance type we know."""
    match = INSTANCE_TYPE.match(instance_type or "")
    if not match:
        return None
    family = match.group("family")
    return "gpu" if family in GPU_FAMILIES else "cpu" if family in CPU_FAMILIES else None


def check_instance_type(spec: JobSpec, gpu_available: bool) -> Check:
    instance_type = spec.estimator.get("instance_type") or ""
    if instance_type in ("local", "local_gpu"):
        return Check("instance type", FAIL, f"{instance_type!r} runs only in local mode",
                     "give the cloud instance type, e.g. ml.c5.xlarge (CPU) or ml.p3.2xlarge (GPU)")
    kind = instance_kind(instance_type)
    if kind is None:
        shaped = INSTANCE_TYPE.match(instance_type)
        status = WARN if shaped else FAIL
        return Check("instance type", status, f"{instance_type!r} is {'not a family we know' if shaped else 'not a SageMaker instance type'}",
                     "use a SageMaker training type such as ml.c5.xlarge or ml.p3.2xlarge")
    if kind == "gpu" and not gpu_available:
        return Check("instance type", WARN, f"{instance_type} is a GPU type: the cloud job uses the GPU image, but this "
                     "machine has no GPU image or NVIDIA runtime, so the smoke run uses the CPU image",
                     "GPU-only failures cannot show here; run the pre-flight where `make images-gpu` and an NVIDIA runtime exist")
    return Check("instance type", PASS, f"{instance_type} ({kind}: the {kind.upper()} image)")


def check_code(spec: JobSpec) -> Check:
    entry_point = spec.estimator.get("entry_point")
    if not entry_point:
        return Check("entry point", FAIL, "no entry_point", "pass entry_point='train_coach.py' (and source_dir)")
    source_dir = spec.source_dir
    if source_dir is not None and not source_dir.is_dir():
        return Check("entry point", FAIL, f"source_dir {source_dir} does not exist", "fix source_dir (relative to the job file)")
    path = spec.entry_point_path
    if not path.is_file():
        return Check("entry point", FAIL, f"{path} does not exist", "fix entry_point (a file in source_dir)")
    return Check("entry point", PASS, str(path))


def check_dependencies(spec: JobSpec) -> Check:
    dependencies = spec.estimator.get("dependencies") or []
    missing = [d for d in dependencies if not spec.resolve(d).exists()]
    if missing:
        return Check("dependencies", FAIL, f"missing: {', '.join(missing)}", "fix the dependencies paths (relative to the job file)")
    return Check("dependencies", PASS, f"{len(dependencies)} listed, all present")


def check_endpoint_cleanup(spec: JobSpec) -> Check:
    if spec.endpoint_deleted is None:
        return Check("endpoint clean-up", SKIP, "the job deploys no endpoint from a script")
    if spec.endpoint_deleted:
        return Check("endpoint clean-up", PASS, "the script deletes the endpoint it deploys")
    return Check("endpoint clean-up", WARN, "the script ends with its endpoint up: on SageMaker it keeps running "
                 "(and billing) after the script ends; locally the emulator removes it at exit",
                 "call predictor.delete_endpoint() when the script is done with it")


def check_hyperparameters(spec: JobSpec) -> Check:
    hyperparameters = spec.hyperparameters
    problems = []
    for key, value in hyperparameters.items():
        try:
            text = json.dumps(value)  # what the SDK sends
        except (TypeError, ValueError):
            problems.append(f"{key!r} is not JSON-serialisable ({type(value).__name__})")
            continue
        if len(key) > MAX_KEY_CHARS:
            problems.append(f"key {key[:40]!r}... has {len(key)} characters (limit {MAX_KEY_CHARS})")
        if len(text) > MAX_VALUE_CHARS:
            problems.append(f"{key!r} has a value of {len(text)} characters (limit {MAX_VALUE_CHARS})")
    total = len(hyperparameters) + len(SDK_RESERVED_HYPERPARAMETERS)
    if total > MAX_HYPERPARAMETERS:
        problems.append(f"{len(hyperparameters)} hyperparameters + {len(SDK_RESERVED_HYPERPARAMETERS)} the SDK adds "
                        f"= {total} (limit {MAX_HYPERPARAMETERS})")
    if problems:
        return Check("hyperparameters", FAIL, "; ".join(problems),
                     "SageMaker rejects the job: shorten the values (pass large data as an input channel or a file in source_dir)")
    return Check("hyperparameters", PASS, f"{len(hyperparameters)}, JSON-serialisable, within SageMaker's limits")


def check_role(spec: JobSpec) -> Check:
    role = str(spec.estimator.get("role") or "")
    if ROLE_ARN.match(role):
        return Check("role", PASS, role)
    if role and "/" not in role and ":" not in role:
        return Check("role", WARN, f"{role!r} is a role name: the SDK asks IAM for its ARN when the job is sent",
                     "give the full ARN, arn:aws:iam::<account>:role/<name>")
    return Check("role", FAIL, f"{role!r} is not an IAM role ARN", "use arn:aws:iam::<12-digit account>:role/<name>")


def check_output_path(spec: JobSpec) -> Check:
    output_path = spec.estimator.get("output_path")
    if output_path is None:
        return Check("output path", PASS, "not set: SageMaker uses the session's default bucket")
    if str(output_path).startswith("s3://") and len(str(output_path)) > len("s3://"):
        return Check("output path", PASS, str(output_path))
    return Check("output path", FAIL, f"{output_path!r} is not an s3:// URI: a cloud job can only write to S3",
                 "use output_path='s3://<bucket>/<prefix>' (the pre-flight maps it to a local folder)")


# -- in-image static checks ----------------------------------------------------------------

def check_in_image(spec: JobSpec, image: str) -> list[Check]:
    """Imports the entry point and the preset, and applies every override, inside the image."""
    source_dir = spec.source_dir or spec.entry_point_path.parent
    entry_point = spec.entry_point_path.relative_to(source_dir)
    preset = spec.hyperparameters.get("RLCOACH_PRESET")
    dependencies = [str(spec.resolve(d)) for d in spec.estimator.get("dependencies") or []]
    with tempfile.TemporaryDirectory(prefix="smrl-preflight-code-") as code:
        # The code as the job sees it in /opt/ml/code: source_dir and the dependencies.
        copy_job_code(source_dir, dependencies, Path(code), None if spec.source_dir else str(entry_point))
        command = ["docker", "run", "--rm", "--network", "none", "-v", f"{code}:/opt/ml/code:ro", image,
                   "python3", "-m", "smrl_coach.preflight", "--entry-point", str(entry_point),
                   "--hyperparameters", json.dumps(spec.hyperparameters, default=str)]
        if preset:
            command += ["--preset", str(preset)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    marker = [line for line in done.stdout.splitlines() if line.startswith("SMRL-PREFLIGHT ")]
    if not marker:
        return [Check("imports in the image", FAIL, f"the check did not run: {(done.stderr or done.stdout).strip()[-800:]}",
                      "build the images (`make images`)")]
    report = json.loads(marker[-1].removeprefix("SMRL-PREFLIGHT "))
    checks = []
    entry = report["entry_point"]
    if entry["ok"]:
        checks.append(Check("entry point imports", PASS, f"{entry_point} imports in {image}"))
    else:
        known = diagnose(entry["error"], spec.base_dir)
        checks.append(Check("entry point imports", FAIL, f"{entry_point} fails at import: {entry['error'].strip()}"
                            + (f"\n      cause: {known.cause}" if known else ""),
                            known.fix if known else "fix the entry point; it must import without errors (code "
                            "under __main__ runs only in the job)"))
    if not preset:
        checks.append(Check("preset", WARN, "no RLCOACH_PRESET hyperparameter: the entry point's default preset is used",
                            "set RLCOACH_PRESET so the pre-flight can check the preset and overrides before running"))
        return checks
    if not report.get("preset", {}).get("ok"):
        checks.append(Check("preset", FAIL, report.get("preset", {}).get("error", "not checked"),
                            "fix RLCOACH_PRESET or the preset file"))
        return checks
    checks.append(Check("preset", PASS, f"{preset} loads"))
    for override in report.get("overrides", []):
        checks.append(Check(f"override {override['name']}", PASS, override["applied"]) if override["ok"] else
                      Check(f"override {override['name']}", FAIL, override["error"],
                            "fix the hyperparameter name (rl.<field.path>[:Type]) or remove it"))
    return checks


# -- dynamic checks (the job, shrunk) ------------------------------------------------------

def _local_estimator(spec: JobSpec, instance_type: str, work: Path, steps: int) -> Any:
    from sagemaker.rl import RLEstimator

    from emulator.session import local_session

    kwargs = {k: v for k, v in spec.estimator.items() if k not in ("sagemaker_session", "instance_type", "output_path")}
    kwargs["source_dir"] = str(spec.source_dir) if spec.source_dir else None
    kwargs["entry_point"] = spec.estimator["entry_point"] if spec.source_dir else str(spec.entry_point_path)
    kwargs["dependencies"] = [str(spec.resolve(d)) for d in spec.estimator.get("dependencies") or []]
    hyperparameters = spec.hyperparameters
    if steps:
        hyperparameters["rl.improve_steps:EnvironmentSteps"] = steps
    hyperparameters["save_model"] = 1
    kwargs["hyperparameters"] = hyperparameters
    return RLEstimator(instance_type=instance_type, output_path=(work / "out").as_uri(),
                       sagemaker_session=local_session(work_dir=work / "session"), **kwargs)


def check_metrics(definitions: list[dict[str, str]], log_text: str) -> list[Check]:
    from emulator.metrics import normalise_line

    lines = [normalise_line(line) for line in log_text.splitlines()]
    checks = []
    for definition in definitions:
        name, regex = definition["Name"], definition["Regex"]
        try:
            pattern = re.compile(regex)
        except re.error as error:
            checks.append(Check(f"metric {name}", FAIL, f"regex {regex!r} does not compile: {error}", "fix the regex"))
            continue
        hits = [line for line in lines if pattern.search(line)]
        if hits:
            value = pattern.search(hits[-1]).group(1) if pattern.groups else hits[-1][:60]
            checks.append(Check(f"metric {name}", PASS, f"matched {len(hits)} log lines (last value {value})"))
        else:
            sample = [line for line in lines if line.strip()][-5:]
            checks.append(Check(f"metric {name}", FAIL, f"regex {regex!r} matched none of {len(lines)} log lines; "
                                "last lines tried:\n        " + "\n        ".join(sample),
                                "fix the regex against the log above; SageMaker would record no values"))
    return checks


def _archive_members(path: Path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        return {m.name.lstrip("./"): m.size for m in tar.getmembers() if m.isfile()}


def _observation(archive: Path) -> list[float] | None:
    """A valid observation for the served model: one Coach predicted for, or zeros of the input's shape."""
    with tarfile.open(archive) as tar:
        names = {m.name.lstrip("./"): m for m in tar.getmembers()}
        if "reference-predictions.json" in names:
            reference = json.load(tar.extractfile(names["reference-predictions.json"]))
            return next(iter(reference["inputs"].values()))[0]
        if "model-signature.json" in names:
            shape = json.load(tar.extractfile(names["model-signature.json"]))["inputs"][0]["shape"]
            return [0.0] * math.prod(shape[1:])
    return None


def run(spec: JobSpec, *, steps: int = DEFAULT_SMOKE_STEPS, static_only: bool = False, log: Log = print) -> Report:
    """Runs every check on `spec`; see the module docstring."""
    from emulator.engine import has_nvidia_runtime, require_engine
    from emulator.images import build_image, training_image

    started = time.monotonic()
    report = Report(job=str(spec.path))

    client = require_engine()
    gpu_available = has_nvidia_runtime(client) and bool(client.images.list(name=training_image("gpu")))
    for check in (check_toolkit(spec), check_instance_type(spec, gpu_available), check_code(spec),
                  check_dependencies(spec), check_hyperparameters(spec), check_role(spec), check_output_path(spec),
                  check_endpoint_cleanup(spec)):
        report.add(check, log)
    blocking = {c.name for c in report.checks if c.status == FAIL} & {"toolkit/framework", "entry point", "dependencies"}
    if blocking:
        report.add(Check("smoke run", SKIP, f"not run: {', '.join(sorted(blocking))} failed"), log)
        report.seconds = time.monotonic() - started
        return report

    local_type = "local_gpu" if instance_kind(spec.estimator.get("instance_type", "")) == "gpu" and gpu_available else "local"
    variant = "gpu" if local_type == "local_gpu" else "cpu"
    for kind in ("training", "inference"):
        build_image(kind, variant, log=lambda line: None)  # seconds when up to date
    begun = time.monotonic()
    in_image = check_in_image(spec, training_image(variant))
    in_image[0].seconds = time.monotonic() - begun  # one container ran them all
    for check in in_image:
        report.add(check, log)
    if static_only or any(c.status == FAIL for c in in_image):
        reason = "static checks only" if static_only else "the entry point, preset or an override failed"
        report.add(Check("smoke run", SKIP, f"not run: {reason}"), log)
        report.seconds = time.monotonic() - started
        return report

    with tempfile.TemporaryDirectory(prefix="smrl-preflight-") as tmp:
        _dynamic(spec, Path(tmp), local_type, steps, report, log, client)
    report.seconds = time.monotonic() - started
    return report


def _dynamic(spec: JobSpec, work: Path, local_type: str, steps: int, report: Report, log: Log, client: Any) -> None:
    from sagemaker.rl import RLEstimator

    from emulator.endpoints import endpoint
    from emulator.jobs import count_job_containers
    from emulator.serving import EndpointError
    from emulator.training import TrainingError, failure_message, fit_with_progress

    before = count_job_containers(client)
    estimator = _local_estimator(spec, local_type, work, steps)
    inputs = spec.fit.get("inputs")
    if inputs is not None and "s3://" in json.dumps(inputs, default=str):
        report.add(Check("inputs", WARN, "the job's fit() inputs are on S3, which the pre-flight cannot read: the smoke "
                         "run goes without them", "keep a small local copy and pass file:// inputs to check them too"), log)
        inputs = None
    log_file = work / "train.log"
    begun = time.monotonic()
    try:
        fit_with_progress(estimator, "smrl-preflight-" + time.strftime("%Y%m%d-%H%M%S"), log_file, lambda line: None,
                          inputs=inputs)
        trained = True
        report.add(Check("smoke training", PASS, f"{local_type}, {steps} environment steps: job succeeded",
                         seconds=time.monotonic() - begun), log)
    except (RuntimeError, TrainingError) as error:
        trained = False
        reason = failure_message(work / "out", log_file, error)
        known = diagnose(log_file.read_text() if log_file.exists() else str(error), spec.base_dir)
        report.add(Check("smoke training", FAIL, reason + (f"\n      cause: {known.cause}" if known else ""),
                         known.fix if known else "fix the error above (the full log is in the message)",
                         seconds=time.monotonic() - begun), log)
    log_text = log_file.read_text() if log_file.exists() else ""
    definitions = spec.estimator.get("metric_definitions") or RLEstimator.default_metric_definitions(spec.estimator["toolkit"])
    for check in check_metrics(definitions, log_text):
        report.add(check, log)

    output, model = work / "out" / "output.tar.gz", work / "out" / "model.tar.gz"
    if output.exists():
        checkpoints = [n for n in _archive_members(output) if n.startswith("data/checkpoint/")]
        report.add(Check("checkpoint", PASS, f"{len(checkpoints)} files in /opt/ml/output/data/checkpoint") if checkpoints else
                   Check("checkpoint", FAIL, "no checkpoint written", "let the launcher save checkpoints to /opt/ml/output/data/checkpoint"), log)
    if not trained or not model.exists():
        report.add(Check("endpoint", SKIP, "not run: no trained model"), log)
    else:
        members = _archive_members(model)
        size = model.stat().st_size
        exported = {"model.onnx"} & set(members) or {"model-symbol.json", "model-0000.params"} <= set(members)
        inference_entry = spec.deploy.get("entry_point") or spec.estimator["entry_point"]
        listing = ", ".join(f"{n} ({b / 1024:.0f} KiB)" for n, b in sorted(members.items()))
        if not members:
            report.add(Check("model archive", FAIL, "model.tar.gz is empty", "run with save_model=1 so the policy is exported"), log)
        elif exported:
            report.add(Check("model archive", PASS, f"{size / 1024:.0f} KiB: {listing}"), log)
        else:
            report.add(Check("model archive", WARN, f"{size / 1024:.0f} KiB, no model.onnx or MXNet export: {listing}",
                             "only a custom model_fn can serve this; run with save_model=1 to export the policy"), log)
        observation = _observation(model)
        source_dir = spec.resolve(spec.deploy.get("source_dir")) or spec.source_dir
        begun = time.monotonic()
        try:
            with endpoint(model, entry_point=inference_entry, source_dir=source_dir) as predictor:
                answer = predictor.predict(observation if observation is not None else [0.0])
            report.add(Check("endpoint", PASS, f"served with {inference_entry}; answered {json.dumps(answer)[:120]}",
                             seconds=time.monotonic() - begun), log)
        except (EndpointError, RuntimeError) as error:
            known = diagnose(str(error))
            report.add(Check("endpoint", FAIL, str(error) + (f"\n      cause: {known.cause}" if known else ""),
                             known.fix if known else "fix the inference script (model_fn/input_fn/predict_fn/"
                             "output_fn or transform_fn) or the exported model", seconds=time.monotonic() - begun), log)
    left = count_job_containers(client) - before
    report.add(Check("cleanup", PASS, "no container, network or endpoint left") if left <= 0 else
               Check("cleanup", FAIL, f"{left} containers left", "docker ps -a; report this as a bug"), log)
