"""The package installed from its wheel, run from a folder outside the checkout, finds its
build contexts and presets inside itself: it builds (the same inputs as the checkout, so
the images are up to date) and trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

# Building the wheel takes about 10 s: these run with the integration tests, not in `make check`.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of this checkout's files (what git tracks or would track):
    setuptools reuses a `build/` folder left in the checkout, with files since deleted."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist),
                    str(source)], check=True, capture_output=True)
    (built,) = dist.glob("sagemaker_rl_local-*.whl")
    return built


@pytest.fixture(scope="module")
def installed_wheel(wheel, tmp_path_factory) -> Path:
    """The wheel installed (without its dependencies, which this venv has) into a folder of its own."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site


def _isolated_env(site: Path) -> dict[str, str]:
    """The installed package first, then this venv's dependencies, read without site
    processing (`python -S`): the venv's editable install of this checkout (a .pth hook) must
    not fill in what the wheel lacks."""
    dependencies = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{dependencies}"}
    env.pop("SMRL_SOURCE_DIR", None)
    env.pop("SMRL_WORK_DIR", None)
    return env


def _smrl_local(site: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`smrl-local` of the installed package, isolated as above."""
    cwd.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-S", str(site / "bin" / "smrl-local"), *args], cwd=cwd,
                          env=_isolated_env(site), capture_output=True, text=True, timeout=timeout)


def _smrl_local_with_compose(site: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`smrl-local` of the installed package with normal site processing: it runs docker-compose,
    a Python program of its own that must not see this venv's packages on PYTHONPATH. (That
    the wheel lacks no module of the package is checked above.)"""
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("SMRL_SOURCE_DIR", None)
    env.pop("SMRL_WORK_DIR", None)
    return subprocess.run([str(site / "bin" / "smrl-local"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_carries_the_build_contexts_and_presets_and_nothing_else(wheel):
    bundled = {name.removeprefix("emulator/_bundled/") for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("emulator/_bundled/")}
    expected = {str(path.relative_to(REPO)) for path in [*(REPO / "containers").rglob("*"), *(REPO / "presets").rglob("*")]
                if path.is_file() and "__pycache__" not in path.parts}
    assert bundled == expected


def test_the_wheel_carries_every_module_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(REPO)) for path in (REPO / "emulator").rglob("*.py")}
    assert modules - names == set()


def test_the_installed_package_runs_from_its_own_folder_not_the_checkout(installed_wheel, tmp_path):
    done = _smrl_local(installed_wheel, tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "preflight" in done.stdout
    located = subprocess.run([sys.executable, "-S", "-c", "import emulator.resources as r; print(r.source_dir())"],
                             cwd=tmp_path, env=_isolated_env(installed_wheel), capture_output=True, text=True,
                             check=True)
    assert Path(located.stdout.strip()) == installed_wheel / "emulator" / "_bundled"


def test_the_installed_package_builds_and_trains(docker_engine, training_image_ready, inference_image_ready,
                                                 installed_wheel, tmp_path):
    built = _smrl_local_with_compose(installed_wheel, tmp_path, "build", "--image", "all")
    assert built.returncode == 0, built.stdout + built.stderr
    assert built.stdout.count("up to date") == 2, built.stdout  # the same inputs as the checkout's build

    trained = _smrl_local_with_compose(installed_wheel, tmp_path, "train", "--no-build", "--steps", "300",
                          "-p", "rl.evaluation_steps:EnvironmentEpisodes=1")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (model,) = (tmp_path / "output").glob("smrl-*/model.tar.gz")
    with tarfile.open(model) as archive:
        assert "model.onnx" in {m.name.lstrip("./") for m in archive.getmembers()}
