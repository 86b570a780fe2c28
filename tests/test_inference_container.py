"""The inference image against real containers: SageMaker's MXNet serving contract.

Each test starts `docker run IMAGE serve` with a model folder mounted read-only at
/opt/ml/model, port 8080 published on 127.0.0.1 only, talks HTTP to it from the host,
and removes the container in `finally`.

The model is a real export of the training image (a short CartPole DQN job), with
Coach's own Q-values for eight observations in reference-predictions.json. Set
SMRL_TEST_MODEL to an extracted model folder or a model.tar.gz to skip that job.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import statistics
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import REPO
from emulator.images import build_image, inference_image

# Coach computes in float32; batch size changes the summation order a little.
RTOL, ATOL = 1e-4, 1e-4

# What a SageMaker RL notebook ships as its inference script: ONNX into Gluon, transform_fn
# returning (body, content_type). Must run unmodified.
NOTEBOOK_SCRIPT = '''
import json
import os

import mxnet as mx
from mxnet.contrib import onnx as onnx_mxnet


def model_fn(model_dir):
    ctx = mx.cpu()
    net = onnx_mxnet.import_to_gluon(os.path.join(model_dir, "model.onnx"), ctx)
    return net


def transform_fn(net, data, input_content_type, output_content_type):
    parsed = json.loads(data)
    nda = mx.nd.array(parsed)
    output = net(nda)
    response_body = json.dumps(output.asnumpy().tolist())
    return response_body, output_content_type
'''

# A script with transform_fn only (default model_fn) that can raise, stall, or answer
# with a bare body (the other return style).
BEHAVIOUR_SCRIPT = '''
import json
import time

import mxnet as mx


def transform_fn(model, data, content_type, accept):
    request = json.loads(data)
    if "raise" in request:
        raise RuntimeError(request["raise"])
    time.sleep(request.get("sleep", 0))
    q_values = model(mx.nd.array([request["observation"]])).asnumpy()
    return json.dumps({"q": q_values[0].tolist()})
'''


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def image(docker_engine) -> str:
    build_image("inference", "cpu", log=lambda line: None)
    return inference_image("cpu")


@pytest.fixture(scope="session")
def exported_model(docker_engine, tmp_path_factory) -> Path:
    """An extracted model archive exported by the training image."""
    given = os.environ.get("SMRL_TEST_MODEL")
    if given:
        archive = Path(given)
        if archive.is_dir():
            return archive
    else:
        from emulator.training import train

        build_image("training", "cpu", log=lambda line: None)
        result = train(steps=300, output_dir=tmp_path_factory.mktemp("train"), build=False, log=lambda line: None)
        archive = result.model_data
    target = tmp_path_factory.mktemp("model")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="session")
def reference(exported_model) -> tuple[np.ndarray, np.ndarray]:
    """(observations [8, 4], Coach's Q-values [8, 2])."""
    document = json.loads((exported_model / "reference-predictions.json").read_text())
    return (np.asarray(document["inputs"]["observation"], dtype=np.float32),
            np.asarray(document["outputs"][0], dtype=np.float32))


def _model_folder(tmp_path: Path, exported: Path, files: list[str], scripts: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "model"
    (folder / "code").mkdir(parents=True)
    for name in files:
        shutil.copy(exported / name, folder / name)
    for name, text in (scripts or {}).items():
        (folder / "code" / name).write_text(text)
    return folder


@dataclass
class Endpoint:
    container: object
    url: str
    ready_seconds: float

    def invoke(self, body, content_type="application/json", accept=None, **kwargs) -> requests.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if accept:
            headers["Accept"] = accept
        return requests.post(self.url + "/invocations", data=body, headers=headers, timeout=30, **kwargs)

    def ping(self) -> requests.Response:
        return requests.get(self.url + "/ping", timeout=5)

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


@contextlib.contextmanager
def served(client, image: str, model_dir: Path, environment: dict | None = None, port: int = 8080,
           wait_ready: bool = True):
    """`docker run IMAGE serve` with the model mounted read-only; removed on exit."""
    started = time.monotonic()
    container = client.containers.run(
        image, "serve", detach=True, environment=environment or {},
        ports={f"{port}/tcp": ("127.0.0.1", None)},
        volumes={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
    )
    try:
        host_port = None
        while host_port is None and time.monotonic() - started < 30:
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp")
            host_port = bindings[0]["HostPort"] if bindings else None
        url = f"http://127.0.0.1:{host_port}"
        ready = None
        while wait_ready and ready is None:
            try:
                if requests.get(url + "/ping", timeout=2).status_code == 200:
                    ready = time.monotonic() - started
                    break
            except requests.RequestException:  # not listening yet (docker's proxy resets us)
                pass
            container.reload()
            if container.status == "exited" or time.monotonic() - started > 60:
                pytest.fail(f"container never answered /ping with 200:\n{container.logs().decode()[-3000:]}")
            time.sleep(0.02)
        yield Endpoint(container, url, ready)
    finally:
        container.remove(force=True)


# -- predictions -----------------------------------------------------------------------------

def test_default_handler_reproduces_coach_q_values_from_the_symbol_export(docker_engine, image, exported_model,
                                                                         reference):
    observations, q_values = reference
    with served(docker_engine, image, exported_model) as endpoint:
        assert "model-symbol.json" in endpoint.logs()

        batch = endpoint.invoke(json.dumps(observations.tolist()))
        assert batch.status_code == 200, batch.text
        assert batch.headers["Content-Type"] == "application/json"
        np.testing.assert_allclose(batch.json()["predictions"], q_values, rtol=RTOL, atol=ATOL)

        single = [endpoint.invoke(json.dumps(row.tolist())).json()["predictions"][0] for row in observations]
        np.testing.assert_allclose(single, q_values, rtol=RTOL, atol=ATOL)

        # The other request shapes and types give the same numbers.
        for body in ({"instances": observations.tolist()}, {"inputs": {"observation": observations.tolist()}}):
            np.testing.assert_allclose(endpoint.invoke(json.dumps(body)).json()["predictions"], q_values,
                                       rtol=RTOL, atol=ATOL)
        csv_body = "\n".join(",".join(repr(float(v)) for v in row) for row in observations)
        as_csv = endpoint.invoke(csv_body, "text/csv", accept="text/csv")
        assert as_csv.status_code == 200 and as_csv.headers["Content-Type"] == "text/csv"
        np.testing.assert_allclose(np.loadtxt(as_csv.text.splitlines(), delimiter=","), q_values, rtol=RTOL, atol=ATOL)
        npy = _npy(observations)
        as_npy = endpoint.invoke(npy, "application/x-npy", accept="application/x-npy")
        assert as_npy.status_code == 200 and as_npy.headers["Content-Type"] == "application/x-npy"
        np.testing.assert_allclose(np.load(_bytes_io(as_npy.content)), q_values, rtol=RTOL, atol=ATOL)
        # Accept with q-values and wildcards.
        assert endpoint.invoke(npy, "application/x-npy", accept="text/html;q=0.9, text/*;q=0.5").headers[
            "Content-Type"] == "text/csv"


def test_onnx_only_model_gives_the_same_q_values(docker_engine, image, exported_model, reference, tmp_path):
    observations, q_values = reference
    model_dir = _model_folder(tmp_path, exported_model, ["model.onnx"])
    with served(docker_engine, image, model_dir) as endpoint:
        assert "model.onnx" in endpoint.logs()
        answer = endpoint.invoke(json.dumps(observations.tolist()))
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], q_values, rtol=RTOL, atol=ATOL)
        wrong = endpoint.invoke("[1, 2, 3]")
        assert wrong.status_code == 400 and "[4]" in wrong.text


def test_notebook_style_script_runs_unmodified(docker_engine, image, exported_model, reference, tmp_path):
    observations, q_values = reference
    model_dir = _model_folder(tmp_path, exported_model, ["model.onnx"], {"inference.py": NOTEBOOK_SCRIPT})
    environment = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    with served(docker_engine, image, model_dir, environment) as endpoint:
        answer = endpoint.invoke(json.dumps(observations.tolist()), accept="application/json")
        assert answer.status_code == 200, answer.text + endpoint.logs()[-2000:]
        assert answer.headers["Content-Type"] == "application/json"
        np.testing.assert_allclose(answer.json(), q_values, rtol=RTOL, atol=ATOL)


# -- errors --------------------------------------------------------------------------------

def test_bad_requests_get_the_right_status_and_a_message(docker_engine, image, exported_model, reference):
    observations, q_values = reference
    good = json.dumps(observations[0].tolist())
    with served(docker_engine, image, exported_model) as endpoint:
        cases = [
            ("invalid JSON", endpoint.invoke("[0.1, 0.2,"), 400, "not valid JSON"),
            ("wrong shape", endpoint.invoke("[0.1, 0.2, 0.3]"), 400, "shape [4]"),
            ("wrong batch shape", endpoint.invoke("[[1, 2, 3, 4, 5]]"), 400, "got an array of shape [1, 5]"),
            ("ragged batch", endpoint.invoke("[[1, 2, 3, 4], [1, 2]]"), 400, "uniform shape"),
            ("NaN", endpoint.invoke("[NaN, 0.1, 0.2, 0.3]"), 400, "NaN"),
            ("infinity", endpoint.invoke("0.1,inf,0.2,0.3", "text/csv"), 400, "infinite"),
            ("empty body", endpoint.invoke(b""), 400, "Empty request body"),
            ("bad npy", endpoint.invoke(b"not npy", "application/x-npy"), 400, ".npy"),
            ("unsupported Content-Type", endpoint.invoke(good, "image/png"), 415, "image/png"),
            ("unsatisfiable Accept", endpoint.invoke(good, accept="image/png"), 406, "image/png"),
            ("7 MB body", endpoint.invoke(b"[" + b"0.5, " * (7 * 1024 * 1024 // 5) + b"0.5]"), 413, "6 MB"),
        ]
        for name, response, status, text in cases:
            assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
            assert text in response.text, f"{name}: {response.text!r}"
        assert requests.get(endpoint.url + "/invocations", timeout=5).status_code == 405

        # 100 concurrent clients, each on its own connection, all answered correctly.
        def one(index: int) -> list[float]:
            answer = endpoint.invoke(json.dumps(observations[index % 8].tolist()))
            assert answer.status_code == 200, answer.text
            return answer.json()["predictions"][0]

        with ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(pool.map(one, range(100)))
        np.testing.assert_allclose(answers, q_values[np.arange(100) % 8], rtol=RTOL, atol=ATOL)

        assert endpoint.ping().status_code == 200
        assert endpoint.invoke(good).status_code == 200


def test_user_code_exceptions_are_500_with_their_text_and_timeouts_504(docker_engine, image, exported_model,
                                                                       reference, tmp_path):
    observations, q_values = reference
    model_dir = _model_folder(tmp_path, exported_model, ["model-symbol.json", "model-0000.params",
                                                          "model-signature.json"], {"behaviour.py": BEHAVIOUR_SCRIPT})
    environment = {"SAGEMAKER_PROGRAM": "behaviour.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                   "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1"}
    with served(docker_engine, image, model_dir, environment) as endpoint:
        failed = endpoint.invoke(json.dumps({"raise": "policy exploded at step 42"}))
        assert failed.status_code == 500
        assert "RuntimeError: policy exploded at step 42" in failed.text
        assert "Traceback" in endpoint.logs() and "policy exploded at step 42" in endpoint.logs()

        slow = endpoint.invoke(json.dumps({"observation": observations[0].tolist(), "sleep": 3}))
        assert slow.status_code == 504 and "SAGEMAKER_MODEL_SERVER_TIMEOUT" in slow.text

        # default model_fn + a transform_fn returning a bare body: Accept's type is used.
        answer = endpoint.invoke(json.dumps({"observation": observations[0].tolist()}))
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
        np.testing.assert_allclose(answer.json()["q"], q_values[0], rtol=RTOL, atol=ATOL)
        assert endpoint.ping().status_code == 200


def test_a_model_that_cannot_load_is_reported_by_ping(docker_engine, image, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with served(docker_engine, image, empty, wait_ready=False) as endpoint:
        deadline = time.monotonic() + 30
        while True:
            try:
                ping = endpoint.ping()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, endpoint.logs()
                time.sleep(0.05)
        assert ping.status_code == 503 and "No model in /opt/ml/model" in ping.text
        assert endpoint.invoke("[1, 2, 3, 4]").status_code == 503


# -- the server ------------------------------------------------------------------------------

def test_port_is_published_on_loopback_only_and_bind_to_port_is_honoured(docker_engine, image, exported_model):
    labels = docker_engine.images.get(image).labels
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    environment = {"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    with served(docker_engine, image, exported_model, environment, port=9090) as endpoint:
        bindings = endpoint.container.attrs["NetworkSettings"]["Ports"]["9090/tcp"]
        assert bindings and {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}
        assert endpoint.invoke("[0.1, 0.2, 0.3, 0.4]").status_code == 200
        assert "with 1 worker" in endpoint.logs()


def test_single_client_latency_has_no_nagle_stall(docker_engine, image, exported_model):
    """p50 well under a millisecond was measured; 2 ms here still catches a 40 ms Nagle stall."""
    with served(docker_engine, image, exported_model) as endpoint:
        connection = http.client.HTTPConnection("127.0.0.1", int(endpoint.url.rsplit(":", 1)[1]), timeout=10)
        timings = []
        for index in range(600):
            started = time.perf_counter()
            connection.request("POST", "/invocations", b"[0.1, 0.2, 0.3, 0.4]", {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            if index >= 100:  # warm-up
                timings.append(time.perf_counter() - started)
        connection.close()
        assert statistics.median(timings) < 0.002, f"p50 {statistics.median(timings) * 1e3:.2f} ms"


def test_sigterm_finishes_in_flight_requests_and_exits_within_2_s(docker_engine, image, exported_model,
                                                                  reference, tmp_path):
    observations, _ = reference
    model_dir = _model_folder(tmp_path, exported_model, ["model-symbol.json", "model-0000.params",
                                                          "model-signature.json"], {"behaviour.py": BEHAVIOUR_SCRIPT})
    environment = {"SAGEMAKER_PROGRAM": "behaviour.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    with served(docker_engine, image, model_dir, environment) as endpoint:
        idle = requests.Session()  # an idle keep-alive connection must not hold the shutdown up
        assert idle.get(endpoint.url + "/ping", timeout=5).status_code == 200
        in_flight: dict = {}

        def slow_request():
            in_flight["response"] = endpoint.invoke(json.dumps({"observation": observations[0].tolist(), "sleep": 0.8}))

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.3)
        signalled = time.monotonic()
        endpoint.container.kill(signal="SIGTERM")
        result = endpoint.container.wait(timeout=10)
        exited_after = time.monotonic() - signalled
        worker.join(timeout=10)
        assert exited_after <= 2.0, f"exited {exited_after:.2f} s after SIGTERM"
        assert in_flight["response"].status_code == 200, in_flight["response"].text
        assert result["StatusCode"] == 0, endpoint.logs()[-2000:]
        idle.close()


# -- helpers ---------------------------------------------------------------------------------

def _npy(array: np.ndarray) -> bytes:
    buffer = _bytes_io()
    np.save(buffer, array)
    return buffer.getvalue()


def _bytes_io(data: bytes = b""):
    import io

    return io.BytesIO(data)


# -- every policy the training image exports -----------------------------------------------

# The public helper's rewrite, run in the training image as sagemaker_rl's launcher runs it
# after training (`_save_onnx_model`).
FIX_ONNX = "from sagemaker_rl.onnx_utils import fix_onnx_model; fix_onnx_model('/opt/ml/model/model.onnx')"


@pytest.mark.parametrize("source_dir, preset", [
    ("presets", "preset-cartpole-dqn"),
    ("presets", "preset-cartpole-clippedppo"),                    # discrete PPO head
    ("tests/fixtures/ppo_exports", "preset-pendulum-clippedppo"),  # continuous PPO head
])
def test_every_exported_policy_passes_the_public_helper_and_is_served_like_coach(
    docker_engine, image, rl_examples, training_image_ready, tmp_path, source_dir, preset
):
    from emulator.training import train

    result = train(preset, steps=400, source_dir=REPO / source_dir, output_dir=tmp_path / "train", build=False,
                   log=lambda line: None)
    exported = tmp_path / "exported"
    with tarfile.open(result.model_data) as tar:
        tar.extractall(exported, filter="data")
    helper = rl_examples / "common" / "sagemaker_rl"
    fixed = docker_engine.containers.run(
        training_image_ready, ["python3", "-c", FIX_ONNX], remove=True, network_mode="none", working_dir="/opt/ml/code",
        volumes={str(exported): {"bind": "/opt/ml/model", "mode": "rw"}, str(helper): {"bind": "/opt/ml/code/sagemaker_rl", "mode": "ro"}},
    ).decode()
    assert "ONNX correction" in fixed, fixed

    deploy_script = (rl_examples / "rl_cartpole_coach" / "src" / "deploy-mxnet-coach.py").read_text()
    model_dir = _model_folder(tmp_path, exported, ["model.onnx"], {"deploy.py": deploy_script})
    environment = {"SAGEMAKER_PROGRAM": "deploy.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    reference = json.loads((exported / "reference-predictions.json").read_text())
    observations = next(iter(reference["inputs"].values()))
    with served(docker_engine, image, model_dir, environment) as endpoint:
        for index, observation in enumerate(observations):
            answer = endpoint.invoke(json.dumps(observation))
            assert answer.status_code == 200, answer.text + endpoint.logs()[-2000:]
            coach = [np.ravel(head[index]) for head in reference["outputs"]]
            served_heads = [np.ravel(head) for head in answer.json()]
            assert [h.size for h in served_heads] == [h.size for h in coach], (answer.json(), reference["outputs"])
            np.testing.assert_allclose(np.concatenate(served_heads), np.concatenate(coach), rtol=0, atol=1e-5)
