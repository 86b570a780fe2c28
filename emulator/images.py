"""Builds the images under `containers/` (training, inference), offline when it has to.

Three steps, each skipped when its result is already there:

1. a base image: a public Python/Debian image when a registry answers, otherwise one
   made from Debian packages (debootstrap + `docker import`);
2. a wheelhouse of every package pinned in the image's lock file, downloaded on the host
   (where pip's certificates and indexes are configured) for Linux x86-64, CPython 3.11;
3. `docker build` of `containers/<kind>` with that base and wheelhouse.

An image records the hash of everything it was built from (label `org.smrl.inputs-hash`);
when nothing changed, `build_image` returns in well under a second. Each built image is
also tagged with the ECR URI the SageMaker SDK computes for it, so that SDK code naming
any region runs it instead of pulling.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from sagemaker import image_uris

from emulator import contract, resources
from emulator.engine import require_engine
from emulator.errors import UserError
from emulator.progress import Log

VARIANTS = contract.VARIANTS
DEFAULT_REGION = "us-west-2"
PUBLIC_BASE_IMAGE = "python:3.11-slim-bookworm"
OFFLINE_BASE_REPOSITORY = "sagemaker-rl-local/base"
# What the offline base needs beyond minbase: a venv-capable Python, `patch` for the
# Coach patches, and the OpenMP / quad-math runtimes MXNet's wheel links against; plus the
# training image's system packages, so that rebuilds of that image need no network either.
CORE_BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "patch", "libgomp1", "libquadmath0")
TRAINING_SYSTEM_PACKAGES = "training/system-packages.txt"
DEBIAN_MIRROR = os.environ.get("SMRL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
INPUTS_HASH_LABEL = "org.smrl.inputs-hash"
# Both Dockerfiles install src/ on the images' Python path.
CONTRACT_IN_CONTEXT = "src/smrl_contract.py"
# The lock marks packages that have no wheel on PyPI; they are built from their sdists.
SDIST_MARKER = "# build-from-sdist"
# Old sdists (rl-coach's `python_requires=">=3.5.*"`) need a setuptools from before 67.
SDIST_BUILD_REQUIREMENTS = ("setuptools<67", "wheel")
WHEEL_PLATFORM = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311")

class ImageBuildError(UserError, RuntimeError):
    """An image could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class ImageSpec:
    """One image of the project: its build context and local name."""

    kind: str
    repository: str
    version: str

    @property
    def context(self) -> Path:
        return resources.containers_dir() / self.kind

    def lock_file(self, variant: str) -> Path:
        """Every Python package of the image for `variant`, pinned."""
        return self.context / f"requirements-{variant}.lock"

    def tag(self, variant: str) -> str:
        return contract.image_tag(self.repository, self.version, variant)


IMAGES = {
    "training": ImageSpec("training", contract.TRAINING_REPOSITORY, contract.TRAINING_VERSION),
    "inference": ImageSpec("inference", contract.INFERENCE_REPOSITORY, contract.INFERENCE_VERSION),
}


def training_image(variant: str = "cpu") -> str:
    """Local tag of the training image, e.g. `sagemaker-rl-local/coach-mxnet:1.0.1-cpu`."""
    return IMAGES["training"].tag(variant)


def inference_image(variant: str = "cpu") -> str:
    """Local tag of the inference image, e.g. `sagemaker-rl-local/mxnet-inference:1.9.1-cpu`."""
    return IMAGES["inference"].tag(variant)


