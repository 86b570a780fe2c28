"""`smrl-local run` without Docker: parameters, the run's environment, notebook handling."""

from __future__ import annotations

import nbformat
import pytest

from emulator import notebooks
from emulator.run import RunError, parse_param, run
from emulator.runtime import run_environment


@pytest.mark.parametrize(("text", "parsed"), [
    ("steps=1000", ("steps", 1000)), ("rate=0.5", ("rate", 0.5)), ('name="dqn"', ("name", "dqn")),
    ("name=dqn", ("name", "dqn")), ("flags=[1, 2]", ("flags", [1, 2])),
])
def test_a_param_is_json_when_it_can_be_else_text(text, parsed):
    assert parse_param(text) == parsed


@pytest.mark.parametrize("text", ["steps", "=1", "not-a-name=1"])
def test_a_param_that_is_not_name_equals_value_is_refused_with_an_example(text):
    with pytest.raises(RunError, match="expected NAME=VALUE .* e.g. --param steps=1000"):
        parse_param(text)


def test_a_run_of_something_that_is_not_a_script_or_notebook_is_refused(tmp_path):
    (tmp_path / "job.yaml").write_text("estimator: {}\n")
    with pytest.raises(RunError, match="runs a .py script or an .ipynb notebook"):
        run(tmp_path / "job.yaml")
    with pytest.raises(RunError, match="No script or notebook at"):
        run(tmp_path / "missing.py")


def test_the_runs_environment_carries_no_host_aws_setting_or_credential():
    host = {"AWS_ACCESS_KEY_ID": "AKIAHOSTREALKEY00000", "AWS_SECRET_ACCESS_KEY": "real", "AWS_SESSION_TOKEN": "t",
            "AWS_PROFILE": "prod", "AWS_ENDPOINT_URL": "https://s3.amazonaws.com", "PATH": "/usr/bin", "HOME": "/root"}
    env = run_environment("http://127.0.0.1:9000", "eu-west-1", "/w", gpu=False, base=host)
    assert env["AWS_ACCESS_KEY_ID"] == "SMRLLOCALPLACEHOLDER" and "AWS_SESSION_TOKEN" not in env
    assert "AWS_PROFILE" not in env and "AWS_ENDPOINT_URL" not in env
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9000" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == "/dev/null"
    assert env["HOME"] == "/root" and env["PATH"].endswith("/usr/bin")


def _notebook(*sources: str, tags: dict[int, list[str]] | None = None):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for index, cell_tags in (tags or {}).items():
        notebook.cells[index].metadata["tags"] = cell_tags
    return notebook


def test_parameters_go_after_the_cell_tagged_parameters():
    notebook = _notebook("import os", "steps = 10", "print(steps)", tags={1: ["parameters"]})
    notebooks.inject_parameters(notebook, {"steps": 100, "name": "dqn"})
    assert notebook.cells[2].source == "# Parameters\nsteps = 100\nname = 'dqn'\n"
    assert notebook.cells[2].metadata["tags"] == ["injected-parameters"]


def test_without_a_parameters_cell_parameters_come_first():
    notebook = _notebook("print(steps)")
    notebooks.inject_parameters(notebook, {"steps": 1})
    assert notebook.cells[0].source == "# Parameters\nsteps = 1\n"


def test_the_failed_line_is_read_from_the_kernels_traceback():
    notebook = _notebook("a = 1\nraise ValueError('boom')")
    notebook.cells[0].outputs = [nbformat.v4.new_output(
        "error", ename="ValueError", evalue="boom",
        traceback=["\x1b[31m---\x1b[0m", "Cell \x1b[0;32mIn[1], line 2\x1b[0m\n----> 2 raise ValueError('boom')"])]
    assert notebooks.failed_line(notebook.cells[0]) == "2"


def test_the_failed_line_is_read_from_rich_tracebacks_too():
    notebook = _notebook("y = 2\nraise ValueError('boom')")
    notebook.cells[0].outputs = [nbformat.v4.new_output(
        "display_data", data={"text/plain": "\x1b[31m│\x1b[0m in <module>:2    │\n│ ❱ 2 raise ValueError"})]
    assert notebooks.failed_line(notebook.cells[0]) == "2"


def test_a_file_that_is_not_a_notebook_says_so(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    with pytest.raises(notebooks.NotebookError, match="broken.ipynb is not a notebook Jupyter can read"):
        notebooks.read(broken)


def test_a_run_refuses_connections_beyond_this_machine_and_logs_them(tmp_path, monkeypatch):
    from emulator import runtime

    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path))
    for address in [("127.0.0.1", 9000), ("::1", 80, 0, 0), ("localhost", 8080), "/var/run/docker.sock"]:
        runtime._refuse_connections_off_this_machine("socket.connect", (None, address))
    with pytest.raises(runtime.ConnectionOffThisMachine, match="refused a connection to 52.94.0.1:443"):
        runtime._refuse_connections_off_this_machine("socket.connect", (None, ("52.94.0.1", 443)))
    assert (tmp_path / "refused-connections.log").read_text().count("refused") == 1


def test_a_run_lets_its_endpoints_proxies_reach_their_containers_and_nothing_else_on_the_bridge(tmp_path,
                                                                                                  monkeypatch):
    from emulator import runtime, serving

    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path))
    monkeypatch.setattr(serving, "endpoint_addresses", {"172.19.0.2"})
    runtime._refuse_connections_off_this_machine("socket.connect", (None, ("172.19.0.2", 8080)))
    with pytest.raises(runtime.ConnectionOffThisMachine, match="172.19.0.3:8080"):
        runtime._refuse_connections_off_this_machine("socket.connect", (None, ("172.19.0.3", 8080)))
