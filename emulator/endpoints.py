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
from emulator.containers import LOOPBACK
from emulator.errors import ModelNotFoundError
from emulator.images import sdk_inference_image_uri
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
        port: Host port on 127.0.0.1; default 8080, or a free one when 8080 is taken.
        env: Extra environment for the container (e.g. SAGEMAKER_MODEL_SERVER_WORKERS).
        session: An `emulator.local_session()`; a new one by default.

    Yields:
        A `sagemaker.predictor.Predictor` (JSON in, JSON out) with `.url` set to the
        endpoint's base URL.
    """
    session = session or local_session()
    if port is not None:
        session.config = {**session.config, "local": {**session.config["local"], "serving_port": port}}
    name = f"smrl-endpoint-{uuid.uuid4().hex[:8]}"
    # The SDK extracts a file:// archive next to itself and mounts that folder read-write:
    # a private copy keeps the training output untouched.
    model_dir = Path(session.work_dir, "endpoints", name)
    model_dir.mkdir(parents=True)
    source = Path(str(model_data).removeprefix("file://"))
    if not source.is_file():
        shutil.rmtree(model_dir)
        raise ModelNotFoundError(f"No model archive at {source}: train first (`make local-train`) or pass its path.")
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


def endpoint_url(endpoint_name: str) -> str:
    """Base URL (http://127.0.0.1:<port>) of a running local endpoint."""
    return f"http://{LOOPBACK}:{endpoint_named(endpoint_name).port}"


def greedy_action(predictor: Any, observation: Any) -> int:
    """The action with the highest Q-value (or logit) the endpoint returns for one observation."""
    outputs = predictor.predict([float(x) for x in observation])["predictions"][0]
    return max(range(len(outputs)), key=outputs.__getitem__)


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
