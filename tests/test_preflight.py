"""`smrl-local preflight`: the example job passes; each seeded mistake gets its FAIL (or WARN).

Job files are written the way a user writes them for the cloud; the pre-flight runs them
shrunk in the real images.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import job_container_count
from emulator import jobspec
from emulator.preflight.report import FAIL, PASS, SKIP, WARN, Check
from emulator.preflight.runner import run
from emulator.serving import endpoint_addresses

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
ESTIMATOR = {
    "entry_point": "train_coach.py",
    "source_dir": "code",
    "toolkit": "coach",
    "toolkit_version": "0.11.0",
    "framework": "mxnet",
    "role": "arn:aws:iam::123456789012:role/SageMakerRole",
    "instance_type": "ml.c5.xlarge",
    "instance_count": 1,
    "output_path": "s3://my-rl-bucket/cartpole",
    "hyperparameters": {"RLCOACH_PRESET": "preset-cartpole-dqn", "save_model": 1},
}


def _job(tmp_path: Path, estimator: dict | None = None, deploy: dict | None = None, **changes) -> jobspec.JobSpec:
    """A YAML job with a copy of presets/ as its code folder, changed as asked."""
    code = tmp_path / "code"
    shutil.copytree(PRESETS, code, ignore=shutil.ignore_patterns("__pycache__"))
    description = {"estimator": {**ESTIMATOR, **(estimator or {}), **changes}}
    if deploy:
        description["deploy"] = deploy
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(description))
    return jobspec.load(path)


def _run(spec: jobspec.JobSpec, **options) -> dict[str, Check]:
    report = run(spec, log=lambda line: None, **options)
    return {check.name: check for check in report.checks}


def _statuses(checks: dict[str, Check]) -> dict[str, str]:
    return {name: check.status for name, check in checks.items()}


def test_the_example_job_passes_every_check_and_connects_nowhere_else(
    docker_engine, training_image_ready, inference_image_ready, capfd
):
    connections: list[tuple] = []

    def audit(event: str, args: tuple) -> None:
        if event == "socket.connect" and isinstance(args[1], tuple):
            connections.append(args[1])

    sys.addaudithook(audit)
    before = job_container_count(docker_engine)
    report = run(jobspec.load(PRESETS / "cartpole_job.py"), log=lambda line: None)

    assert [c.name for c in report.checks if c.status != PASS] == []
    assert {"smoke training", "step budget", "metric reward-training", "metric reward-testing", "checkpoint",
            "model archive", "endpoint", "cleanup"} <= {c.name for c in report.checks}
    assert "uvicorn" not in capfd.readouterr().out, "the serving log stays out of the report (and of --json)"
    assert job_container_count(docker_engine) == before
    off_the_machine = [a for a in connections
                       if not str(a[0]).startswith(("127.", "::1", "localhost")) and a[0] not in endpoint_addresses]
    assert off_the_machine == [], "only loopback and the endpoints' containers on the engine's internal bridge"


def test_a_python_job_file_is_recorded_not_sent(tmp_path):
    spec = jobspec.load(PRESETS / "cartpole_job.py")
    assert spec.estimator["instance_type"] == "ml.c5.xlarge"
    assert spec.deploy["instance_type"] == "ml.c5.large"
    assert spec.entry_point_path == PRESETS / "train_coach.py"


# -- seeded mistakes that static checks catch ---------------------------------------------

def test_misspelled_preset(docker_engine, training_image_ready, tmp_path):
    checks = _run(_job(tmp_path, hyperparameters={"RLCOACH_PRESET": "preset-cartpole-dqm"}), static_only=True)
    assert checks["preset"].status == FAIL
    assert "Preset 'preset-cartpole-dqm' not found" in checks["preset"].message
    assert "preset-cartpole-dqn" in checks["preset"].message  # what is there instead


def test_override_of_a_field_that_does_not_exist(docker_engine, training_image_ready, tmp_path):
    hyperparameters = {**ESTIMATOR["hyperparameters"], "rl.agent_params.algorithm.discont": 0.9}
    checks = _run(_job(tmp_path, hyperparameters=hyperparameters), static_only=True)
    check = checks["override rl.agent_params.algorithm.discont"]
    assert check.status == FAIL
    assert "Did you mean 'discount'?" in check.message



def test_entry_point_that_raises_at_import(docker_engine, training_image_ready, tmp_path):
    spec = _job(tmp_path)
    (spec.source_dir / "train_coach.py").write_text("import json\nraise RuntimeError('no config file')\n")
    checks = _run(spec)
    assert checks["entry point imports"].status == FAIL
    assert "RuntimeError: no config file" in checks["entry point imports"].message
    assert checks["smoke run"].status == SKIP


def test_a_crashing_smoke_run_is_one_fail_with_the_traceback_and_its_dependents_skip(
    docker_engine, training_image_ready, tmp_path
):
    spec = _job(tmp_path)
    (spec.source_dir / "train_coach.py").write_text(
        "def main():\n    raise KeyError('reward_csv')\n\nif __name__ == '__main__':\n    main()\n")
    checks = _run(spec)
    failed = checks["smoke training"]
    assert failed.status == FAIL
    assert "KeyError: 'reward_csv'" in failed.message and "in your code: train_coach.py:2 in main" in failed.message
    assert {name: checks[name].status for name in ("metrics", "checkpoint", "endpoint")} == dict.fromkeys(
        ("metrics", "checkpoint", "endpoint"), SKIP)
    assert [c for c in checks.values() if c.status == FAIL] == [failed]





# -- seeded mistakes that only the smoke run shows ----------------------------------------

def test_metric_regex_that_never_matches(docker_engine, training_image_ready, inference_image_ready, tmp_path):
    metrics = [{"Name": "reward-training", "Regex": "^Training>.*Total reward=(.*?),"},
               {"Name": "episode-length", "Regex": r"^Training>.*Episode length=(\d+)"}]
    checks = _run(_job(tmp_path, metric_definitions=metrics), steps=500)
    assert checks["metric reward-training"].status == PASS
    assert checks["resume"].status == WARN, "no checkpoint_s3_uri: the drill's restart trained from scratch"
    failed = checks["metric episode-length"]
    assert failed.status == FAIL
    assert "matched none of" in failed.message and "Training>" in failed.message  # the lines it was tried on


def test_inference_script_whose_model_fn_fails(docker_engine, training_image_ready, inference_image_ready, tmp_path):
    spec = _job(tmp_path, deploy={"entry_point": "inference.py"})
    (spec.source_dir / "inference.py").write_text(textwrap.dedent("""
        def model_fn(model_dir):
            raise FileNotFoundError(model_dir + "/policy.pt is not in the model archive")
    """))
    checks = _run(spec, steps=500)
    assert checks["smoke training"].status == PASS
    assert checks["endpoint"].status == FAIL
    assert "policy.pt is not in the model archive" in checks["endpoint"].message
    assert checks["cleanup"].status == PASS


def test_cli_exit_code_and_json_report(docker_engine, training_image_ready, tmp_path):
    spec = _job(tmp_path, output_path="file:///tmp/out")
    done = subprocess.run([str(REPO / ".venv/bin/smrl-local"), "preflight", str(spec.path), "--static-only", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert {c["name"]: c["status"] for c in report["checks"]}["output path"] == "FAIL"


CARTPOLE_JOB = """
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

