"""The CartPole DQN job, written for the cloud: the example `make preflight` checks.

Copy it for your own job. `smrl-local preflight presets/cartpole_job.py` runs it shrunk on
this machine (local images, no AWS) and says, check by check, whether it will work on
SageMaker. Paths are relative to this file.
"""
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

estimator = RLEstimator(
    entry_point="train_coach.py",
    source_dir=".",
    toolkit=RLToolkit.COACH,
    toolkit_version="0.11.0",
    framework=RLFramework.MXNET,
    role="arn:aws:iam::123456789012:role/SageMakerRole",
    instance_type="ml.c5.xlarge",
    instance_count=1,
    output_path="s3://my-rl-bucket/cartpole-dqn",
    # Spot capacity, at up to 90% off: a job taken back resumes from its checkpoints.
    use_spot_instances=True,
    max_run=3600,
    max_wait=7200,
    checkpoint_s3_uri="s3://my-rl-bucket/cartpole-dqn/checkpoints",
    hyperparameters={
        "RLCOACH_PRESET": "preset-cartpole-dqn",
        "save_model": 1,
        "rl.agent_params.algorithm.discount": 0.99,
        "rl.evaluation_steps:EnvironmentEpisodes": 1,
    },
    metric_definitions=RLEstimator.default_metric_definitions(RLToolkit.COACH),
)

if __name__ == "__main__":
    estimator.fit()
    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.c5.large")
    print(predictor.predict([0.0, 0.1, 0.0, -0.1]))
    predictor.delete_endpoint()
