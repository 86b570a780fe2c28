"""The job check: static checks of a job, run inside the training image by `smrl-local preflight`.

    python3 -m smrl_coach.job_check --code-dir /opt/ml/code --entry-point train_coach.py \
        --preset preset-cartpole-dqn --hyperparameters '{"rl.agent_params.algorithm.discount": 0.9}'

Imports the entry point (as a module, so its `if __name__ == "__main__"` block does not
run), loads the preset and applies each `rl.*` override to it, and prints one JSON object
saying what worked, as the last line after `contract.JOB_CHECK_MARKER`. Nothing trains.
(`contract.JOB_CHECK_MODULE` names this module for the host.)
"""
from __future__ import annotations

import argparse
import json
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

import smrl_contract as contract
from smrl_coach import overrides
from smrl_coach.errors import LauncherError
from smrl_coach.launcher import load_preset
from smrl_coach.overrides import Override


def _error(error: BaseException) -> str:
    if isinstance(error, LauncherError):
        return str(error)
    return "".join(traceback.format_exception_only(type(error), error)).strip() + "\n" + traceback.format_exc(limit=-3)


def check(code_dir: Path, entry_point: str, preset: str | None, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    sys.path.insert(0, str(code_dir))
    try:
        runpy.run_path(str(code_dir / entry_point), run_name="smrl_job_check")
        report["entry_point"] = {"ok": True}
    except BaseException as error:  # SystemExit too: an entry point must import quietly
        report["entry_point"] = {"ok": False, "error": _error(error)}
    # This image's launcher refuses an override that changes nothing; other launchers (the
    # public sagemaker_rl one) set it as a new attribute that nothing reads.
    report["refuses_unknown_overrides"] = uses_this_images_launcher(code_dir / entry_point)

    if preset is None:
        return report
    try:
        graph_manager = load_preset(code_dir, preset)
        report["preset"] = {"ok": True}
    except Exception as error:
        report["preset"] = {"ok": False, "error": _error(error)}
        return report

    report["overrides"] = check_overrides(graph_manager, hyperparameters)
    return report


def uses_this_images_launcher(entry_point: Path) -> bool:
    """Whether the entry point runs `smrl_coach.launcher` (it may import it inside a function)."""
    try:
        return "smrl_coach" in entry_point.read_text(errors="replace")
    except OSError:
        return False


def check_overrides(graph_manager: Any, hyperparameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Each `rl.*` hyperparameter applied to the preset: what it changed, or why it cannot."""
    results = []
    for name, value in hyperparameters.items():
        if not name.startswith(contract.COACH_OVERRIDE_PREFIX):
            continue
        try:
            applied = overrides.apply(Override.parse(name, value), graph_manager)
            results.append({"name": name, "ok": True, "applied": applied})
        except Exception as error:
            results.append({"name": name, "ok": False, "error": _error(error)})
    return results


def warn_unused(code_dir: Path, preset: str, hyperparameters: dict[str, Any]) -> list[str]:
    """A warning per `rl.*` hyperparameter that changes nothing in the preset (a misspelled
    field is set as a new attribute that nothing reads, silently, here as on SageMaker)."""
    try:
        graph_manager = load_preset(code_dir, preset)
    except Exception:
        return []  # the job itself reports a preset that does not load
    return [f"smrl-training warning: hyperparameter {r['name']} changes nothing in preset {preset}: "
            f"{r['error'].splitlines()[0]} Coach ignores it, here as on SageMaker: fix its name or remove it."
            for r in check_overrides(graph_manager, hyperparameters) if not r["ok"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code-dir", type=Path, default=contract.CODE_DIR)
    parser.add_argument("--entry-point")
    parser.add_argument("--preset")
    parser.add_argument("--hyperparameters", default="{}", help="JSON object")
    parser.add_argument("--warn-unused", action="store_true",
                        help="only print a warning per rl.* hyperparameter that changes nothing (in a job's log)")
    args = parser.parse_args()
    if args.warn_unused:
        for line in warn_unused(args.code_dir, args.preset, json.loads(args.hyperparameters)):
            print(line, flush=True)
        return
    if not args.entry_point:
        parser.error("--entry-point is required (unless --warn-unused)")
    report = check(args.code_dir, args.entry_point, args.preset, json.loads(args.hyperparameters))
    # The entry point or preset may print; the report is the last line.
    print(contract.JOB_CHECK_MARKER + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
