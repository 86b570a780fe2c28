"""`train`: run the user's entry point the way a SageMaker training container does.

Exit status is the script's; SIGTERM (how SageMaker stops a job, e.g. a spot interruption)
is passed on to the script, so that it can save a checkpoint before the SIGKILL. On
success /opt/ml/output/success is written, as the SageMaker training toolkit does. When
the contract itself is broken (no entry point, a missing file) the reason goes to
/opt/ml/output/failure, as on SageMaker (both through `smrl_training.outcome`).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback

from sagemaker_training import environment as toolkit_environment

import smrl_contract as contract
from smrl_training.environment import TrainingEnvironment
from smrl_training.outcome import write_failure, write_success


class ContractError(RuntimeError):
    """The job handed to the container cannot be run as given."""


def _install_requirements(requirements) -> int:
    """pip-installs the job's requirements.txt, as the training toolkit does, from the wheels
    the host resolved (no network here)."""
    print(f"smrl-training: installing {requirements} from {contract.JOB_WHEELHOUSE_DIR}", flush=True)
    return subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                           "--disable-pip-version-check", "--find-links", str(contract.JOB_WHEELHOUSE_DIR),
                           "--requirement", str(requirements)]).returncode


def _sm_variables() -> dict[str, str]:
    """The SM_* variables user scripts read (`SM_MODEL_DIR`, `SM_CHANNEL_TRAINING`, `SM_HPS`, ...),
    computed by the sagemaker-training toolkit itself (which reads the same /opt/ml files),
    so that entry points see exactly what the cloud's toolkit gives."""
    return toolkit_environment.Environment().to_env_vars()


def _command(env: TrainingEnvironment) -> list[str]:
    if not env.program:
        raise ContractError(
            f"No entry point: the hyperparameter {contract.PROGRAM_PARAM!r} is missing. "
            "Pass entry_point=... (and source_dir=...) to the estimator."
        )
    script = env.code_dir / env.program
    if not script.is_file():
        present = sorted(p.name for p in env.code_dir.glob("*"))[:20] if env.code_dir.is_dir() else []
        raise ContractError(
            f"Entry point {env.program!r} not found in {env.code_dir} (it holds: {present}). "
            "Check entry_point and source_dir of the estimator."
        )
    if script.suffix == ".py":
        return [sys.executable, "-u", str(script), *env.user_args()]
    return ["/bin/sh", str(script), *env.user_args()]


def _warn_unused_overrides(env: TrainingEnvironment, child_env: dict[str, str]) -> subprocess.Popen | None:
    """Beside an entry point that is not this image's launcher (which refuses them itself),
    a check that prints a warning for each `rl.*` hyperparameter that changes nothing in the
    preset; it loads the preset in a process of its own, while the job starts."""
    preset = env.hyperparameters.get(contract.COACH_PRESET_PARAM)
    overrides = {k: v for k, v in env.hyperparameters.items() if k.startswith(contract.COACH_OVERRIDE_PREFIX)}
    script = env.code_dir / (env.program or "")
    if not preset or not overrides or not script.is_file() or "smrl_coach" in script.read_text(errors="replace"):
        return None
    return subprocess.Popen([sys.executable, "-m", contract.JOB_CHECK_MODULE, "--warn-unused", "--code-dir",
                             str(env.code_dir), "--preset", str(preset), "--hyperparameters", json.dumps(overrides)],
                            cwd=env.code_dir, env=child_env)


def main() -> int:
    contract.ENTRY_POINT_PID_FILE.write_text(str(os.getpid()))
    try:
        env = TrainingEnvironment.from_files()
        command = _command(env)
        variables = _sm_variables()  # reads resourceconfig.json & co., which SageMaker always writes
    except (ContractError, ValueError, OSError) as error:
        message = f"{type(error).__name__}: {error}"
        print(message, file=sys.stderr, flush=True)
        write_failure(message)
        return contract.CONTRACT_ERROR_EXIT_CODE

    contract.OUTPUT_DATA_DIR.mkdir(parents=True, exist_ok=True)
    contract.MODEL_DIR.mkdir(parents=True, exist_ok=True)
    requirements = env.code_dir / contract.REQUIREMENTS_FILE
    if requirements.is_file():
        status = _install_requirements(requirements)
        if status != 0:
            write_failure(f"pip could not install {requirements} from the job's wheelhouse (exit {status}); "
                          "see the log above.")
            return status
    child_env = {**os.environ, **variables}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(env.code_dir), os.environ.get("PYTHONPATH")]))
    print(f"smrl-training: running {' '.join(command)}", flush=True)
    checker = _warn_unused_overrides(env, child_env)
    script = subprocess.Popen(command, cwd=env.code_dir, env=child_env)
    signal.signal(signal.SIGTERM, lambda signum, frame: script.send_signal(signum))
    try:
        returncode = script.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if checker is not None:
            checker.wait()
    if returncode == 0:
        write_success()
    elif returncode == contract.STOPPED_EXIT_CODE:
        write_failure(f"The entry point {env.program} was stopped by SIGTERM (exit {returncode}); "
                      "it saved a checkpoint to resume from.")
    elif not contract.FAILURE_FILE.exists():
        write_failure(f"The entry point {env.program} exited with status {returncode}; see the log above.")
    return returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # the contract's own bug: still leave a reason behind
        write_failure(traceback.format_exc())
        raise
