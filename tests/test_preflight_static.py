"""Pre-flight checks that read the job file and run nothing: no Docker."""

from __future__ import annotations

from emulator import jobspec, preflight

JOB = """
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

estimator = RLEstimator(entry_point="train.py", toolkit=RLToolkit.COACH, toolkit_version="0.11.0",
                        framework=RLFramework.MXNET, role="r", instance_type="ml.c5.xlarge", instance_count=1)
estimator.fit()
predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.c5.large")
predictor.predict([0.0, 0.0, 0.0, 0.0])
{delete}
"""


def _check(tmp_path, text: str) -> preflight.Check:
    job = tmp_path / "job.py"
    job.write_text(text)
    return preflight.check_endpoint_cleanup(jobspec.load(job))


def test_a_script_that_ends_with_its_endpoint_up_is_a_warning_with_the_fix(tmp_path):
    check = _check(tmp_path, JOB.format(delete=""))
    assert check.status == preflight.WARN
    assert "keeps running (and billing)" in check.message
    assert check.fix == "call predictor.delete_endpoint() when the script is done with it"


def test_a_script_that_deletes_its_endpoint_passes(tmp_path):
    assert _check(tmp_path, JOB.format(delete="predictor.delete_endpoint()")).status == preflight.PASS


def test_a_job_that_deploys_nothing_skips_the_check(tmp_path):
    text = JOB.format(delete="").split("predictor =")[0]
    assert _check(tmp_path, text).status == preflight.SKIP
