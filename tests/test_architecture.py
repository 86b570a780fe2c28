"""The package's shape: layers that only point down, one container contract, no hidden cycles.

Read the source, import nothing: these run in `make check`. See ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

import pytest

from emulator import contract, images

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "emulator"

# Each module may import only modules of a lower layer.
LAYERS = {
    "contract": 0, "errors": 0, "progress": 0, "ownership": 0, "signals": 0,
    "resources": 1, "diagnosis": 1, "metrics": 1, "jobspec": 1, "jobcode": 1, "run_journal": 1, "network_holds": 1,
    "archives": 1, "inputs": 1, "kept_artifacts": 1, "loopback_proxy": 1, "checkpoint_sync": 1,
    "engine": 2, "s3": 2, "notebooks": 2, "job_failure": 2,
    "images": 3,
    "containers": 4,
    "jobs": 5, "serving": 5, "sweep": 5, "local_aws": 5, "cloud_layout": 5, "interruptions": 5,
    "session": 6,
    "training": 7, "endpoints": 7, "runtime": 7,
    "run": 8,
    "preflight": 8, "preflight.report": 8, "preflight.static_checks": 9, "preflight.image_checks": 9,
    "preflight.smoke_run": 9, "preflight.runner": 10, "preflight.notebook": 10,
    "cli": 11, "pytest_plugin": 11,
    "__init__": 12,
}
# Imports inside functions, each for start-up time (the SDK takes seconds to import), never
# to hide a cycle: `emulator.endpoint` and `emulator.local_session` load on first use, and
# each CLI command loads what it runs, and the pytest plugin (loaded by every pytest run of
# the environment) loads the emulator when a test asks for its fixtures.
LAZY_IMPORTS_ALLOWED = {"__init__", "cli", "pytest_plugin"}


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" and len(relative.parts) > 1 else relative.parts
    return ".".join(parts)


def _emulator_imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(imported emulator module, whether the import is inside a function) for every import."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name.removeprefix("emulator."), inside) for a in child.names
                             if a.name.startswith("emulator."))
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("emulator"):
                if child.module == "emulator":
                    found.extend((a.name, inside) for a in child.names)
                else:
                    module = child.module.removeprefix("emulator.")
                    submodules = [f"{module}.{a.name}" for a in child.names if f"{module}.{a.name}" in LAYERS]
                    found.extend((m, inside) for m in submodules or [module])
            visit(child, inside)

    visit(tree, False)
    return found


MODULES = {_module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))
           if "_bundled" not in path.parts}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYERS)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_point_down(module):
    upward = [(imported, LAYERS[imported]) for imported, _ in _emulator_imports(MODULES[module])
              if LAYERS[imported] >= LAYERS[module] and not imported.startswith(f"{module}.")
              and module != "__init__"]
    assert upward == [], f"{module} (layer {LAYERS[module]}) imports from its own layer or above"


@pytest.mark.parametrize("module", sorted(set(MODULES) - LAZY_IMPORTS_ALLOWED))
def test_no_import_hides_inside_a_function(module):
    assert [name for name, inside in _emulator_imports(MODULES[module]) if inside] == []
    inner = [node for function in ast.walk(MODULES[module])
             if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
             for node in ast.walk(function) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [ast.unparse(node) for node in inner] == []


def test_the_contract_uses_the_standard_library_only():
    imported = {alias.name.split(".")[0] for node in ast.walk(MODULES["contract"])
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(MODULES["contract"])
                 if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == set()


def test_both_images_are_built_with_the_hosts_contract_module():
    for kind in images.IMAGES:
        files = images.context_files(images.IMAGES[kind].context, "cpu")
        assert files[images.CONTRACT_IN_CONTEXT] == Path(contract.__file__)


def test_no_image_keeps_a_contract_of_its_own():
    assert sorted(str(p.relative_to(REPO)) for p in (REPO / "containers").rglob("*contract*.py")) == []


def _in_image(client, image: str, code: str) -> str:
    return client.containers.run(image, ["python3", "-c", code], remove=True, network_mode="none").decode().strip()


HASH_OF_SMRL_CONTRACT = "import hashlib, smrl_contract; print(hashlib.sha256(open(smrl_contract.__file__, 'rb').read()).hexdigest())"


def test_the_images_import_the_same_contract_bytes_as_the_host(docker_engine, training_image_ready,
                                                               inference_image_ready):
    host = hashlib.sha256(Path(contract.__file__).read_bytes()).hexdigest()
    assert _in_image(docker_engine, training_image_ready, HASH_OF_SMRL_CONTRACT) == host
    assert _in_image(docker_engine, inference_image_ready, HASH_OF_SMRL_CONTRACT) == host
