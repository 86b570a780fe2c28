"""The local S3 server of `smrl-local run` (rclone serve s3, on the host): how fast it starts,
and a 50 MB object put and got through boto3 on 127.0.0.1. No image involved: the figures go
in the CPU column."""

from __future__ import annotations

import os
import time

import pytest

from emulator.s3 import LocalS3

SIZE = 50 * 1024 * 1024
HOST = "host (rclone serve s3)"
NO_IMAGE = {"mxnet_version": "none (a host process)", "threads": "rclone's own"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalS3(tmp_path_factory.mktemp("s3-bench") / "s3") as s3:
        client = s3.client()
        client.create_bucket(Bucket="bench-bucket")
        yield client


def test_s3_start(benchmark, record, tmp_path):
    def start_and_stop() -> float:
        started = time.perf_counter()
        with LocalS3(tmp_path / "s3"):
            return time.perf_counter() - started

    seconds = benchmark.pedantic(lambda: [start_and_stop() for _ in range(5)], rounds=1, iterations=1)
    record("s3-start", "cpu", seconds, HOST, **NO_IMAGE)


def test_s3_put_and_get_of_50_mb(benchmark, record, server):
    body = os.urandom(SIZE)

    def put() -> float:
        started = time.perf_counter()
        server.put_object(Bucket="bench-bucket", Key="big/50mb.bin", Body=body)
        return time.perf_counter() - started

    def get() -> float:
        started = time.perf_counter()
        assert len(server.get_object(Bucket="bench-bucket", Key="big/50mb.bin")["Body"].read()) == SIZE
        return time.perf_counter() - started

    puts, gets = benchmark.pedantic(lambda: ([put() for _ in range(3)], [get() for _ in range(3)]),
                                    rounds=1, iterations=1)
    record("s3-put-50mb", "cpu", puts, HOST, **NO_IMAGE)
    record("s3-get-50mb", "cpu", gets, HOST, **NO_IMAGE)