# SageMaker's instance types, and the families with a GPU.
INSTANCE_TYPE = re.compile(r"^ml\.(?P<family>[a-z0-9]+(?:-[a-z0-9]+)?)\.(?P<size>\d*x?large|medium|small|metal)$")
GPU_FAMILIES = {"p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "g3", "g4dn", "g5", "g6", "g6e", "gr6"}
CPU_FAMILIES = {"t2", "t3", "m4", "m5", "m5d", "m6i", "m7i", "c4", "c5", "c5d", "c5n", "c6i", "c7i", "r5", "r5d", "r6i"}


def instance_kind(instance_type: str) -> str | None:
    """'gpu', 'cpu', or None when not a SageMaker instance type we know."""
    match = INSTANCE_TYPE.match(instance_type or "")
    if not match:
        return None
    family = match.group("family")
    return "gpu" if family in GPU_FAMILIES else "cpu" if family in CPU_FAMILIES else None


def variant_for(instance_type: str) -> str:
    """The image variant a local instance type runs: "gpu" for local_gpu, else "cpu"."""
    return "gpu" if instance_type == "local_gpu" else "cpu"


def offline_base_packages() -> list[str]:
    """The Debian packages debootstrap puts into the offline base."""
    system_packages = resources.containers_dir() / TRAINING_SYSTEM_PACKAGES
    listed = [line.split("#", 1)[0].strip() for line in system_packages.read_text().splitlines()]
    return [*CORE_BASE_PACKAGES, *filter(None, listed)]


def offline_base_image() -> str:
    """The offline base's tag, which names its package list: a changed list makes a new base."""
    digest = hashlib.sha256(",".join(offline_base_packages()).encode()).hexdigest()[:8]
    return f"{OFFLINE_BASE_REPOSITORY}:bookworm-{digest}"


@dataclass(frozen=True)
class BuildResult:
    image: str
    built: bool
    base_image: str
    seconds: float


# -- step 1: the base image ----------------------------------------------------------------

def resolve_base_image(client: docker.DockerClient, log: Log = print) -> str:
    """A base with Python 3.11: a public one if present or pullable, else the offline one."""
    offline_base = offline_base_image()
    for name in (PUBLIC_BASE_IMAGE, offline_base):
        if _image_exists(client, name):
            log(f"base image: {name} (present)")
            return name
    try:
        client.images.pull(PUBLIC_BASE_IMAGE)
        log(f"base image: {PUBLIC_BASE_IMAGE} (pulled from the registry)")
        return PUBLIC_BASE_IMAGE
    except docker.errors.APIError as error:
        reason = (error.explanation or str(error)).splitlines()[0][:200]
        log(f"base image: registry not reachable ({reason}); building {offline_base} from Debian packages")
    build_offline_base(client, log)
    return offline_base


def build_offline_base(client: docker.DockerClient, log: Log = print) -> None:
    """debootstrap a minimal Debian bookworm with Python 3.11 and `docker import` it."""
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise ImageBuildError(
            "No registry answers and the offline base cannot be made here: it needs root and "
            "`debootstrap` (Debian/Ubuntu: `sudo apt-get install debootstrap`, then rerun as root), "
            f"or a registry from which `docker pull {PUBLIC_BASE_IMAGE}` works."
        )
    with tempfile.TemporaryDirectory(prefix="smrl-rootfs-", dir=_cache_dir("tmp")) as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(offline_base_packages())}",
                   "bookworm", str(rootfs), DEBIAN_MIRROR]
        log(f"$ {' '.join(command)}")
        _run(command, "debootstrap of the offline base image failed", log)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        python_version = _rootfs_python_version(rootfs)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        repository, tag = offline_base_image().split(":")
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=tag,
            changes=[f"ENV PYTHON_VERSION={python_version}", 'CMD ["/bin/bash"]'],
        )
    log(f"base image: {offline_base_image()} built (Debian bookworm, Python {python_version})")


def _rootfs_python_version(rootfs: Path) -> str:
    command = ["chroot", str(rootfs), "python3", "-c", "import platform; print(platform.python_version())"]
    found = subprocess.run(command, capture_output=True, text=True)
    return found.stdout.strip() or "3.11"


# -- step 2: the wheelhouse ----------------------------------------------------------------

def read_lock(lock_file: Path) -> tuple[list[str], list[str]]:
    """The lock's pins, split into (wheels to download, sdists to build)."""
    wheels: list[str] = []
    sdists: list[str] = []
    for line in lock_file.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            (sdists if SDIST_MARKER in line else wheels).append(requirement)
    return wheels, sdists


