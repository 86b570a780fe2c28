"""Serve a trained policy on localhost with the SageMaker endpoint contract.

    with emulator.endpoint("output/latest/model.tar.gz") as predictor:
        q_values = predictor.predict([0.0, 0.1, 0.0, -0.1])["predictions"][0]

The deployment is ordinary SDK code (`Model.deploy` / `MXNetModel.deploy` in local mode)
with the emulator's session, so what works here works with `estimator.deploy(...)` too.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
from sagemaker.deserializers import JSONDeserializer
from sagemaker.model import Model
from sagemaker.mxnet import MXNetModel
from sagemaker.predictor import Predictor
from sagemaker.serializers import JSONSerializer

from emulator import contract
from emulator.archives import check_model_archive
from emulator.containers import LOOPBACK
from emulator.errors import ModelNotFoundError, UserError
from emulator.images import sdk_inference_image_uri
from emulator.inputs import InputError, check_port
from emulator.serving import endpoint_named
from emulator.session import local_session


@contextlib.contextmanager
def endpoint(
    model_data: str | Path,
    *,
    entry_point: str | None = None,
    source_dir: str | Path | None = None,
    instance_type: str = "local",
    port: int | None = None,
    env: dict[str, str] | None = None,
    session: Any = None,
) -> Iterator[Any]:
    """Deploys `model_data` (a model.tar.gz) as a local endpoint; removes it on exit.

    Args:
        model_data: Path or file:// URI of a model.tar.gz written by a training job.
        entry_point: Optional inference script (model_fn / input_fn / predict_fn / output_fn
            or transform_fn), in `source_dir`. Without one the image's defaults serve the
            exported policy: JSON observations in, `{"predictions": [...]}` out.
        instance_type: "local" or "local_gpu".
        port: Host port on 127.0.0.1; default 8080, or a free one when 8080 is taken; 0: a free
            one (`predictor.url` says which).
        env: Extra environment for the container (e.g. SAGEMAKER_MODEL_SERVER_WORKERS).
        session: An `emulator.local_session()`; a new one by default.

    Yields:
        A `sagemaker.predictor.Predictor` (JSON in, JSON out) with `.url` set to the
        endpoint's base URL.

    Raises:
        ModelNotFoundError, ModelArchiveError, InputError: a missing or unsafe model archive,
            a bad port or inference script; before anything is written or started.
    """
    source = checked_model(model_data)
    check_port(port)
    check_inference_code(entry_point, source_dir)
    session = session or local_session()
    if port is not None:
        session.config = {**session.config, "local": {**session.config["local"], "serving_port": port}}
    name = f"smrl-endpoint-{uuid.uuid4().hex[:8]}"
    # The SDK extracts a file:// archive next to itself and mounts that folder read-write:
    # a private copy keeps the training output untouched.
    model_dir = Path(session.work_dir, "endpoints", name)
    model_dir.mkdir(parents=True)
    shutil.copyfile(source, model_dir / contract.MODEL_ARCHIVE)
    model_uri = (model_dir / contract.MODEL_ARCHIVE).resolve().as_uri()

    common = dict(model_data=model_uri, role=contract.PLACEHOLDER_ROLE, sagemaker_session=session, env=env or {},
                  name=name)
    model: Model
    if entry_point:
        model = MXNetModel(entry_point=entry_point, source_dir=str(source_dir) if source_dir else None,
                           framework_version=contract.SDK_MXNET_SERVING_VERSION,
                           py_version=contract.SDK_PY_VERSION, **common)
    else:
        model = Model(image_uri=sdk_inference_image_uri(session.boto_region_name, instance_type),
                      predictor_cls=Predictor, **common)
    predictor = None
    try:
        predictor = model.deploy(initial_instance_count=1, instance_type=instance_type, endpoint_name=name,
                                 serializer=JSONSerializer(), deserializer=JSONDeserializer())
        predictor.url = endpoint_url(name)
        yield predictor
    finally:
        if predictor is not None:
            predictor.delete_endpoint()
        else:
            session.sagemaker_client.delete_endpoint(EndpointName=name)
        model.delete_model()
        shutil.rmtree(model_dir, ignore_errors=True)


def checked_model(model_data: str | Path) -> Path:
    """The path of the model archive `model_data` (a path or file:// URI), checked as
    ``emulator.archives`` does before anything is unpacked.

    Raises:
        ModelNotFoundError: there is no file there.
        ModelArchiveError: it is not a safe gzip tar within the limits.
    """
    source = Path(str(model_data).removeprefix("file://"))
    if not source.is_file():
        what = "a folder" if source.is_dir() else "no file"
        raise ModelNotFoundError(f"No model archive at {source} ({what} there): train first (`make local-train`) "
                                 "or pass the path of a model.tar.gz.")
    check_model_archive(source)
    return source


def check_inference_code(entry_point: str | None, source_dir: str | Path | None) -> None:
    """The inference script exists where the SDK will look for it (in `source_dir` when given).

    Raises:
        InputError: it does not, or `source_dir` is given without a script.
    """
    if source_dir is not None and not Path(source_dir).is_dir():
        raise InputError(f"source_dir {source_dir} is not a folder. Pass the folder that holds the inference script.")
    if entry_point is None:
        if source_dir is not None:
            raise InputError(f"source_dir {source_dir} is given without an entry_point: name the inference script in "
                             "it (--entry-point inference.py), or leave both out to serve with the image's defaults.")
        return
    script = Path(source_dir, entry_point) if source_dir is not None else Path(entry_point)
    if not script.is_file():
        raise InputError(f"No inference script at {script}. Pass an existing .py file"
                         + (" (relative to source_dir)." if source_dir is not None else "."))


def check_gym_env(env_id: str) -> None:
    """`env_id` names a registered gymnasium environment.

    Raises:
        UserError: it does not; the message carries gymnasium's suggestion.
    """
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as error:
        raise UserError(f"No gymnasium environment {env_id!r}: {error} Pass another id (e.g. CartPole-v0), or "
                        "--episodes 0 to serve without driving episodes.") from None


def endpoint_url(endpoint_name: str) -> str:
    """Base URL (http://127.0.0.1:<port>) of a running local endpoint."""
    return f"http://{LOOPBACK}:{endpoint_named(endpoint_name).port}"


def greedy_action(predictor: Any, observation: Any) -> int:
    """The action with the highest Q-value (or probability) the endpoint returns for one observation.

    A DQN policy's first output is the Q-values; a clipped-PPO policy's first output is its
    value head (one number), and its action probabilities are among the named outputs.

    Raises:
        UserError: no output has one number per action.
    """
    answer = predictor.predict([float(x) for x in observation])
    rows = [answer["predictions"][0]] + [output[0] for output in (answer.get("outputs") or {}).values() if output]
    scores = next((row for row in rows if isinstance(row, list) and len(row) > 1), None)
    if scores is None:
        raise UserError(f"The model answers no Q-values or action probabilities to drive episodes with (outputs: "
                        f"{sorted(answer.get('outputs') or {}) or 'predictions only'}). Pass --episodes 0.")
    return max(range(len(scores)), key=scores.__getitem__)


def run_episodes(predictor: Any, episodes: int = 20, env_id: str = "CartPole-v0", seed: int = 0) -> list[float]:
    """Plays `episodes` episodes of `env_id` (gymnasium) with actions from the endpoint."""
    with warnings.catch_warnings():
        # CartPole-v0 (200 steps) is what the presets train on; gymnasium calls it out of date.
        warnings.simplefilter("ignore", DeprecationWarning)
        env = gymnasium.make(env_id)
    rewards = []
    try:
        for episode in range(episodes):
            observation, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                observation, reward, terminated, truncated, _ = env.step(greedy_action(predictor, observation))
                total += float(reward)
                done = terminated or truncated
            rewards.append(total)
    finally:
        env.close()
    return rewards
