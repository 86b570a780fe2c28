"""Runs every pre-flight check of a job in order; see ``emulator.preflight``."""


from __future__ import annotations

import time

from emulator.engine import has_nvidia_runtime, require_engine
from emulator.images import build_image, training_image, variant_for
from emulator.jobspec import JobSpec
from emulator.preflight import DEFAULT_SMOKE_STEPS
from emulator.preflight.image_checks import check_in_image
from emulator.preflight.report import FAIL, SKIP, Check, Report
from emulator.preflight.smoke_run import smoke_run
from emulator.preflight.static_checks import BLOCKING, instance_kind, static_checks
from emulator.progress import Log, quiet


def run(spec: JobSpec, *, steps: int = DEFAULT_SMOKE_STEPS, static_only: bool = False, log: Log = print) -> Report:
    """Runs every check on `spec`; see the module docstring. Stops before running what an
    earlier FAIL already condemns, and says so with a SKIP."""
    started = time.monotonic()
    report = Report(job=str(spec.path))
    client = require_engine()
    try:
        gpu_available = has_nvidia_runtime(client) and bool(client.images.list(name=training_image("gpu")))
        for check in static_checks(spec, gpu_available):
            report.add(check, log)
        blocking = report.failed(*BLOCKING)
        if blocking:
            report.add(Check("smoke run", SKIP, f"not run: {', '.join(sorted(blocking))} failed"), log)
            return report

        wants_gpu = instance_kind(spec.estimator.get("instance_type", "")) == "gpu"
        local_type = "local_gpu" if wants_gpu and gpu_available else "local"
        variant = variant_for(local_type)
        for kind in ("training", "inference"):
            build_image(kind, variant, log=quiet)  # seconds when up to date
        begun = time.monotonic()
        in_image = check_in_image(client, spec, training_image(variant))
        in_image[0].seconds = time.monotonic() - begun  # one container ran them all
        for check in in_image:
            report.add(check, log)
        if static_only or any(c.status == FAIL for c in in_image):
            reason = "static checks only" if static_only else "the entry point, preset or an override failed"
            report.add(Check("smoke run", SKIP, f"not run: {reason}"), log)
            return report

        smoke_run(client, spec, local_type, steps, report, log)
        return report
    finally:
        report.seconds = time.monotonic() - started
        client.close()