estimator = RLEstimator(
    entry_point="train-coach.py",
    source_dir="src",{dependencies}
    toolkit=RLToolkit.COACH,
    toolkit_version="0.11.0",
    framework=RLFramework.MXNET,
    role="arn:aws:iam::123456789012:role/SageMakerRole",
    instance_type="ml.m4.4xlarge",
    instance_count=1,
    output_path="s3://my-rl-bucket/",
    hyperparameters={{"RLCOACH_PRESET": "preset-cartpole-clippedppo", "save_model": 1}},
)
"""


@pytest.mark.parametrize("dependencies", [True, False])
def test_the_public_examples_launcher_needs_its_dependency_and_the_fix_names_it(
    docker_engine, training_image_ready, rl_examples, tmp_path, dependencies
):
    case = tmp_path / "rl_cartpole_coach"
    shutil.copytree(rl_examples / "rl_cartpole_coach" / "src", case / "src", copy_function=shutil.copyfile)
    shutil.copytree(rl_examples / "common", case / "common", copy_function=shutil.copyfile)
    job = case / "job.py"
    job.write_text(CARTPOLE_JOB.format(dependencies='\n    dependencies=["common/sagemaker_rl"],' if dependencies else ""))
    checks = _run(jobspec.load(job), static_only=True)
    imports = checks["entry point imports"]
    if dependencies:
        assert imports.status == "PASS", imports.message
    else:
        assert imports.status == "FAIL"
        assert "No module named 'sagemaker_rl'" in imports.message
        assert imports.fix.startswith("add it to the estimator: dependencies=['common/sagemaker_rl']")
