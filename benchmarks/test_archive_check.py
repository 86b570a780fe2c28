"""The host's check of a model archive before it is unpacked (emulator.archives): a real
policy's archive, and gzip bombs of 5.5 GB, refused. No image involved: the figures go in
the CPU column."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

import pytest

from emulator.archives import ModelArchiveError, check_model_archive

HOST = "host (emulator.archives)"
NO_IMAGE = {"mxnet_version": "none (a host process)", "threads": "1"}
BOMB_BYTES = int(5.5 * 1000**3)


def gzip_bomb(path: Path, unpacked_bytes: int, members: int = 1) -> Path:
    """`members` files of zeros, `unpacked_bytes` in all, as joined gzip members (the same
    builder as tests/conftest.py's: the suites cannot import each other's helpers)."""
    size = unpacked_bytes // members
    blocks = [(n, gzip.compress(bytes(n), compresslevel=9)) for n in (64 * 1024**2, 1024**2)]
    with open(path, "wb") as out:
        for index in range(members):
            header = tarfile.TarInfo(f"part-{index}.bin")
            header.size = size
            out.write(gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)))
            left = size
            for length, packed in blocks:
                count, left = divmod(left, length)
                out.write(packed * count)
            out.write(gzip.compress(bytes(left + (-size) % tarfile.BLOCKSIZE)))
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE)))
    return path


def _seconds(check, path: Path, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        check(path)
        times.append(time.perf_counter() - started)
    return times


def _refused(path: Path) -> None:
    with pytest.raises(ModelArchiveError, match="unpacks to"):
        check_model_archive(path)


def test_check_of_a_policy_archive(benchmark, record, tmp_path):
    # The files Coach's export writes for the DQN preset, at their real sizes (about 50 KB in all).
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, size in (("model.onnx", 51_312), ("model-symbol.json", 6_000), ("model-0000.params", 40_000)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256) + bytes(size % 256)))
    seconds = benchmark.pedantic(lambda: _seconds(check_model_archive, archive, 50), rounds=1, iterations=1)
    record("archive-check-model", "cpu", [s * 1000 for s in seconds], HOST, **NO_IMAGE)


def test_check_of_gzip_bombs(benchmark, record, tmp_path):
    one = gzip_bomb(tmp_path / "one.tar.gz", BOMB_BYTES)
    split = gzip_bomb(tmp_path / "split.tar.gz", BOMB_BYTES, members=55)
    one_times, split_times = benchmark.pedantic(
        lambda: (_seconds(_refused, one, 10), _seconds(_refused, split, 3)), rounds=1, iterations=1)
    record("archive-check-bomb", "cpu", [s * 1000 for s in one_times], HOST, packed_bytes=one.stat().st_size,
           **NO_IMAGE)
    record("archive-check-bomb-split", "cpu", split_times, HOST, packed_bytes=split.stat().st_size, **NO_IMAGE)
