"""Serving figures, warm endpoint: what a `predict()` costs and how many requests/s it takes.

One endpoint (the DQN policy, `emulator.endpoint`, defaults of the inference image) serves
every case; traffic goes to 127.0.0.1 only. Compared in the same run:

* plain HTTP with a keep-alive connection (the floor for any client);
* the SDK's `Predictor.predict()` with the emulator's session (one kept-alive connection
  per thread, no `docker` call);
* the same predictor with the SDK's stock local-mode runtime client, which runs `docker
  info` and `docker context inspect` before every request;
* requests/s from 4 client processes, each with its own keep-alive connection.
"""
from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import time

import pytest

from benchmarks.harness import free_port, image_info

OBSERVATION = json.dumps([0.01, 0.02, 0.03, 0.04]).encode()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
CALLS = 400
STOCK_CALLS = 20  # each stock call runs two `docker` commands (~40 ms)
CLIENTS = 4
LOAD_SECONDS = 3.0


@pytest.fixture(scope="module")
def served(policy_archive, inference_image, variant, tmp_path_factory):
    from emulator.endpoints import endpoint
    from emulator.session import local_session

    _, archive = policy_archive
    session = local_session(work_dir=tmp_path_factory.mktemp("serving"))
    with endpoint(archive, session=session, port=free_port(),
                  instance_type="local_gpu" if variant == "gpu" else "local") as predictor:
        yield predictor, int(predictor.url.rsplit(":", 1)[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _latencies_ms(call, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def test_predict_plain_http(benchmark, record, served, inference_image, variant):
    _, port = served
    connection = http.client.HTTPConnection("127.0.0.1", port)

    def call() -> None:
        connection.request("POST", "/invocations", body=OBSERVATION, headers=HEADERS)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()

    latencies = benchmark.pedantic(lambda: _latencies_ms(call, CALLS), rounds=3, iterations=1, warmup_rounds=1)
    connection.close()
    record("predict-http-p50", variant, [statistics.median(latencies)], inference_image, calls=CALLS,
           p99_ms=_percentile(latencies, 0.99), **image_info(inference_image))


def test_predict_sdk_predictor(benchmark, record, served, inference_image, variant):
    predictor, _ = served
    latencies = benchmark.pedantic(lambda: _latencies_ms(lambda: predictor.predict([0.01, 0.02, 0.03, 0.04]), CALLS),
                                   rounds=3, iterations=1, warmup_rounds=1)
    record("predict-sdk-p50", variant, [statistics.median(latencies)], inference_image, calls=CALLS,
           **image_info(inference_image))
    record("predict-sdk-p99", variant, [_percentile(latencies, 0.99)], inference_image, calls=CALLS,
           **image_info(inference_image))


def test_predict_sdk_predictor_stock_local_mode(benchmark, record, served, inference_image, variant):
    from sagemaker.local.local_session import LocalSagemakerRuntimeClient
    from sagemaker.predictor import Predictor

    predictor, port = served
    session = predictor.sagemaker_session
    emulator_client = session.sagemaker_runtime_client
    stock = LocalSagemakerRuntimeClient({"local": {"serving_port": port}})
    try:
        session.sagemaker_runtime_client = stock
        stock_predictor = Predictor(predictor.endpoint_name, sagemaker_session=session,
                                    serializer=predictor.serializer, deserializer=predictor.deserializer)
        latencies = benchmark.pedantic(
            lambda: _latencies_ms(lambda: stock_predictor.predict([0.01, 0.02, 0.03, 0.04]), STOCK_CALLS),
            rounds=1, iterations=1)
    finally:
        session.sagemaker_runtime_client = emulator_client
    record("predict-stock-p50", variant, [statistics.median(latencies)], inference_image, calls=STOCK_CALLS,
           **image_info(inference_image))


def _client_load(port: int, seconds: float, results: multiprocessing.Queue) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.request("POST", "/invocations", body=OBSERVATION, headers=HEADERS)
        response = connection.getresponse()
        response.read()
        done += response.status == 200
    connection.close()
    results.put(done)


def test_requests_per_second_with_concurrent_clients(benchmark, record, served, inference_image, variant):
    _, port = served
    context = multiprocessing.get_context("fork")

    def load() -> float:
        results = context.Queue()
        clients = [context.Process(target=_client_load, args=(port, LOAD_SECONDS, results)) for _ in range(CLIENTS)]
        started = time.perf_counter()
        for client in clients:
            client.start()
        answered = sum(results.get(timeout=60) for _ in clients)
        for client in clients:
            client.join()
        return answered / (time.perf_counter() - started)

    rates = [benchmark.pedantic(load, rounds=1, iterations=1)]
    record("requests-per-second", variant, rates, inference_image, clients=CLIENTS, **image_info(inference_image))
