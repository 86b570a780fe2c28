"""Checks of a job that read what the user wrote and run nothing: no Docker, no container.

Each function checks one property and returns one ``Check`` with an exact message and,
when it is not a PASS, the fix.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from sagemaker.rl import RLFramework, RLToolkit
from sagemaker.rl.estimator import TOOLKIT_FRAMEWORK_VERSION_MAP

from emulator import contract
from emulator.images import INSTANCE_TYPE, instance_kind
from emulator.jobspec import JobSpec
from emulator.preflight.report import FAIL, PASS, SKIP, WARN, Check

# SageMaker's CreateTrainingJob limits on hyperparameters.
MAX_HYPERPARAMETERS = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 2500
# Hyperparameters the SDK adds to every framework job (they count towards the 100).
SDK_RESERVED_HYPERPARAMETERS = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_container_log_level",
                                "sagemaker_job_name", "sagemaker_region", "sagemaker_estimator")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# A failed one of these makes the job unrunnable: nothing that runs it can tell more.
BLOCKING = ("toolkit/framework", "entry point", "dependencies")
# Modules only the training image has; the serving image (MXNet) cannot import them.
TRAINING_ONLY_MODULES = ("rl_coach", "sagemaker_rl.coach_launcher", "smrl_coach")


def static_checks(spec: JobSpec, gpu_available: bool) -> list[Check]:
    """Every check that needs neither Docker nor the images, in report order."""
    return [check_toolkit(spec), check_instance_type(spec, gpu_available), check_code(spec),
            check_dependencies(spec), check_hyperparameters(spec), check_role(spec), check_output_path(spec),
            check_endpoint_cleanup(spec), check_serving_code(spec)]


def check_toolkit(spec: JobSpec) -> Check:
    est = spec.estimator
    toolkit, framework, version = est.get("toolkit"), est.get("framework"), est.get("toolkit_version")
    if est.get("image_uri"):
        ours = f"Coach {contract.TRAINING_VERSION} + MXNet {contract.INFERENCE_VERSION}"
        return Check("toolkit/framework", WARN, f"image_uri {est['image_uri']} is given: the cloud runs that image, "
                     f"the local run uses ours ({ours})", "drop image_uri to use SageMaker's RL image")
    names = (getattr(toolkit, "value", toolkit), getattr(framework, "value", framework), version)
    supported = TOOLKIT_FRAMEWORK_VERSION_MAP.get(str(names[0]), {}).get(str(version), {})
    if names[1] not in supported:
        choices = [f"{t} {v} + {f}"
                   for t, vs in TOOLKIT_FRAMEWORK_VERSION_MAP.items() for v, fs in vs.items() for f in fs]
        return Check("toolkit/framework", FAIL, f"SDK 2.x has no RL image for {names[0]} {version} + {names[1]}",
                     f"use one of: {', '.join(choices)}")
    if toolkit != RLToolkit.COACH or framework != RLFramework.MXNET:
        return Check("toolkit/framework", FAIL, f"{names[0]} {version} + {names[1]} is valid on SageMaker, but this "
                     "emulator has images for Coach + MXNet only",
                     "use toolkit=RLToolkit.COACH, framework=RLFramework.MXNET")
    return Check("toolkit/framework", PASS, f"coach {version} + mxnet {supported[names[1]]} (SDK 2.x image exists)")


def check_instance_type(spec: JobSpec, gpu_available: bool) -> Check:
    instance_type = spec.estimator.get("instance_type") or ""
    if instance_type in ("local", "local_gpu"):
        return Check("instance type", FAIL, f"{instance_type!r} runs only in local mode",
                     "give the cloud instance type, e.g. ml.c5.xlarge (CPU) or ml.p3.2xlarge (GPU)")
    kind = instance_kind(instance_type)
    if kind is None:
        shaped = INSTANCE_TYPE.match(instance_type)
        status = WARN if shaped else FAIL
        what = "not a family we know" if shaped else "not a SageMaker instance type"
        return Check("instance type", status, f"{instance_type!r} is {what}",
                     "use a SageMaker training type such as ml.c5.xlarge or ml.p3.2xlarge")
    if kind == "gpu" and not gpu_available:
        return Check("instance type", WARN, f"{instance_type} is a GPU type: the cloud job uses the GPU image, but "
                     "this machine has no GPU image or NVIDIA runtime, so the smoke run uses the CPU image",
                     "GPU-only failures cannot show here; run the pre-flight where `make images-gpu` and an NVIDIA "
                     "runtime exist")
    return Check("instance type", PASS, f"{instance_type} ({kind}: the {kind.upper()} image)")


def check_code(spec: JobSpec) -> Check:
    entry_point = spec.estimator.get("entry_point")
    if not entry_point:
        return Check("entry point", FAIL, "no entry_point", "pass entry_point='train_coach.py' (and source_dir)")
    source_dir = spec.source_dir
    if source_dir is not None and not source_dir.is_dir():
        return Check("entry point", FAIL, f"source_dir {source_dir} does not exist",
                     "fix source_dir (relative to the job file)")
    path = spec.entry_point_file
    if not path.is_file():
        return Check("entry point", FAIL, f"{path} does not exist", "fix entry_point (a file in source_dir)")
    return Check("entry point", PASS, str(path))


def check_dependencies(spec: JobSpec) -> Check:
    dependencies = spec.estimator.get("dependencies") or []
    missing = [d for d in dependencies if not spec.resolve(d).exists()]
    if missing:
        return Check("dependencies", FAIL, f"missing: {', '.join(missing)}",
                     "fix the dependencies paths (relative to the job file)")
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
                     "SageMaker rejects the job: shorten the values (pass large data as an input channel or a file "
                     "in source_dir)")
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


def check_serving_code(spec: JobSpec) -> Check:
    """The script the endpoint imports (deploy()'s entry_point, else the training entry
    point) must import without Coach: the serving image has MXNet, not Coach."""
    if not spec.deploy and spec.endpoint_deleted is None:
        return Check("serving code", SKIP, "the job deploys no endpoint")
    entry_point = spec.deploy.get("entry_point")
    source_dir = spec.resolve(spec.deploy["source_dir"]) if spec.deploy.get("source_dir") else spec.source_dir
    path = ((source_dir / entry_point) if source_dir else spec.resolve(entry_point)) if entry_point \
        else spec.entry_point_path
    if path is None or not path.is_file():
        return Check("serving code", SKIP, f"no inference script to read at {path}")
    found = training_only_import(path)
    if found is None:
        return Check("serving code", PASS, f"{path.name} imports nothing only the training image has")
    how = "deploy() has no entry_point, so the endpoint imports the training script" if not entry_point else \
        "deploy()'s entry_point"
    return Check("serving code", FAIL, f"{how} {path.name}, which imports {found} at module level: the serving "
                 f"image (MXNet {contract.INFERENCE_VERSION}) has no Coach, so the endpoint fails with "
                 "ModuleNotFoundError: No module named 'rl_coach'",
                 "give deploy() an inference script without Coach, as the public example does: "
                 "estimator.deploy(..., entry_point='deploy-mxnet-coach.py')")


def training_only_import(path: Path, _seen: set[Path] | None = None) -> str | None:
    """`module (file:line)` of the first module-level import in `path`, or in a module of its
    folder it imports, of a module only the training image has; None when there is none.
    Imports under ``if __name__ == "__main__":`` and inside functions do not run on import."""
    seen = _seen if _seen is not None else set()
    if path in seen:
        return None
    seen.add(path)
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None  # the entry point checks report it
    for node in _module_level(tree.body):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            if any(name == m or name.startswith(m + ".") for m in TRAINING_ONLY_MODULES):
                return f"{name} ({path.name}:{node.lineno})"
            local = path.parent / f"{name.split('.')[0]}.py"
            found = training_only_import(local, seen) if local.is_file() else None
            if found:
                return found
    return None


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and "__main__" not in ast.unparse(node.test):
            found += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level(node.body)
    return found
