"""The pytest plugin users get with the package: its fixtures, as a user's test file uses them."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit


def test_an_estimator_gets_the_offline_session(smrl_session, tmp_path):
    estimator = RLEstimator(entry_point="train.py", toolkit=RLToolkit.COACH, toolkit_version="0.11.0",
                            framework=RLFramework.MXNET, role="SageMakerRole", instance_type="local",
                            instance_count=1, sagemaker_session=smrl_session)
    assert estimator.sagemaker_session.local_mode
    assert str(smrl_session.work_dir).startswith(str(tmp_path))


def test_the_other_fixtures_are_there(request):
    assert callable(request.getfixturevalue("smrl_trained_model"))
'''


@pytest.mark.integration  # a pytest subprocess (5 s): kept out of the quick loop
def test_a_users_test_file_gets_the_fixtures_from_the_installed_plugin(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_endpoint_fixture_trains_serves_and_removes(pytester, docker_engine, training_image_ready,
                                                        inference_image_ready):
    pytester.makepyfile(test_user='''
def test_the_policy_answers_two_q_values(smrl_endpoint):
    predictor = smrl_endpoint()
    assert len(predictor.predict([0.0, 0.1, 0.0, -0.1])["predictions"][0]) == 2
''')
    before = len(docker_engine.containers.list(all=True))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert len(docker_engine.containers.list(all=True)) == before
