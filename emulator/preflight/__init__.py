"""`smrl-local preflight JOB`: prove a SageMaker RL job works before it goes to the cloud.

Reads the job as the user wrote it for the cloud (`emulator.jobspec`), then, in order:

* ``static_checks``: what can be checked without running anything;
* ``image_checks``: the entry point, preset and overrides, loaded inside the training image;
* ``smoke_run``: the job shrunk, through the SDK's local mode: its metrics, checkpoint and
  model archive, and the model served by a local endpoint.

Each check is PASS, WARN or FAIL with the reason and the fix (``report``). All of them talk
to Docker through the one client ``runner.run`` opens.
"""

# Environment steps of the smoke training run: enough for a few episodes, a checkpoint and
# an evaluation of the CartPole presets in about a minute.
DEFAULT_SMOKE_STEPS = 1500
