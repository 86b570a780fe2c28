"""Run SageMaker RL (Coach + MXNet) training on this machine, with no AWS account."""

from __future__ import annotations

import logging
import os

# Set before any module of this package imports sagemaker, which reads both at import:
# the v2 deprecation notice, and boto's probe of the EC2 instance-metadata endpoint.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# The SDK logs at INFO, on every import, which config files it did not find; the session
# passes its own SDK defaults, so those lines say nothing useful here.
logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

__all__ = ["TrainingJobFailed", "endpoint", "local_session"]


def __getattr__(name: str):
    # Lazy, so that `python -m emulator.engine` and the CLI start without importing the
    # SageMaker SDK (1.5-2 s).
    if name == "local_session":
        from emulator.session import local_session

        return local_session
    if name == "endpoint":
        from emulator.endpoints import endpoint

        return endpoint
    if name == "TrainingJobFailed":  # what a failed fit() raises
        from emulator.job_failure import TrainingJobFailed

        return TrainingJobFailed
    raise AttributeError(f"module 'emulator' has no attribute {name!r}")
