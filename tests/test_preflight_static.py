"""Pre-flight checks that read the job file or its archives and run nothing: no Docker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sagemaker.rl import RLFramework, RLToolkit

from conftest import make_tar_gz
from emulator import jobspec
from emulator.interruptions import Interruption
from emulator.preflight import smoke_run, static_checks
from emulator.preflight.report import FAIL, PASS, SKIP, WARN, Check, Report, format_check, format_report

JOB = """
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

estimator = RLEstimator(entry_point="train.py", toolkit=RLToolkit.COACH, toolkit_version="0.11.0",
                        framework=RLFramework.MXNET, role="r", instance_type="ml.c5.xlarge", instance_count=1)
estimator.fit()
predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.c5.large")
predictor.predict([0.0, 0.0, 0.0, 0.0])
{delete}
"""


def _check(tmp_path, text: str) -> Check:
    job = tmp_path / "job.py"
    job.write_text(text)
    return static_checks.check_endpoint_cleanup(jobspec.load(job))


def test_a_script_that_ends_with_its_endpoint_up_is_a_warning_with_the_fix(tmp_path):
    check = _check(tmp_path, JOB.format(delete=""))
    assert check.status == WARN
    assert "keeps running (and billing)" in check.message
    assert check.fix == "call predictor.delete_endpoint() when the script is done with it"


def test_a_script_that_deletes_its_endpoint_passes(tmp_path):
    assert _check(tmp_path, JOB.format(delete="predictor.delete_endpoint()")).status == PASS


def test_a_job_that_deploys_nothing_skips_the_check(tmp_path):
    text = JOB.format(delete="").split("predictor =")[0]
    assert _check(tmp_path, text).status == SKIP


# -- one check per property, each with its exact message ------------------------------------

ESTIMATOR = {
    "entry_point": "train_coach.py",
    "source_dir": "code",
    "toolkit": RLToolkit.COACH,
    "toolkit_version": "0.11.0",
    "framework": RLFramework.MXNET,
    "role": "arn:aws:iam::123456789012:role/SageMakerRole",
    "instance_type": "ml.c5.xlarge",
    "output_path": "s3://my-rl-bucket/cartpole",
    "hyperparameters": {"RLCOACH_PRESET": "preset-cartpole-dqn", "save_model": 1},
}


def _spec(tmp_path: Path, **changes) -> jobspec.JobSpec:
    """The example job, with its code folder, changed as asked."""
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "train_coach.py").write_text("")
    return jobspec.JobSpec(tmp_path / "job.yaml", {**ESTIMATOR, **changes})


def test_the_example_job_passes_every_static_check(tmp_path):
    checks = static_checks.static_checks(_spec(tmp_path), gpu_available=False)
    assert [(c.name, c.status) for c in checks if c.status != PASS] == [("endpoint clean-up", SKIP),
                                                                        ("serving code", SKIP)]


def test_a_hyperparameter_value_over_sagemakers_limit_fails_with_its_length(tmp_path):
    spec = _spec(tmp_path, hyperparameters={"notes": "x" * 3000})
    check = static_checks.check_hyperparameters(spec)
    assert check.status == FAIL
    assert "'notes' has a value of 3002 characters (limit 2500)" in check.message


def test_too_many_hyperparameters_count_the_ones_the_sdk_adds(tmp_path):
    spec = _spec(tmp_path, hyperparameters={f"h{i}": i for i in range(95)})
    check = static_checks.check_hyperparameters(spec)
    assert check.status == FAIL
    assert "95 hyperparameters + 6 the SDK adds = 101 (limit 100)" in check.message


def test_a_hyperparameter_that_is_not_json_fails(tmp_path):
    check = static_checks.check_hyperparameters(_spec(tmp_path, hyperparameters={"when": object()}))
    assert check.status == FAIL and "'when' is not JSON-serialisable (object)" in check.message


def test_a_gpu_instance_with_only_cpu_images_is_a_warning_with_the_reason(tmp_path):
    check = static_checks.check_instance_type(_spec(tmp_path, instance_type="ml.p3.2xlarge"), gpu_available=False)
    assert check.status == WARN
    assert "uses the CPU image" in check.message


def test_a_gpu_instance_with_the_gpu_image_passes(tmp_path):
    check = static_checks.check_instance_type(_spec(tmp_path, instance_type="ml.p3.2xlarge"), gpu_available=True)
    assert (check.status, check.message) == (PASS, "ml.p3.2xlarge (gpu: the GPU image)")


@pytest.mark.parametrize(("instance_type", "status"), [
    ("local", FAIL), ("local_gpu", FAIL), ("c5.xlarge", FAIL), ("ml.zz9.xlarge", WARN), ("ml.m4.4xlarge", PASS),
])
def test_instance_types_are_sagemakers_own(tmp_path, instance_type, status):
    assert static_checks.check_instance_type(_spec(tmp_path, instance_type=instance_type), False).status == status


@pytest.mark.parametrize(("instance_type", "kind"), [
    ("ml.c5.xlarge", "cpu"), ("ml.p3.2xlarge", "gpu"), ("ml.g4dn.xlarge", "gpu"), ("ml.zz9.xlarge", None), ("local", None),
])
def test_instance_kind_tells_cpu_from_gpu_families(instance_type, kind):
    assert static_checks.instance_kind(instance_type) == kind


def test_an_output_path_that_is_not_s3_fails_with_the_s3_fix(tmp_path):
    check = static_checks.check_output_path(_spec(tmp_path, output_path="file:///tmp/rl-output"))
    assert check.status == FAIL
    assert "s3://" in check.fix


def test_no_output_path_means_the_default_bucket(tmp_path):
    spec = _spec(tmp_path)
    del spec.estimator["output_path"]
    assert static_checks.check_output_path(spec).status == PASS


@pytest.mark.parametrize(("role", "status"), [
    ("arn:aws:iam::123456789012:role/SageMakerRole", PASS), ("SageMakerRole", WARN), ("admin:role", FAIL), ("", FAIL),
])
def test_the_role_is_an_iam_role_arn(tmp_path, role, status):
    assert static_checks.check_role(_spec(tmp_path, role=role)).status == status


def test_a_missing_entry_point_names_the_path(tmp_path):
    check = static_checks.check_code(_spec(tmp_path, entry_point="train.py"))
    assert check.status == FAIL and check.message == f"{tmp_path / 'code' / 'train.py'} does not exist"


def test_a_missing_source_dir_is_named(tmp_path):
    check = static_checks.check_code(_spec(tmp_path, source_dir="src"))
    assert check.status == FAIL and check.message == f"source_dir {tmp_path / 'src'} does not exist"


def test_missing_dependencies_are_listed(tmp_path):
    (tmp_path / "common").mkdir()
    check = static_checks.check_dependencies(_spec(tmp_path, dependencies=["common", "lib/missing"]))
    assert (check.status, check.message) == (FAIL, "missing: lib/missing")


def test_a_toolkit_the_sdk_has_no_image_for_fails_with_the_choices(tmp_path):
    check = static_checks.check_toolkit(_spec(tmp_path, toolkit_version="0.9.9"))
    assert check.status == FAIL
    assert "coach 0.11.0 + mxnet" in check.fix


def test_ray_is_valid_on_sagemaker_but_not_here(tmp_path):
    check = static_checks.check_toolkit(_spec(tmp_path, toolkit=RLToolkit.RAY, toolkit_version="1.6.0",
                                              framework=RLFramework.TENSORFLOW))
    assert check.status == FAIL and "Coach + MXNet only" in check.message


def test_an_image_uri_is_a_warning_that_the_local_run_uses_ours(tmp_path):
    check = static_checks.check_toolkit(_spec(tmp_path, image_uri="123.dkr.ecr.us-west-2.amazonaws.com/mine:1"))
    assert check.status == WARN and "(Coach 1.0.1 + MXNet 1.9.1)" in check.message


LOG = """algo-1-abcde | Training> 2024-05-01-10:00:01.000001 , Name=main_level/agent, Episode=12, Total reward=21.0, Steps=255
algo-1-abcde | Testing> 2024-05-01-10:00:03.000001 , Name=main_level/agent, Episode=13, Total reward=200.0, Steps=490
"""


def test_a_metric_regex_that_matches_reports_its_last_value():
    [check] = smoke_run.check_metrics([{"Name": "reward-training", "Regex": "^Training>.*Total reward=(.*?),"}], LOG)
    assert (check.status, check.message) == (PASS, "matched 1 log lines (last value 21.0)")


def test_a_metric_regex_that_never_matches_shows_the_lines_it_was_tried_on():
    [check] = smoke_run.check_metrics([{"Name": "length", "Regex": r"Episode length=(\d+)"}], LOG)
    assert check.status == FAIL
    assert "matched none of 2 log lines" in check.message and "Testing> 2024" in check.message


def test_a_metric_regex_that_does_not_compile_fails():
    [check] = smoke_run.check_metrics([{"Name": "broken", "Regex": "Total reward=(.*"}], LOG)
    assert check.status == FAIL and "does not compile" in check.message


# -- what the smoke run left behind ----------------------------------------------------------

def test_an_output_archive_with_checkpoint_files_passes(tmp_path):
    output = make_tar_gz(tmp_path / "output.tar.gz", {"data/checkpoint/0_Step-0.ckpt.index": b"x", "failure": b""})
    assert smoke_run.check_checkpoint(output).message == "1 files in /opt/ml/output/data/checkpoint"


def test_an_output_archive_without_checkpoint_fails(tmp_path):
    assert smoke_run.check_checkpoint(make_tar_gz(tmp_path / "output.tar.gz", {"data/x": b""})).status == FAIL


@pytest.mark.parametrize(("files", "status"), [
    ({"model.onnx": b"x"}, PASS),
    ({"model-symbol.json": b"{}", "model-0000.params": b"x"}, PASS),
    ({"policy.pt": b"x"}, WARN),
    ({}, FAIL),
])
def test_a_model_archive_passes_with_an_export_either_form(tmp_path, files, status):
    assert smoke_run.check_model_archive(make_tar_gz(tmp_path / "model.tar.gz", files)).status == status


def test_the_observation_for_a_model_is_one_coach_predicted_for(tmp_path):
    reference = json.dumps({"inputs": {"observation": [[0.1, 0.2, 0.3, 0.4]]}, "outputs": []}).encode()
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"reference-predictions.json": reference})
    assert smoke_run.observation_for(archive) == [0.1, 0.2, 0.3, 0.4]


def test_without_reference_predictions_the_observation_is_zeros_of_the_signatures_shape(tmp_path):
    signature = json.dumps({"inputs": [{"name": "Data0", "shape": [1, 2, 3]}]}).encode()
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"model-signature.json": signature})
    assert smoke_run.observation_for(archive) == [0.0] * 6


def test_containers_left_behind_fail_the_cleanup_check():
    assert smoke_run.check_cleanup(0).status == PASS
    assert smoke_run.check_cleanup(2).message == "2 containers left"


# -- the report --------------------------------------------------------------------------------

def test_a_report_with_a_fail_is_not_ok_and_says_what_to_do():
    report = Report(job="job.py", checks=[Check("role", PASS, "r"), Check("output path", FAIL, "x", "use s3://")],
                    seconds=1.25)
    assert not report.ok
    assert report.failed() == ["output path"] and report.failed("role") == []
    assert format_report(report) == "1 passed, 0 warnings, 1 failed, 0 skipped in 1.2 s: fix the FAILs before sending the job"
    assert json.loads(report.to_json())["checks"][1] == {"name": "output path", "status": "FAIL", "message": "x",
                                                         "fix": "use s3://", "seconds": 0.0}


def test_a_failed_check_prints_its_fix_and_a_passed_one_does_not():
    assert format_check(Check("role", FAIL, "bad", "use an ARN")) == "FAIL  role                   bad\n      fix: use an ARN"
    assert format_check(Check("role", PASS, "ok", "unused", seconds=2.0)) == "PASS  role                   ok  (2.0 s)"


TRAINING_SCRIPT = """from sagemaker_rl.coach_launcher import SageMakerCoachPresetLauncher

