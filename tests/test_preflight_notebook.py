"""The pre-flight of a notebook, read from the journal of what its code did: each job's
static checks, outcome, metrics, step budget and artifacts, and its endpoints. Pure: the
journals and files are written here, nothing runs."""

from __future__ import annotations

import json
from pathlib import Path

from sagemaker.rl import RLToolkit

from conftest import make_tar_gz
from emulator import contract, run_journal
from emulator.job_failure import traceback_tail
from emulator.preflight.notebook import journal_checks
from emulator.preflight.report import FAIL, PASS, SKIP, WARN
from emulator.preflight.smoke_run import check_step_budget

TRAINING_LOG = """algo-1-abcde | Training> 2024-05-01-10:00:01.000001 , Name=main_level/agent, Episode=12, Total reward=21.0, Steps=1255
algo-1-abcde | Testing> 2024-05-01-10:00:03.000001 , Name=main_level/agent, Episode=13, Total reward=200.0, Steps=1490
algo-1-abcde | Training> 2024-05-01-10:00:04.000001 , Name=main_level/agent, Episode=14, Total reward=12.0, Steps=1510
"""
EVALUATION_LOG = "algo-1-abcde | Testing> 2024-05-01-10:00:03.000001 , Name=main_level/agent, Total reward=200.0, Steps=90\n"
FAILED_LOG = """algo-1-abcde | Traceback (most recent call last):
algo-1-abcde |   File "/opt/ml/code/my_env.py", line 12, in step
algo-1-abcde |     return self.state, reward
algo-1-abcde | NameError: name 'reward' is not defined
"""
ARGUMENTS = {"entry_point": "train.py", "source_dir": "src", "toolkit": "coach", "toolkit_version": "0.11.0",
             "framework": "mxnet", "role": contract.PLACEHOLDER_ROLE, "instance_type": "ml.m4.4xlarge",
             "base_job_name": "cart", "hyperparameters": {"RLCOACH_PRESET": "preset"}}


