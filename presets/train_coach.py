"""Entry point of the example jobs: runs the Coach preset named by RLCOACH_PRESET.

Pass it to RLEstimator as entry_point="train_coach.py", source_dir="presets".
"""
from smrl_coach.launcher import SageMakerCoachPresetLauncher


class CartPoleLauncher(SageMakerCoachPresetLauncher):
    def default_preset_name(self) -> str:
        return "preset-cartpole-dqn"


if __name__ == "__main__":
    CartPoleLauncher.train_main()