def ensure_wheelhouse(lock_file: Path, log: Log = print) -> Path:
    """A folder holding a wheel for every pin in `lock_file`, made once per lock content."""
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:16]
    wheelhouse = _cache_dir("wheelhouse") / f"{lock_file.stem}-{digest}"
    complete = wheelhouse / ".complete"
    if complete.exists():
        log(f"wheelhouse: {wheelhouse} (cached)")
        return wheelhouse
    wheels, sdists = read_lock(lock_file)
    partial = wheelhouse.with_name(wheelhouse.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"wheelhouse: downloading {len(wheels)} wheels for Linux x86-64 / CPython 3.11")
    requirements = partial / "wheels.txt"
    requirements.write_text("\n".join(wheels) + "\n")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *WHEEL_PLATFORM,
          "--dest", str(partial), "--requirement", str(requirements), "--quiet"],
         "downloading the image's wheels failed (is PyPI reachable? the lock is " + str(lock_file) + ")", log)
    if sdists:
        log(f"wheelhouse: building {', '.join(sdists)} from source")
        _run([str(_sdist_builder(log)), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--wheel-dir", str(partial), "--quiet", *sdists],
             "building wheels from sdists failed", log)
    requirements.unlink()
    shutil.rmtree(wheelhouse, ignore_errors=True)
    partial.rename(wheelhouse)
    complete.touch()
    return wheelhouse


def _sdist_builder(log: Log) -> Path:
    """A small venv with an old setuptools, only for building the lock's sdists."""
    venv = _cache_dir("sdist-builder")
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"wheelhouse: creating {venv} ({', '.join(SDIST_BUILD_REQUIREMENTS)})")
        _run([sys.executable, "-m", "venv", str(venv)], "creating the sdist build venv failed", log)
        _run([str(python), "-m", "pip", "install", "--quiet", *SDIST_BUILD_REQUIREMENTS],
             "installing setuptools<67 into the sdist build venv failed", log)
    return python


# -- step 3: the image ---------------------------------------------------------------------

def inputs_hash(context: Path, variant: str, base_image_id: str) -> str:
    """Hash of everything the image is built from, except the wheelhouse (it follows the lock)."""
    digest = hashlib.sha256(f"{variant}\n{base_image_id}\n".encode())
    for name, path in sorted(context_files(context, variant).items()):
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def context_files(context: Path, variant: str) -> dict[str, Path]:
    """The build context of an image: its folder's files by name in the context, plus the
    shared contract module (this package's contract.py) as src/smrl_contract.py."""
    files = {}
    for path in context.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if path.name.startswith("requirements-") and path.name != f"requirements-{variant}.lock":
            continue
        files[str(path.relative_to(context))] = path
    files[CONTRACT_IN_CONTEXT] = Path(contract.__file__)
    return files


def build_image(kind: str = "training", variant: str = "cpu", *, force: bool = False,
                region: str | None = None, log: Log = print) -> BuildResult:
    """Builds (or confirms up to date) the `kind` image ("training", "inference") for `variant`."""
    started = time.monotonic()
    spec = IMAGES[kind]
    client = require_engine()
    image = spec.tag(variant)
    base = resolve_base_image(client, log)
    base_id = str(client.images.get(base).id)
    wanted = inputs_hash(spec.context, variant, base_id)
    if not force and _label(client, image, INPUTS_HASH_LABEL) == wanted:
        log(f"{image}: up to date (inputs {wanted[:12]})")
        _tag_for_sdk(client, image, region, log)
        return BuildResult(image, False, base, time.monotonic() - started)

    wheelhouse = ensure_wheelhouse(spec.lock_file(variant), log)
    log(f"{image}: building from {spec.context} on {base}")
    previous = _image_id(client, image)
    context = _context_archive(spec.context, variant, wheelhouse)
    try:
        stream = client.api.build(
            fileobj=context, custom_context=True, encoding="gzip", tag=image, rm=True, forcerm=True,
            buildargs={"BASE_IMAGE": base, "VARIANT": variant},
            labels={INPUTS_HASH_LABEL: wanted, "org.smrl.base-image": base},
            decode=True,
        )
        output = _follow_build(stream, log)
    finally:
        context.close()
    _tag_for_sdk(client, image, region, log)
    _remove_leftovers(client, image, [*stage_images(output), *([previous] if previous else [])], log)
    seconds = time.monotonic() - started
    log(f"{image}: built in {seconds:.0f} s")
    return BuildResult(image, True, base, seconds)


def _context_archive(context: Path, variant: str, wheelhouse: Path) -> io.BufferedRandom:
    archive = tempfile.TemporaryFile(dir=_cache_dir("tmp"))
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=1) as tar:
        for name, path in context_files(context, variant).items():
            tar.add(path, arcname=name, filter=_executable_bin)
        for wheel in sorted(wheelhouse.glob("*.whl")):
            tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
    archive.seek(0)
    return archive


