"""The SageMaker training-container contract, written down once.

Paths and names that SageMaker (and the SDK's local mode) use to hand a job to a
container. Everything else in the image refers to these constants.
"""
from pathlib import Path

BASE_DIR = Path("/opt/ml")
INPUT_DIR = BASE_DIR / "input"
INPUT_CONFIG_DIR = INPUT_DIR / "config"
INPUT_DATA_DIR = INPUT_DIR / "data"
HYPERPARAMETERS_FILE = INPUT_CONFIG_DIR / "hyperparameters.json"
RESOURCE_CONFIG_FILE = INPUT_CONFIG_DIR / "resourceconfig.json"
INPUT_DATA_CONFIG_FILE = INPUT_CONFIG_DIR / "inputdataconfig.json"

MODEL_DIR = BASE_DIR / "model"
CODE_DIR = BASE_DIR / "code"
OUTPUT_DIR = BASE_DIR / "output"
OUTPUT_DATA_DIR = OUTPUT_DIR / "data"
OUTPUT_INTERMEDIATE_DIR = OUTPUT_DIR / "intermediate"
CHECKPOINT_DIR = OUTPUT_DATA_DIR / "checkpoint"
# requirements.txt in the code folder is installed before the entry point, as the training
# toolkit does, from wheels the host resolved into this folder (containers have no network).
REQUIREMENTS_FILE = "requirements.txt"
JOB_WHEELHOUSE_DIR = Path("/opt/smrl/job-wheelhouse")
# SageMaker shows the first lines of this file as the job's FailureReason.
FAILURE_FILE = OUTPUT_DIR / "failure"
# The training toolkit's empty marker of a job whose entry point exited 0.
SUCCESS_FILE = OUTPUT_DIR / "success"

# Hyperparameters the SDK adds for the container itself; they never reach the user script.
PROGRAM_PARAM = "sagemaker_program"
SUBMIT_DIR_PARAM = "sagemaker_submit_directory"
RESERVED_PARAM_PREFIX = "sagemaker_"

# The user entry point's process exit code when the contract itself is broken (no script, ...).
CONTRACT_ERROR_EXIT_CODE = 2