def _case(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("")
    return tmp_path / "nb.ipynb"


def _fit(tmp_path: Path, job: str, log: str, error: str | None = None, estimator: int = 1) -> dict:
    (tmp_path / f"{job}.log").write_text(log)
    artifacts = tmp_path / job
    artifacts.mkdir()
    make_tar_gz(artifacts / contract.OUTPUT_ARCHIVE, {contract.CHECKPOINT_ARCHIVE_PREFIX + "0_Step-1.ckpt": b"w"})
    make_tar_gz(artifacts / contract.MODEL_ARCHIVE, {contract.ONNX_FILE: b"onnx"})
    return {"event": run_journal.FIT, "estimator": estimator, "job": job, "error": error, "seconds": 9.0,
            "log": str(tmp_path / f"{job}.log"), "artifacts": str(artifacts)}


def _estimator(key: int = 1, **changes) -> dict:
    return {"event": run_journal.ESTIMATOR, "estimator": key, "arguments": {**ARGUMENTS, **changes}}


def _by_name(checks) -> dict:
    return {check.name: check for check in checks}


def test_a_trained_deployed_and_deleted_job_passes_every_check(tmp_path):
    events = [_estimator(), _fit(tmp_path, "cart-1", TRAINING_LOG),
              {"event": run_journal.DEPLOY, "estimator": 1, "endpoint": "ep-1"},
              {"event": run_journal.PREDICT, "endpoint": "ep-1", "error": None},
              {"event": run_journal.DELETE_ENDPOINT, "endpoint": "ep-1"}]
    checks = _by_name(journal_checks(_case(tmp_path), events, 1500, gpu_available=False))
    assert {name: c.status for name, c in checks.items() if c.status != PASS} == {}
    assert {"role (cart)", "instance type (cart)", "training (cart)", "metric reward-training (cart)",
            "step budget (cart)", "checkpoint (cart)", "model archive (cart)", "endpoint ep-1",
            "endpoint clean-up"} <= set(checks)


def test_a_failed_job_shows_the_traceback_tail_from_its_log(tmp_path):
    events = [_estimator(), _fit(tmp_path, "cart-1", FAILED_LOG, error="RuntimeError: Failed to run")]
    check = _by_name(journal_checks(_case(tmp_path), events, 1500, gpu_available=False))["training (cart)"]
    assert check.status == FAIL
    assert "job cart-1 failed: RuntimeError: Failed to run" in check.message
    assert "NameError: name 'reward' is not defined" in check.message
    assert 'File "/opt/ml/code/my_env.py", line 12, in step' in check.message


def test_an_evaluation_job_warns_of_its_missing_training_metric_and_skips_the_budget(tmp_path):
    events = [_estimator(), _fit(tmp_path, "cart-eval", EVALUATION_LOG)]
    checks = _by_name(journal_checks(_case(tmp_path), events, 1500, gpu_available=False))
    assert checks["metric reward-training (cart)"].status == WARN
    assert "needs no fix" in checks["metric reward-training (cart)"].fix
    assert checks["metric reward-testing (cart)"].status == PASS
    assert checks["step budget (cart)"].status == SKIP
    assert "checkpoint (cart)" not in checks, "an evaluation trains nothing to checkpoint"


def test_an_endpoint_left_up_is_a_warning_and_a_failed_prediction_a_failure(tmp_path):
    events = [_estimator(), {"event": run_journal.DEPLOY, "estimator": 1, "endpoint": "ep-1"},
              {"event": run_journal.PREDICT, "endpoint": "ep-1", "error": "EndpointError: 500"}]
    checks = _by_name(journal_checks(_case(tmp_path), events, 1500, gpu_available=False))
    assert checks["endpoint ep-1"].status == FAIL and "EndpointError: 500" in checks["endpoint ep-1"].message
    assert checks["endpoint clean-up"].status == WARN and "ep-1" in checks["endpoint clean-up"].message


def test_a_notebook_without_an_rl_estimator_says_only_its_cells_were_checked(tmp_path):
    [check] = journal_checks(_case(tmp_path), [], 1500, gpu_available=False)
    assert (check.name, check.status) == ("estimators", WARN)


def test_each_estimators_static_checks_carry_its_name(tmp_path):
    events = [_estimator(), _estimator(2, base_job_name="cart-eval", role="not-a-role", instance_type="local")]
    checks = _by_name(journal_checks(_case(tmp_path), events, 1500, gpu_available=False))
    assert checks["role (cart-eval)"].status == WARN
    assert checks["instance type (cart-eval)"].status == FAIL
    assert checks["role (cart)"].status == PASS


def test_a_job_that_took_far_more_steps_than_asked_ignored_the_budget():
    check = check_step_budget(TRAINING_LOG.replace("Steps=1510", "Steps=10012"), 1500)
    assert check.status == WARN
    assert "took 10012 environment steps, asked for 1500" in check.message


def test_a_job_may_finish_its_last_episode_past_the_budget():
    assert check_step_budget(TRAINING_LOG, 1500).status == PASS


def test_the_traceback_tail_is_the_last_traceback_without_compose_prefixes():
    log = "algo-1 | starting\n" + FAILED_LOG + "algo-1 | exited with code 1\n"
    tail = traceback_tail(log)
    assert tail.splitlines()[0] == "Traceback (most recent call last):"
    assert "algo-1 |" not in tail


def test_the_journal_keeps_enums_as_their_values(tmp_path, monkeypatch):
    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv(run_journal.JOURNAL_ENV, str(journal))
    run_journal.record(run_journal.ESTIMATOR, estimator=1, arguments={"toolkit": RLToolkit.COACH, "path": tmp_path})
    [event] = run_journal.read(journal)
    assert event["arguments"] == {"toolkit": "coach", "path": str(tmp_path)}
    assert json.loads(journal.read_text())["event"] == run_journal.ESTIMATOR


def test_without_a_journal_named_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(run_journal.JOURNAL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    run_journal.record(run_journal.FIT, job="j")
    assert list(tmp_path.iterdir()) == []


def test_heat_up_steps_do_not_count_against_the_budget():
    log = ("Heatup> 2024-05-01-10:00:00.000001 , Name=main_level/agent, Episode=50, Total reward=14.0, Steps=1000\n"
           + TRAINING_LOG.replace("Steps=1510", "Steps=2539"))
    check = check_step_budget(log, 1500)
    assert (check.status, check.message) == (PASS, "1539 environment steps after heat-up (budget 1500)")
