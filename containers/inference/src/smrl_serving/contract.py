"""The SageMaker serving-container contract, written down once.

SageMaker (and the SDK's local mode) start the container as `docker run IMAGE serve`,
with the model archive extracted at /opt/ml/model, and talk to it over HTTP:
GET /ping (healthy?) and POST /invocations (predict). Everything else in the package
refers to these constants.
"""
import os
from pathlib import Path

MODEL_DIR = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
# Where the SDK puts the user's inference code when it repacks it into the model archive.
DEFAULT_CODE_DIR = MODEL_DIR / "code"

# -- environment variables the SDK / SageMaker set -----------------------------------------
PROGRAM_ENV = "SAGEMAKER_PROGRAM"  # the user's inference module, e.g. "inference.py"
SUBMIT_DIR_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"  # where that module lives
BIND_TO_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"  # honoured: the image has the accept-bind-to-port label
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
LOG_LEVEL_ENV = "SAGEMAKER_CONTAINER_LOG_LEVEL"

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 60
# Newer SageMaker toolkits look for this module when SAGEMAKER_PROGRAM is not set.
DEFAULT_PROGRAM = "inference.py"

# SageMaker's real-time payload limit; bigger requests get 413.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# SageMaker sends SIGKILL 30 s after SIGTERM; we promise to be gone well before (2 s).
GRACEFUL_SHUTDOWN_SECONDS = 1.5

# -- exported-model files (written by the training image's smrl_coach.model_export) ---------
SYMBOL_FILE = "model-symbol.json"
PARAMS_GLOB = "model-*.params"
SIGNATURE_FILE = "model-signature.json"
# The classic SageMaker MXNet export names its input shapes here instead.
LEGACY_SHAPES_FILE = "model-shapes.json"
ONNX_FILE = "model.onnx"

# -- media types ---------------------------------------------------------------------------
JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
# User functions get these bodies as str (like SageMaker's inference toolkit); others as bytes.
TEXT_TYPES = (JSON, CSV)
