"""A notebook run cell by cell in a real Jupyter kernel, with progress, its outputs kept.

nbclient drives an IPython kernel of this Python environment (no kernelspec is looked up:
SageMaker notebooks name kernels like ``conda_mxnet_p36``), so shell escapes, magics and
inline plots behave as in Jupyter. Before the first cell the kernel runs a hidden start-up
hook (not saved in the notebook); its failure stops the run, so no notebook ever runs
unpatched. Chosen over papermill (which cannot hand the kernel an environment or a hook,
and reports a dead kernel without the cell) by measurement: kernel start 0.59 s, 5 ms per
cell. The executed copy is written also after a failure.
"""

from __future__ import annotations

import ast
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from traitlets.config import Config

from emulator.errors import UserError
from emulator.progress import Log

_ANSI = re.compile(r"\x1b\[[\d;]*m")
_CELL_LINE = re.compile(r"Cell In\[\d*\], line (\d+)|in <module>:(\d+)")


class NotebookError(UserError):
    """The notebook could not be read, or a cell failed; the message names the cell and line."""


class _StreamingClient(NotebookClient):
    """Echoes each cell's stdout and stderr while it runs, when `echo`."""

    echo = True

    def process_message(self, msg: dict, cell: Any, cell_index: int) -> Any:
        result = super().process_message(msg, cell, cell_index)
        if self.echo and msg["msg_type"] == "stream":
            stream = sys.stdout if msg["content"]["name"] == "stdout" else sys.stderr
            stream.write(msg["content"]["text"])
            stream.flush()
        return result


def read(path: Path) -> Any:
    """The notebook at `path`, or a NotebookError saying why it cannot be read."""
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:  # nbformat raises JSON, validation and reader errors alike
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        raise NotebookError(f"{path.name} is not a notebook Jupyter can read ({reason}). Open and save it in "
                            "Jupyter, or fix its JSON.") from None


def inject_parameters(notebook: Any, params: dict[str, Any]) -> None:
    """Adds a cell binding `params` after the cell tagged `parameters` (papermill's
    convention), or first when there is none."""
    if not params:
        return
    position = next((i + 1 for i, cell in enumerate(notebook.cells)
                     if "parameters" in cell.metadata.get("tags", [])), 0)
    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in params.items())
    notebook.cells.insert(position, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def literal(text: str) -> Any:
    """A parameter's value: a Python literal when it is one (`3`, `0.5`, `[1, 2]`), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def failed_line(cell: Any) -> str:
    """The line of `cell` where its error was raised, from the traceback the kernel sent:
    IPython's (``Cell In[3], line 2``), or rich's, which the SageMaker SDK installs in the
    kernel when it is imported (``in <module>:2``)."""
    texts = []
    for output in cell.get("outputs", []):
        texts += output.get("traceback", [])
        texts.append(str(output.get("data", {}).get("text/plain", "")))
    for text in texts:
        found = _CELL_LINE.search(_ANSI.sub("", text))
        if found:
            return found.group(1) or found.group(2)
    return "?"


def execute(path: Path, executed_copy: Path, env: dict[str, str], hook: str, params: dict[str, Any],
            log: Log, echo: bool = True) -> None:
    """Runs the notebook at `path` in a kernel with environment `env`, `hook` first; writes
    the executed notebook to `executed_copy`. Cells' output is shown as they run when `echo`.

    Raises:
        NotebookError: the hook or a cell failed, or the kernel died; the message names the cell.
    """
    notebook = read(path)
    inject_parameters(notebook, params)
    config = Config()
    config.KernelSpecManager.kernel_dirs = []  # sys.executable -m ipykernel_launcher, whatever kernelspecs exist
    config.KernelManager.transport_encryption = "auto"  # no "running over TCP without encryption" warning
    client = _StreamingClient(notebook, kernel_name="python3", config=config, timeout=None,
                              resources={"metadata": {"path": str(path.parent)}})
    client.echo = echo
    code_cells = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    started, index, number = time.monotonic(), -1, 0
    try:
        # What the kernel's subprocesses print to its own stdout (os.system) goes where Jupyter
        # sends it, to the terminal; when the cells are not echoed, to the kernel's log.
        with open(executed_copy.with_suffix(".kernel.log"), "w") as kernel_log, \
                client.setup_kernel(env=env, stderr=kernel_log, **({} if echo else {"stdout": kernel_log})):
            kernel: Any = client.kc
            reply = run_sync(kernel.execute_interactive)(hook, store_history=False, output_hook=lambda m: None)
            if reply["content"]["status"] != "ok":
                raise NotebookError(f"the emulator's start-up code failed in the kernel: {reply['content']['ename']}: "
                                    f"{reply['content']['evalue']}; the notebook did not run. Report this as a bug.")
            for number, index in enumerate(code_cells, 1):
                log(f"[cell {number} of {len(code_cells)}, notebook cell {index}] "
                    f"elapsed {time.monotonic() - started:.1f} s")
                try:
                    client.execute_cell(notebook.cells[index], index, execution_count=number)
                except DeadKernelError:
                    provisioner: Any = client.km.provisioner if client.km else None
                    status = provisioner.process.wait(5) if provisioner is not None else None
                    raise NotebookError(f"The kernel died (exit status {status}) while running cell {number} "
                                        f"(notebook cell {index}) of {path.name}.") from None
    except CellExecutionError as error:
        raise NotebookError(f"Cell {number} (notebook cell {index}) of {path.name} failed at line "
                            f"{failed_line(notebook.cells[index])}: {error.ename}: {error.evalue}. "
                            f"Its output is in {executed_copy}.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        nbformat.write(notebook, str(executed_copy))
