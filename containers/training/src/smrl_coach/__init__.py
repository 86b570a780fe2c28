"""Coach on SageMaker conventions, inside our training image.

`SageMakerCoachPresetLauncher` runs a Coach preset the way SageMaker RL Coach jobs do:
`RLCOACH_PRESET` picks the preset, `rl.*` hyperparameters override its fields, output
lands under /opt/ml, and `save_model=1` exports the policy to /opt/ml/model.
"""