if __name__ == "__main__":
    SageMakerCoachPresetLauncher.train_main()
"""


def _deploying(tmp_path: Path, deploy: dict) -> jobspec.JobSpec:
    spec = _spec(tmp_path, entry_point="train-coach.py")
    (tmp_path / "code" / "train-coach.py").write_text(TRAINING_SCRIPT)
    (tmp_path / "code" / "deploy-mxnet-coach.py").write_text("import json\n\ndef model_fn(model_dir):\n"
                                                              "    from rl_coach import core_types\n")
    spec.deploy = deploy
    return spec


def test_a_deploy_that_would_serve_the_coach_training_script_fails_with_the_fix(tmp_path):
    check = static_checks.check_serving_code(_deploying(tmp_path, {"initial_instance_count": 1}))
    assert check.status == FAIL
    assert "imports sagemaker_rl.coach_launcher (train-coach.py:1) at module level" in check.message
    assert "entry_point='deploy-mxnet-coach.py'" in check.fix


def test_a_deploy_with_its_own_inference_script_passes_coach_imported_inside_a_function(tmp_path):
    spec = _deploying(tmp_path, {"entry_point": "deploy-mxnet-coach.py"})
    assert static_checks.check_serving_code(spec).status == PASS


def test_coach_imported_by_a_local_module_of_the_inference_script_is_found(tmp_path):
    spec = _deploying(tmp_path, {"entry_point": "serve.py"})
    (tmp_path / "code" / "serve.py").write_text("import helpers\n")
    (tmp_path / "code" / "helpers.py").write_text("try:\n    import rl_coach.core_types\nexcept ImportError:\n    pass\n")
    check = static_checks.check_serving_code(spec)
    assert check.status == FAIL and "rl_coach.core_types (helpers.py:2)" in check.message


# -- the resume check of the smoke run's interruption drill (pure: from its records and log) --

def _interrupted(resumed: str | None = None) -> list:
    return [Interruption(attempt=1, after_s=0, after_log="Training>", stopped_in_s=0.3, exit_code=143,
                         resumed=resumed)]


def test_a_job_that_resumed_its_training_state_after_the_drill_passes():
    check = smoke_run.check_resume("s3://b/ckpt", _interrupted("Resumed from checkpoint 0_Step-97.ckpt ..."), "")
    assert check.status == PASS
    assert "SIGTERM when attempt 1 first logged 'Training>', exited 143" in check.message


def test_a_job_without_checkpoint_s3_uri_loses_its_progress_to_a_spot_interruption():
    check = smoke_run.check_resume(None, _interrupted(), "")
    assert check.status == WARN
    assert "sets no checkpoint_s3_uri, so it trained again from scratch" in check.message
    assert "set checkpoint_s3_uri" in check.fix


def test_a_job_that_restores_weights_only_is_a_warning():
    log = "WARNING: restored only the online network's weights from /opt/ml/checkpoints/0_Step-5.ckpt"
    check = smoke_run.check_resume("s3://b/ckpt", _interrupted(), log)
    assert (check.status, "weights only" in check.message) == (WARN, True)


def test_a_job_whose_entry_point_ignores_its_checkpoint_folder_is_a_warning_naming_it():
    check = smoke_run.check_resume("s3://b/ckpt", _interrupted(), "")
    assert check.status == WARN and "/opt/ml/checkpoints" in check.message


def test_a_smoke_run_that_ended_before_its_first_training_episode_is_not_drilled():
    assert smoke_run.check_resume("s3://b/ckpt", [], "").status == SKIP
