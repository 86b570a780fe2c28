"""Checks of a job inside the training image, with nothing trained.

One container, without a network, gets the job's code as the job would see it in
/opt/ml/code and runs the image's job checker (``contract.JOB_CHECK_MODULE``): it imports
the entry point, loads the preset and applies each ``rl.*`` override, then prints a JSON
report after ``contract.JOB_CHECK_MARKER``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from emulator import contract
from emulator.diagnosis import diagnose
from emulator.jobcode import copy_job_code
from emulator.jobspec import JobSpec
from emulator.preflight.report import FAIL, PASS, WARN, Check


def run_job_check(client: docker.DockerClient, spec: JobSpec, image: str) -> tuple[dict[str, Any] | None, str]:
    """The image's report on the job's code, or None and what the container printed instead."""
    source_dir = spec.code_dir
    entry_point = spec.entry_point_file.relative_to(source_dir)
    preset = spec.hyperparameters.get(contract.COACH_PRESET_PARAM)
    dependencies = [str(spec.resolve(d)) for d in spec.estimator.get("dependencies") or []]
    command = ["python3", "-m", contract.JOB_CHECK_MODULE, "--entry-point", str(entry_point),
               "--hyperparameters", json.dumps(spec.hyperparameters, default=str)]
    if preset:
        command += ["--preset", str(preset)]
    with tempfile.TemporaryDirectory(prefix="smrl-preflight-code-") as code:
        # The code as the job sees it in /opt/ml/code: source_dir and the dependencies.
        copy_job_code(source_dir, dependencies, Path(code), None if spec.source_dir else str(entry_point))
        container = client.containers.run(image, command, detach=True, network_mode="none",
                                          volumes={code: {"bind": str(contract.CODE_DIR), "mode": "ro"}})
        try:
            container.wait(timeout=300)
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        finally:
            container.remove(force=True)
    reports = [line for line in output.splitlines() if line.startswith(contract.JOB_CHECK_MARKER)]
    if not reports:
        return None, output
    return json.loads(reports[-1].removeprefix(contract.JOB_CHECK_MARKER)), output


def check_in_image(client: docker.DockerClient, spec: JobSpec, image: str) -> list[Check]:
    """Entry point import, preset and overrides, checked in `image`; the first check carries the time."""
    report, output = run_job_check(client, spec, image)
    if report is None:
        return [Check("imports in the image", FAIL, f"the check did not run: {output.strip()[-800:]}",
                      "build the images (`make images`)")]
    entry_point = spec.entry_point_file.relative_to(spec.code_dir)
    checks = [_entry_point_check(report["entry_point"], entry_point, image, spec)]
    preset = spec.hyperparameters.get(contract.COACH_PRESET_PARAM)
    if not preset:
        checks.append(Check("preset", WARN,
                            "no RLCOACH_PRESET hyperparameter: the entry point's default preset is used",
                            "set RLCOACH_PRESET so the pre-flight can check the preset and overrides before running"))
        return checks
    if not report.get("preset", {}).get("ok"):
        checks.append(Check("preset", FAIL, report.get("preset", {}).get("error", "not checked"),
                            "fix RLCOACH_PRESET or the preset file"))
        return checks
    checks.append(Check("preset", PASS, f"{preset} loads"))
    refused = report.get("refuses_unknown_overrides", True)
    for override in report.get("overrides", []):
        if override["ok"]:
            checks.append(Check(f"override {override['name']}", PASS, override["applied"]))
        elif refused:  # this image's launcher fails the job
            checks.append(Check(f"override {override['name']}", FAIL, override["error"],
                                "fix the hyperparameter name (rl.<field.path>[:Type]) or remove it"))
        else:  # another launcher sets it where nothing reads it: the job runs without it
            checks.append(Check(f"override {override['name']}", WARN, override["error"] + " The entry point's "
                                "launcher accepts it silently and nothing uses it, here as on SageMaker.",
                                "fix the hyperparameter name (rl.<field.path>[:Type]) or remove it"))
    return checks


def _entry_point_check(result: dict[str, Any], entry_point: Path, image: str, spec: JobSpec) -> Check:
    if result["ok"]:
        return Check("entry point imports", PASS, f"{entry_point} imports in {image}")
    known = diagnose(result["error"], spec.base_dir)
    return Check("entry point imports", FAIL, f"{entry_point} fails at import: {result['error'].strip()}"
                 + (f"\n      cause: {known.cause}" if known else ""),
                 known.fix if known else "fix the entry point; it must import without errors (code "
                 "under __main__ runs only in the job)")
