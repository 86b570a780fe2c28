"""Known causes of failed jobs and endpoints: the log line that shows each, and its fix.

A failed job's log names the symptom (`ModuleNotFoundError`, `Library "GL" not found`);
pre-flight reports the cause and the fix. One entry per cause, each found by the first
log line it matches. Pure logic: no Docker, no SDK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REBUILD_TRAINING = "rebuild the training image: `smrl-local build --image training --force`"
REBUILD_INFERENCE = "rebuild the inference image: `smrl-local build --image inference --force`"


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    fix: str
    line: str


@dataclass(frozen=True)
class KnownCause:
    pattern: re.Pattern[str]
    cause: str
    fix: str


KNOWN_CAUSES = (
    KnownCause(
        re.compile(r'Library "GL" not found|NoSuchDisplayException|Cannot connect to "?None"?|GLX is not supported'),
        "the job renders (dump_gifs, dump_mp4 or env.render()) and its container has no display or OpenGL",
        f"{REBUILD_TRAINING}; its `train` runs every job under a virtual display (xvfb-run), as AWS's RL images do",
    ),
    KnownCause(
        re.compile(r"Can't determine the RL Agent used from the ONNX graph"),
        "sagemaker_rl.onnx_utils tells the agent from the ONNX export's first output, and this export lists "
        "another head first (MXNet 1.9's order, not MXNet 1.3's)",
        f"{REBUILD_TRAINING}; its Coach exports the policy head first (patch 08)",
    ),
    KnownCause(
        re.compile(r"Flatten operator only supports axis=1|onnx2mx.*[Ss]queeze"),
        "MXNet 1.9's ONNX importer cannot read this export's opset-13 Flatten, Reshape or Squeeze nodes",
        f"{REBUILD_INFERENCE}; its importer rewrites them (smrl_serving.onnx_compat)",
    ),
)
_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '(?P<module>[\w.]+)'")


def diagnose(log_text: str, search_root: Path | None = None) -> Diagnosis | None:
    """The known cause that `log_text` (a job's or endpoint's log or error) shows, if any.

    Args:
        log_text: What the job or endpoint printed, or the error it raised.
        search_root: The job's folder: a missing module found as a folder or file below it
            is named in the fix as the dependency to add.
    """
    for line in log_text.splitlines():
        missing = _MISSING_MODULE.search(line)
        if missing:
            return _missing_module(missing["module"], line.strip(), search_root)
        for known in KNOWN_CAUSES:
            if known.pattern.search(line):
                return Diagnosis(known.cause, known.fix, line.strip())
    return None


def _missing_module(module: str, line: str, search_root: Path | None) -> Diagnosis:
    top = module.split(".")[0]
    if top == "rl_coach":  # only the training image has Coach
        return Diagnosis("the endpoint imports a script that imports Coach (rl_coach), which the serving image "
                         "(MXNet) does not have: without an entry_point, deploy() serves with the training script",
                         "give deploy() an inference script without Coach: "
                         "estimator.deploy(..., entry_point='deploy-mxnet-coach.py')", line)
    found = _find_package(top, search_root) if search_root else None
    cause = (f"the entry point imports {top}, which is not in the job's code (source_dir + dependencies) "
             "nor in the image")
    if found is not None and search_root is not None:
        shown = found.relative_to(search_root)
        return Diagnosis(cause, f"add it to the estimator: dependencies=[{str(shown)!r}] (the cloud copies each "
                         "dependency beside the entry point, as local jobs do)", line)
    return Diagnosis(cause, f"if {top} is a pip package, list it in requirements.txt in source_dir; if it is your "
                     "code, add its folder to dependencies=[...]", line)


def _find_package(name: str, root: Path, depth: int = 4) -> Path | None:
    """A folder `name` (with Python files) or a file `name.py` at most `depth` levels below `root`."""
    level = [root]
    for _ in range(depth):
        following = []
        for folder in level:
            for candidate in (folder / name, folder / f"{name}.py"):
                if candidate.is_file() or (candidate.is_dir() and any(candidate.glob("*.py"))):
                    return candidate
            following += [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        level = following
    return None
