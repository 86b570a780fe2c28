"""Entry point of the example jobs: runs the Coach preset named by RLCOACH_PRESET.

Pass it to RLEstimator as entry_point="train_coach.py", source_dir="presets".
"""


def main() -> None:
    # Imported here, not at the top: `estimator.deploy()` hands this same file to the
    # serving container as the inference module, and that image has no Coach. Without
    # model_fn & co. here, the server's defaults serve the exported policy.
    from smrl_coach.launcher import SageMakerCoachPresetLauncher

    class CartPoleLauncher(SageMakerCoachPresetLauncher):
        def default_preset_name(self) -> str:
            return "preset-cartpole-dqn"

    CartPoleLauncher.train_main()


if __name__ == "__main__":
    main()
