"""Fixtures of the benchmark suite, and the report printed after a run.

Every benchmark is parametrised by image variant (cpu, gpu). The gpu cases skip, with
the reason, when the engine has no NVIDIA runtime or the GPU image is not built. Each
variant gets one warm training container for the whole session (per-step figures are
`docker exec`s into it) and one exported policy, trained briefly in that container.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.harness import WORK_MOUNT, WarmContainer, image_exists, omp_threads_option

RESULTS = pytest.StashKey[list]()
REPORT_FILE = Path(__file__).resolve().parent / "report.md"
# The policy the rollout and serving benchmarks use: the DQN preset, briefly trained.
POLICY_TRAIN_STEPS = 500


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = []


@pytest.fixture(scope="session")
def engine() -> None:
    from emulator.engine import check_engine

    problems = check_engine()
    if problems:
        pytest.skip("Docker engine not ready: " + " ".join(problems))


@pytest.fixture(scope="session", params=report.VARIANTS)
def variant(request: pytest.FixtureRequest, engine: None) -> str:
    """"cpu" or "gpu"; gpu only where the engine can give a container a GPU."""
    if request.param == "gpu":
        from emulator.engine import has_nvidia_runtime

        if not has_nvidia_runtime():
            pytest.skip("no GPU: the Docker engine has no NVIDIA runtime (install the NVIDIA driver and "
                        "nvidia-container-toolkit), so the GPU image cannot run here")
    return request.param


def _require_image(image: str, variant: str) -> str:
    if not image_exists(image):
        build = "make images-gpu" if variant == "gpu" else "make images"
        message = f"image {image} is not built: run `{build}` first"
        # A GPU runtime without the (large, optional) GPU image is a skip; a missing CPU image is a broken set-up.
        if variant == "gpu":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return image


@pytest.fixture(scope="session")
def training_image(variant: str) -> str:
    from emulator.images import training_image as tag

    return _require_image(tag(variant), variant)


@pytest.fixture(scope="session")
def inference_image(variant: str) -> str:
    from emulator.images import inference_image as tag

    return _require_image(tag(variant), variant)


@pytest.fixture(scope="session")
def warm_training(training_image: str, variant: str, tmp_path_factory: pytest.TempPathFactory):
    """A running training container of this variant, for `docker exec` of bench scripts."""
    with WarmContainer(training_image, tmp_path_factory.mktemp(f"work-{variant}"), gpu=variant == "gpu",
                       omp_threads=omp_threads_option()) as container:
        yield container


@pytest.fixture(scope="session")
def policy_archive(warm_training: WarmContainer) -> tuple[str, Path]:
    """A model.tar.gz exported by Coach from the DQN preset: (path in the container, path on the host)."""
    inside = f"{WORK_MOUNT}/policy/model.tar.gz"
    warm_training.run_script("coach_train.py", "--presets", "/opt/presets", "--steps", str(POLICY_TRAIN_STEPS),
                             "--export", inside)
    return inside, warm_training.host_path(inside)


@pytest.fixture
def record(request: pytest.FixtureRequest, benchmark: Any) -> Callable[..., report.Result]:
    """record(figure, variant, values, image, **info): puts a figure in extra_info and in the report.

    `values` are the figure per round (rates measured in the container, or seconds
    measured by pytest-benchmark); the report shows their median.
    """

    def _record(figure: str, variant: str, values: list[float], image: str, **info: Any) -> report.Result:
        assert figure in report.BY_KEY, f"unknown figure {figure!r}: add it to benchmarks/report.py FIGURES"
        assert values and all(v > 0 for v in values), f"{figure}: no positive measurement in {values}"
        result = report.Result(figure, variant, list(values), {"image": image, "variant": variant, **info})
        # One benchmark may give several figures (Coach's runs give three): one entry each.
        figures = benchmark.extra_info.setdefault("figures", {})
        figures[figure] = {"unit": report.BY_KEY[figure].unit, "value": result.value, "rounds": result.values}
        benchmark.extra_info.update({"image": image, "variant": variant, **info})
        request.config.stash[RESULTS].append(result)
        return result

    return _record


def round_times(benchmark: Any) -> list[float]:
    """The seconds of each round pytest-benchmark timed."""
    return list(benchmark.stats.stats.data)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    terminalreporter.write_sep("=", "sagemaker-rl-local benchmark report")
    for line in report.context_lines(results):
        terminalreporter.write_line(line)
    terminalreporter.write_line(report.render_text(results))
    report.write_markdown(REPORT_FILE, results)
    terminalreporter.write_line(f"(also written to {os.path.relpath(REPORT_FILE)})")
