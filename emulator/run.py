"""`smrl-local run PATH`: a user's SageMaker script or notebook, written for the cloud, run
unchanged on this machine.

The local S3 server starts first (``emulator.s3``); the user's code then runs in a process of
its own (a Python process for a script, a Jupyter kernel for a notebook) whose environment
holds placeholder credentials, the region and the local S3 endpoint, and which installs
``emulator.runtime`` before the first line of user code. Jobs, endpoints and the S3 server
are gone when the run ends, however it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emulator import notebooks, resources
from emulator.engine import EngineError, has_nvidia_runtime, require_engine
from emulator.errors import UserError
from emulator.images import default_region
from emulator.inputs import check_output_folder
from emulator.progress import Log
from emulator.runtime import run_environment
from emulator.s3 import LocalS3

KERNEL_HOOK = "from emulator import runtime\nruntime.install()\n"
DEFAULT_OUTPUT_DIR = Path("output")
# Runs the script as `python script.py` would, after installing the runtime; parameters
# are bound as globals, as papermill binds a notebook's.
SCRIPT_BOOTSTRAP = """\
import json, runpy, sys
from emulator import runtime
runtime.install()
script, params = sys.argv[1], json.loads(sys.argv[2])
sys.argv = [script]
runpy.run_path(script, init_globals=params, run_name="__main__")
"""


class RunError(UserError):
    """The user's code could not run, or failed; the message names where and why."""


@dataclass
class RunResult:
    path: Path
    seconds: float
    executed_copy: Path | None = None


def parse_param(text: str) -> tuple[str, Any]:
    """`NAME=VALUE`, the value read as JSON when it is JSON (`steps=100`, `name="x"`), else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise RunError(f"--param {text!r}: expected NAME=VALUE with NAME a Python identifier, e.g. --param steps=1000.")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def run(path: str | Path, params: dict[str, Any] | None = None, output_dir: str | Path = DEFAULT_OUTPUT_DIR,
        log: Log = print, environment: dict[str, str] | None = None, echo: bool = True) -> RunResult:
    """Runs the script or notebook at `path` as the module docstring says, with
    `environment` added to the run's; a notebook's executed copy goes to
    `<output_dir>/<name>-<time>/<name>.ipynb`, and its cells' output is shown as they run
    when `echo`."""
    path = Path(path).resolve()
    if not path.is_file():
        raise RunError(f"No script or notebook at {path}. Pass a .py or .ipynb file.")
    if path.suffix not in (".py", ".ipynb"):
        raise RunError(f"{path.name}: `smrl-local run` runs a .py script or an .ipynb notebook.")
    if path.suffix == ".ipynb":
        check_output_folder(output_dir)
    gpu = _engine_has_gpus()
    work_dir = resources.work_dir()
    started = time.monotonic()
    with LocalS3(work_dir / "s3") as s3:
        log(f"local S3: {s3.endpoint} (data in {s3.data_dir})")
        env = {**run_environment(s3.endpoint, default_region(), str(work_dir), gpu), **(environment or {})}
        if path.suffix == ".py":
            _run_script(path, params or {}, env)
            return RunResult(path, time.monotonic() - started)
        run_dir = Path(output_dir).resolve() / f"{path.stem}-{datetime.now():%Y%m%d-%H%M%S}"
        run_dir.mkdir(parents=True)
        executed = run_dir / path.name
        notebooks.execute(path, executed, env, KERNEL_HOOK, params or {}, log, echo=echo)
        return RunResult(path, time.monotonic() - started, executed)


def _engine_has_gpus() -> bool:
    """Whether ml.* GPU types can run as local_gpu; without an engine, jobs will say what is missing."""
    try:
        client = require_engine()
    except EngineError:
        return False
    try:
        return has_nvidia_runtime(client)
    finally:
        client.close()


def _run_script(path: Path, params: dict[str, Any], env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT_BOOTSTRAP, str(path), json.dumps(params)],
                          cwd=path.parent, env=env)
    if done.returncode != 0:
        raise RunError(f"{path.name} exited with status {done.returncode}; its output is above.")
