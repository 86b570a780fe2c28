"""The container contract, written down once for the host and both images.

SageMaker (and the SDK's local mode) hand a training job to a container through files
under /opt/ml and start a serving container that answers HTTP on port 8080; our images
add a few names of their own (export files, markers, error prefixes). The host package
imports this module as ``emulator.contract``; `smrl-local build` copies this very file
into both images as ``smrl_contract`` (``tests/test_architecture.py`` proves that they
hold the same bytes). Standard library only: it runs on the host and in the images.
Paths are POSIX paths, as on every host that runs the Docker engine this tool drives.
"""

from __future__ import annotations

from pathlib import Path

# -- /opt/ml: what SageMaker mounts and writes --------------------------------------------
BASE_DIR = Path("/opt/ml")
INPUT_DIR = BASE_DIR / "input"
INPUT_CONFIG_DIR = INPUT_DIR / "config"
INPUT_DATA_DIR = INPUT_DIR / "data"
HYPERPARAMETERS_FILE = INPUT_CONFIG_DIR / "hyperparameters.json"
RESOURCE_CONFIG_FILE = INPUT_CONFIG_DIR / "resourceconfig.json"
INPUT_DATA_CONFIG_FILE = INPUT_CONFIG_DIR / "inputdataconfig.json"
CODE_DIR = BASE_DIR / "code"
MODEL_DIR = BASE_DIR / "model"
OUTPUT_DIR = BASE_DIR / "output"
OUTPUT_DATA_DIR = OUTPUT_DIR / "data"
OUTPUT_INTERMEDIATE_DIR = OUTPUT_DIR / "intermediate"
# Where the Coach launcher saves checkpoints; SageMaker packs output/data into output.tar.gz.
CHECKPOINT_DIR = OUTPUT_DATA_DIR / "checkpoint"
CHECKPOINT_ARCHIVE_PREFIX = "data/checkpoint/"
# What SageMaker restores from CheckpointConfig.S3Uri before the job starts and uploads while
# it runs (checkpoint_local_path; this is its default). The Coach launcher checkpoints here.
CHECKPOINT_LOCAL_DIR = BASE_DIR / "checkpoints"
# An input channel of this name holds checkpoints to start from (e.g. another job's).
CHECKPOINT_CHANNEL = "checkpoint"
CHECKPOINT_CHANNEL_DIR = INPUT_DATA_DIR / CHECKPOINT_CHANNEL
# Replay memories bigger than this many MB (container variable) are not saved in checkpoints.
CHECKPOINT_MEMORY_LIMIT_ENV = "SMRL_CHECKPOINT_MEMORY_MB"
# Log lines of the training state (smrl_coach.training_state), read back by the host.
CHECKPOINT_SAVED_LOG = "Saved checkpoint"
RESUMED_LOG = "Resumed from checkpoint"
STOPPED_LOG = "Stopped by SIGTERM"
# The exit status of a job that SIGTERM stopped after it saved a checkpoint (128 + SIGTERM).
STOPPED_EXIT_CODE = 143
# How long SageMaker waits after SIGTERM before it kills a training container.
STOP_GRACE_SECONDS = 120
# The training image's entry point writes its PID here: the container's PID 1 (a shell)
# passes SIGTERM to it.
ENTRY_POINT_PID_FILE = Path("/tmp/smrl-entry-point.pid")
# What SageMaker uploads to the job's output path: /opt/ml/model and /opt/ml/output/data, packed.
MODEL_ARCHIVE = "model.tar.gz"
OUTPUT_ARCHIVE = "output.tar.gz"
# SageMaker shows the first lines of this file as the job's FailureReason.
FAILURE_FILE = OUTPUT_DIR / "failure"
# The training toolkit's empty marker of a job whose entry point exited 0.
SUCCESS_FILE = OUTPUT_DIR / "success"

# -- the job's code and its requirements ---------------------------------------------------
# requirements.txt in the code folder is installed before the entry point, as the training
# toolkit does, from wheels the host resolved into this folder (containers have no network).
REQUIREMENTS_FILE = "requirements.txt"
JOB_WHEELHOUSE_DIR = Path("/opt/smrl/job-wheelhouse")

# -- hyperparameters the SDK adds for the container itself (never passed to the script) ------
PROGRAM_PARAM = "sagemaker_program"
SUBMIT_DIR_PARAM = "sagemaker_submit_directory"
RESERVED_PARAM_PREFIX = "sagemaker_"
COACH_PRESET_PARAM = "RLCOACH_PRESET"
SAVE_MODEL_PARAM = "save_model"
# `rl.<field.path>[:TypeName]` hyperparameters override fields of the Coach preset.
COACH_OVERRIDE_PREFIX = "rl."
IMPROVE_STEPS_PARAM = "rl.improve_steps:EnvironmentSteps"

