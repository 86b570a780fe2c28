"""The training image gives user code what AWS's Coach MXNet image gives it.

Each test runs one command in the real image (no network), the way a job's entry point
would meet it. See containers/training/README.md for what differs and why.
"""

from __future__ import annotations

import json


def run_in_image(client, image: str, command: list[str], **options) -> str:
    return client.containers.run(image, command, remove=True, network_mode="none", **options).decode()


def test_a_job_renders_gym_envs_under_the_virtual_display_of_train(docker_engine, training_image_ready, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "render.py").write_text(
        "import gym\n"
        "env = gym.make('CartPole-v0'); env.reset()\n"
        "frame = env.render(mode='rgb_array'); env.close()\n"
        "print('FRAME', frame.shape, frame.dtype)\n"
    )
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps({"sagemaker_program": '"render.py"'}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text("{}")
    output = tmp_path / "output"
    log = run_in_image(docker_engine, training_image_ready, ["train"], volumes={
        str(code): {"bind": "/opt/ml/code", "mode": "ro"},
        str(config): {"bind": "/opt/ml/input/config", "mode": "ro"},
        str(output): {"bind": "/opt/ml/output", "mode": "rw"},
    })
    assert "FRAME (400, 600, 3) uint8" in log
    assert (output / "success").exists() and not (output / "failure").exists()


def test_the_tools_and_packages_of_awss_image_are_there(docker_engine, training_image_ready):
    tools = run_in_image(docker_engine, training_image_ready, [
        "sh", "-c", "for t in xvfb-run ffmpeg jq gcc make curl wget redis-server; do command -v $t || echo MISSING $t; done"])
    assert "MISSING" not in tools, tools
    imports = run_in_image(docker_engine, training_image_ready, ["python3", "-c", (
        "import h5py, matplotlib, OpenGL, annoy, redis, sagemaker_training.environment, sagemaker_containers._env;"
        "import os; print(os.environ['LANG'], os.environ['LC_ALL'], os.environ['PYTHONIOENCODING'], os.environ['COACH_BACKEND'])")])
    assert imports.strip() == "C.UTF-8 C.UTF-8 UTF-8 mxnet"


def test_an_env_written_for_gym_0_10_wraps_itself_in_a_time_limit(docker_engine, training_image_ready):
    script = (
        "import gym\n"
        "from gym.wrappers import TimeLimit\n"
        "class Corridor(gym.Env):\n"
        "    observation_space = gym.spaces.Box(-1, 1, (1,), dtype='float32')\n"
        "    action_space = gym.spaces.Discrete(2)\n"
        "    def reset(self): return [0.0]\n"
        "    def step(self, action): return [0.0], 1.0, False, {}\n"
        "env = TimeLimit(Corridor(), max_episode_steps=3); env.reset()\n"
        "print('DONE', [env.step(0)[2] for _ in range(3)])\n"
        "env = TimeLimit(Corridor(), max_episode_seconds=60, max_episode_steps=None); env.reset()\n"
        "print('SECONDS', env.step(0)[2])\n"
    )
    log = run_in_image(docker_engine, training_image_ready, ["python3", "-c", script])
    assert "DONE [False, False, True]" in log and "SECONDS False" in log