def _executable_bin(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The images' start commands (bin/train, bin/serve) stay executable even where the
    files lost their mode bits (a wheel installs package data without them)."""
    if member.isfile() and member.name.startswith("bin/"):
        member.mode |= 0o755
    return member


def _follow_build(stream: Iterable[dict], log: Log) -> list[str]:
    """Shows the build's steps; returns its output lines. Raises ImageBuildError if it failed."""
    tail: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            detail = "\n".join(tail[-15:])
            raise ImageBuildError(f"docker build failed: {chunk['error'].strip()}\n--- last build output ---\n{detail}")
        text = chunk.get("stream", "").rstrip()
        if text:
            tail.extend(text.splitlines())
            if text.startswith("Step ") or "applying" in text or text.startswith(("mxnet ", "Successfully")):
                log(f"  {text}")
    return tail


# -- what builds leave: build-stage images, replaced images ---------------------------------

_STEP_FROM = re.compile(r"^Step \d+/\d+ : FROM ", re.IGNORECASE)
_STEP_RESULT = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
# Every Dockerfile of ours writes below /opt/smrl: with a parent chain that reaches our base,
# how an image without labels (the classic builder puts `--label`s on the last stage only,
# after every other step) is recognised as one our builds made.
OUR_IMAGE_PATH = "/opt/smrl/"


def stage_images(output: list[str]) -> list[str]:
    """The IDs of the images of a multi-stage build's stages but the last, from the classic
    builder's output: each stage's last ``---> <id>`` before the next ``FROM``. Those images
    are untagged, and left behind as ``<none>`` images after every build."""
    found: list[str] = []
    current, started = None, False
    for line in output:
        if _STEP_FROM.match(line):
            if started and current:
                found.append(current)
            started, current = True, None
        elif match := _STEP_RESULT.match(line):
            current = match.group(1)
    return found


def _remove_leftovers(client: docker.DockerClient, image: str, candidates: list[str], log: Log) -> None:
    """Removes the images among `candidates` that this build left untagged: its build stages
    (read from its own output) and the image `image` named before. One in use (a container
    of it, or another build using it) stays; ``smrl-local clean --images`` takes it later."""
    built = _image_id(client, image)
    removed = []
    for candidate in dict.fromkeys(candidates):
        found = _untagged(client, candidate)
        if found is None or found.id == built:
            continue
        try:
            client.images.remove(str(found.id))  # its untagged parents (the stage's layers) go too
        except docker.errors.APIError as error:
            log(f"{image}: kept {found.short_id.removeprefix('sha256:')} ({error.explanation or error})")
            continue
        removed.append(found.short_id.removeprefix("sha256:"))
    if removed:
        log(f"{image}: removed {len(removed)} untagged image(s) the build left ({', '.join(removed)})")


def _untagged(client: docker.DockerClient, image_id: str) -> docker.models.images.Image | None:
    try:
        found = client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return None
    return None if found.tags else found


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


@dataclass(frozen=True)
class DanglingImages:
    """``<none>`` images on the engine: ours (provably), and the others, left alone."""

    ours: list[docker.models.images.Image]
    others: int


def our_dangling_images(client: docker.DockerClient) -> DanglingImages:
    """Dangling images our builds left. Ours by proof, never by guess:

    * a replaced image of ours carries the ``org.smrl.inputs-hash`` label every build sets;
    * a build stage (or a step before the labels) carries no label, but its history holds a
      step that writes below /opt/smrl/ (every Dockerfile of ours does; none of the bases)
      *and* its parent chain (recorded by local builds) reaches a base image our images
      name in ``org.smrl.base-image`` (or the offline base, ``sagemaker-rl-local/base``).
    """
    bases = _our_base_ids(client)
    ours, others = [], 0
    for image in client.images.list(filters={"dangling": True}):
        if INPUTS_HASH_LABEL in (image.labels or {}) or _built_by_us(client, image, bases):
            ours.append(image)
        else:
            others += 1
    return DanglingImages(ours, others)


def _our_base_ids(client: docker.DockerClient) -> set[str]:
    names = {OFFLINE_BASE_REPOSITORY}
    for image in client.images.list(filters={"label": INPUTS_HASH_LABEL}):
        names.add((image.labels or {}).get("org.smrl.base-image", ""))
    ids = set()
    for image in client.images.list():
        if any(tag in names or tag.split(":")[0] == OFFLINE_BASE_REPOSITORY for tag in image.tags):
            ids.add(str(image.id))
    return ids


def _built_by_us(client: docker.DockerClient, image: docker.models.images.Image, bases: set[str]) -> bool:
    if not any(OUR_IMAGE_PATH in step.get("CreatedBy", "") for step in image.history()):
        return False
    parent, hops = image.attrs.get("Parent"), 0
    while parent and hops < 100:
        if parent in bases:
            return True
        try:
            found = client.images.get(parent)
        except docker.errors.ImageNotFound:
            return False
        if INPUTS_HASH_LABEL in (found.labels or {}):
            return False  # built on a finished image of ours: someone's own image
        parent, hops = found.attrs.get("Parent"), hops + 1
    return False


def remove_dangling_images(client: docker.DockerClient, log: Log = print) -> int:
    """Removes the dangling images our builds left (see ``our_dangling_images``), says how
    much disk that freed (the engine's layer total before and after), and returns it in bytes."""
    found = our_dangling_images(client)
    before = client.df()["LayersSize"]
    removed, kept = 0, []
    for image in found.ours:
        try:
            client.images.remove(str(image.id))  # with its untagged parents
            removed += 1
        except docker.errors.NotFound:
            continue  # a parent of one removed before
        except docker.errors.APIError as error:  # a container uses it
            kept.append(f"{image.short_id.removeprefix('sha256:')} ({error.explanation or error})")
    freed = max(before - client.df()["LayersSize"], 0)
    log(f"removed {removed} dangling image(s) our builds left; freed {freed / 1e9:.2f} GB"
        + (f"; kept {len(kept)} in use: {', '.join(kept)}" if kept else "")
        + (f"; left {found.others} dangling image(s) that are not provably ours" if found.others else ""))
    return freed


def _tag_for_sdk(client: docker.DockerClient, image: str, region: str | None, log: Log) -> None:
    image_id = client.images.get(image).id
    for uri in ensure_sdk_tags(region or default_region(), client):
        if client.images.get(uri).id == image_id:
            log(f"{image}: also tagged {uri} (the URI the SageMaker SDK computes)")


# -- the URIs the SageMaker SDK computes for our images ------------------------------------

def default_region() -> str:
    """The region the SDK computes image URIs for: AWS_REGION, AWS_DEFAULT_REGION, or us-west-2."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def sdk_training_image_uri(region: str, instance_type: str = "local") -> str:
    """The image URI ``RLEstimator`` (Coach 0.11.0, MXNet) computes for ``region``."""
    return image_uris.retrieve("coach-mxnet", region, version=contract.SDK_COACH_VERSION,
                               py_version=contract.SDK_PY_VERSION, instance_type=instance_type,
                               image_scope="training")


def sdk_inference_image_uri(region: str, instance_type: str = "local") -> str:
    """The serving image URI ``MXNetModel`` (framework 1.3, py3) computes for ``region``."""
    return image_uris.retrieve("mxnet", region, version=contract.SDK_MXNET_SERVING_VERSION,
                               py_version=contract.SDK_PY_VERSION, instance_type=instance_type,
                               image_scope="inference")


def is_our_image(image: str) -> bool:
    """Whether `image` names one of our images, by local tag or by the SDK's URI for it."""
    ours = {spec.tag(variant) for spec in IMAGES.values() for variant in VARIANTS}
    return image in ours or "/sagemaker-rl-mxnet:" in image or "/mxnet-inference:" in image


def ensure_sdk_tags(region: str, client: docker.DockerClient) -> list[str]:
    """Give each locally built image the ECR URI the SDK computes for ``region``.

    Local mode uses an image carrying that exact URI as is, so user code that names any
    region runs our images instead of pulling. Images that are not built yet are skipped:
    the job's checks report them. Idempotent.

    Returns:
        The SDK URIs that now point at a local image.
    """
    wanted = []
    for instance_type in ("local", "local_gpu"):
        variant = variant_for(instance_type)
        wanted.append((training_image(variant), sdk_training_image_uri(region, instance_type)))
        wanted.append((inference_image(variant), sdk_inference_image_uri(region, instance_type)))
    tagged = []
    for local_tag, uri in wanted:
        try:
            image = client.images.get(local_tag)
        except docker.errors.ImageNotFound:
            continue
        if uri not in image.tags:
            repository, tag = uri.rsplit(":", 1)
            image.tag(repository, tag)
        tagged.append(uri)
    return tagged


# -- helpers -------------------------------------------------------------------------------

def _image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def _label(client: docker.DockerClient, image: str, label: str) -> str | None:
    try:
        return (client.images.get(image).labels or {}).get(label)
    except docker.errors.ImageNotFound:
        return None


def _cache_dir(name: str) -> Path:
    path = resources.work_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(command: list[str], failure: str, log: Log) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise ImageBuildError(f"{failure}: `{' '.join(command[:4])} ...` exited {done.returncode}.\n"
                              + "\n".join(output[-20:]))