# -- how the training image reports --------------------------------------------------------
# The entry point's exit status when the contract itself is broken (no script, ...).
CONTRACT_ERROR_EXIT_CODE = 2
# The Coach launcher prints a user error (bad preset, hyperparameter) on one line after this.
COACH_ERROR_PREFIX = "smrl-coach error: "
# `python3 -m <JOB_CHECK_MODULE>` imports a job's code inside the image and prints its
# report as the last line, after this marker.
JOB_CHECK_MODULE = "smrl_coach.job_check"
JOB_CHECK_MARKER = "SMRL-JOB-CHECK "
# The Coach fast path is on unless this container variable is one of FAST_PATH_OFF_VALUES.
FAST_PATH_ENV = "SMRL_COACH_FAST"
FAST_PATH_OFF_VALUES = ("0", "false", "no", "off", "stock")

# -- the exported policy in /opt/ml/model (written by training, read by serving) -------------
ONNX_FILE = "model.onnx"
SYMBOL_FILE = "model-symbol.json"
PARAMS_FILE = "model-0000.params"
PARAMS_GLOB = "model-*.params"
SIGNATURE_FILE = "model-signature.json"
# Coach's own outputs for a few fixed observations: lets anyone check a loaded export.
REFERENCE_FILE = "reference-predictions.json"
# The classic SageMaker MXNet export names its input shapes here instead.
LEGACY_SHAPES_FILE = "model-shapes.json"

# -- serving -------------------------------------------------------------------------------
SERVING_PORT = 8080
MODEL_DIR_ENV = "SM_MODEL_DIR"
# Where the SDK puts the user's inference code when it repacks it into the model archive.
SERVING_CODE_SUBDIR = "code"
PROGRAM_ENV = "SAGEMAKER_PROGRAM"  # the user's inference module, e.g. "inference.py"
SUBMIT_DIR_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"  # where that module lives
BIND_TO_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"  # honoured: the image has the accept-bind-to-port label
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
LOG_LEVEL_ENV = "SAGEMAKER_CONTAINER_LOG_LEVEL"
DEFAULT_TIMEOUT_SECONDS = 60
# Newer SageMaker toolkits look for this module when SAGEMAKER_PROGRAM is not set.
DEFAULT_PROGRAM = "inference.py"
# SageMaker's real-time payload limit; bigger requests get 413.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# SageMaker sends SIGKILL 30 s after SIGTERM; we promise to be gone well before (2 s).
GRACEFUL_SHUTDOWN_SECONDS = 1.5
JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
# User functions get these bodies as str (like SageMaker's inference toolkit); others as bytes.
TEXT_TYPES = (JSON, CSV)

# -- the images and the SDK URIs they stand in for -----------------------------------------
VARIANTS = ("cpu", "gpu")
TRAINING_REPOSITORY = "sagemaker-rl-local/coach-mxnet"
TRAINING_VERSION = "1.0.1"  # Coach
INFERENCE_REPOSITORY = "sagemaker-rl-local/mxnet-inference"
INFERENCE_VERSION = "1.9.1"  # MXNet
# What `RLEstimator(toolkit=COACH, framework=MXNET)` asks the SDK for: the image
# `sagemaker-rl-mxnet:coach0.11.0-{cpu,gpu}-py3`, and for its model `MXNetModel` 1.3.
SDK_COACH_VERSION = "0.11.0"
SDK_MXNET_SERVING_VERSION = "1.3"
SDK_PY_VERSION = "py3"
# Local jobs use no role or account; the SDK still wants ARN-shaped ones.
PLACEHOLDER_ACCOUNT = "000000000000"
PLACEHOLDER_ROLE = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/sagemaker-rl-local"
# The only credentials local sessions, runs, containers and the local S3 ever see.
PLACEHOLDER_ACCESS_KEY = "SMRLLOCALPLACEHOLDER"
PLACEHOLDER_SECRET_KEY = "smrl-local-placeholder-not-a-secret"


def image_tag(repository: str, version: str, variant: str) -> str:
    """The local tag of one of our images, e.g. ``sagemaker-rl-local/coach-mxnet:1.0.1-cpu``."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown image variant {variant!r}: use one of {VARIANTS}.")
    return f"{repository}:{version}-{variant}"


def fast_path_requested(value: str | None) -> bool:
    """Whether the container variable FAST_PATH_ENV (unset: on) asks for the Coach fast path."""
    return (value or "1").strip().lower() not in FAST_PATH_OFF_VALUES
