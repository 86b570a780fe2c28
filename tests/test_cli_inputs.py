"""Bad arguments to `smrl-local` fail on the host before anything starts: one line naming the
cause and the fix, a non-zero exit code, no traceback, nothing written."""

from __future__ import annotations

import tarfile

import pytest

from conftest import gzip_bomb, make_tar_gz
from emulator import cli


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch):
    """Each test in its own folder, with the emulator's work folder inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


def _fails(capsys, argv: list[str], code: int) -> str:
    """Runs `smrl-local argv`; returns the one line it printed on stderr. (Arguments that do
    not parse exit 2 from argparse, as SystemExit; the others return their code.)"""
    if code == 2:
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
    else:
        assert cli.main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(("argv", "expected"), [
    (["serve", "--port", "99999"], "smrl-local serve: argument --port: 99999 is not a port: pass 1-65535, or 0 to "
                                   "have a free one picked. See `smrl-local serve --help`."),
    (["serve", "--port", "-1"], "argument --port: -1 is not a port"),
    (["serve", "--port", "http"], "argument --port: 'http' is not a whole number"),
    (["serve", "--episodes", "-3"], "argument --episodes: -3 is negative: pass 0 or more"),
    (["train", "--steps", "-5"], "smrl-local train: argument --steps: -5 is not a training budget: pass a positive "
                                 "number of environment steps (e.g. 2000), or leave it out for the job's own."),
    (["train", "--steps", "0"], "argument --steps: 0 is not a training budget"),
    (["preflight", "job.py", "--steps", "0"], "smrl-local preflight: argument --steps: 0 is not a training budget"),
    (["train", "--instance-type", "ml.m5.large"], "argument --instance-type: invalid choice: 'ml.m5.large'"),
    (["train", "--no-such-flag"], "smrl-local: unrecognized arguments: --no-such-flag. See `smrl-local --help`."),
    (["trian"], "argument command: invalid choice: 'trian'"),
    (["build", "--image", "both"], "argument --image: invalid choice: 'both'"),
    (["run"], "smrl-local run: the following arguments are required: path"),
    (["s3"], "the following arguments are required: s3_command"),
])
def test_arguments_that_do_not_parse_are_one_line_and_exit_2(capsys, argv, expected):
    assert expected in _fails(capsys, argv, 2)


def test_help_still_prints_the_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["serve", "--help"])
    assert done.value.code == 0
    assert "--port PORT" in capsys.readouterr().out


@pytest.mark.parametrize("preset", ["../../etc/passwd", "/etc/passwd", "presets/preset-cartpole-dqn"])
def test_a_preset_path_is_refused_on_the_host_before_any_build_or_container(capsys, tmp_path, preset):
    line = _fails(capsys, ["train", "--preset", preset, "--output", str(tmp_path / "out")], 1)
    assert line.startswith(f"smrl-local: preset {preset!r} is not a preset name: pass the name of a preset file in ")
    assert "Presets there: preset-cartpole-clippedppo, preset-cartpole-dqn." in line
    assert not (tmp_path / "out").exists()


def test_a_missing_preset_is_refused_on_the_host_naming_the_presets_there(capsys, tmp_path):
    line = _fails(capsys, ["train", "--preset", "preset-cartpole-dqnn", "--output", str(tmp_path / "out")], 1)
    assert "Preset 'preset-cartpole-dqnn' not found: no file preset-cartpole-dqnn.py in " in line
    assert not (tmp_path / "out").exists()


def test_train_output_that_is_a_file_is_refused(capsys, a_file):
    assert _fails(capsys, ["train", "--output", str(a_file)], 1) == (
        f"smrl-local: output folder {a_file} is a file, not a folder. Pass a folder (it is created when missing).")
    assert _fails(capsys, ["train", "--output", str(a_file / "sub")], 1) == (
        f"smrl-local: output folder {a_file / 'sub'} cannot be created: {a_file} is a file. Pass another folder.")


def test_serve_and_run_output_that_is_a_file_are_refused(capsys, a_file, tmp_path):
    assert "is a file, not a folder" in _fails(capsys, ["serve", "--output", str(a_file)], 1)
    notebook = tmp_path / "job.ipynb"
    notebook.write_text("{}")
    assert "is a file, not a folder" in _fails(capsys, ["run", str(notebook), "--output", str(a_file)], 1)


def test_serve_without_a_trained_model_says_how_to_get_one(capsys):
    assert "No trained model at output/latest/model.tar.gz: run `make local-train`" in _fails(capsys, ["serve"], 1)


def test_serve_model_that_is_missing_or_a_folder_is_refused(capsys, tmp_path):
    assert "No model archive at /no/such/model.tar.gz (no file there)" in _fails(
        capsys, ["serve", "--model", "/no/such/model.tar.gz"], 1)
    assert f"No model archive at {tmp_path} (a folder there)" in _fails(capsys, ["serve", "--model", str(tmp_path)], 1)


def test_serve_model_that_is_not_a_tar_gz_is_refused_on_the_host(capsys, a_file):
    assert f"Model archive {a_file} is not gzip-compressed" in _fails(capsys, ["serve", "--model", str(a_file)], 1)


def test_serve_of_a_gzip_bomb_is_refused_and_writes_nothing(capsys, tmp_path, work_dir):
    bomb = gzip_bomb(tmp_path / "model.tar.gz", int(5.5 * 1000**3))
    line = _fails(capsys, ["serve", "--model", str(bomb), "--no-wait"], 1)
    assert line.startswith(f"smrl-local: Model archive {bomb} unpacks to more than 4 GiB")
    assert not work_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar.gz"]


def test_serve_of_an_archive_with_a_member_leaving_the_folder_is_refused(capsys, tmp_path, work_dir):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"model.onnx": b"x", "../../.bashrc": b"echo owned"})
    line = _fails(capsys, ["serve", "--model", str(archive)], 1)
    assert "member '../../.bashrc' leaves the model folder ('..')" in line
    assert not work_dir.exists()


def test_serve_with_an_unknown_gym_env_is_refused_before_deploying(capsys, tmp_path):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"model.onnx": b"x"})
    line = _fails(capsys, ["serve", "--model", str(archive), "--gym-env", "CartPol-v0"], 1)
    assert line.startswith("smrl-local: No gymnasium environment 'CartPol-v0': ")
    assert "--episodes 0" in line


def test_serve_with_a_missing_inference_script_is_refused(capsys, tmp_path):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"model.onnx": b"x"})
    code = tmp_path / "code"
    code.mkdir()
    assert f"No inference script at {code / 'inference.py'}" in _fails(
        capsys, ["serve", "--model", str(archive), "--entry-point", "inference.py", "--source-dir", str(code)], 1)
    assert "is given without an entry_point" in _fails(
        capsys, ["serve", "--model", str(archive), "--source-dir", str(code)], 1)


def test_the_python_api_refuses_the_same_archives_before_writing(tmp_path, work_dir):
    from emulator.archives import ModelArchiveError
    from emulator.endpoints import endpoint

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("model.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    with pytest.raises(ModelArchiveError, match="is a symbolic link"):
        with endpoint(archive):
            pass
    assert not work_dir.exists()


class _Answers:
    """An endpoint's JSON answer, as the serving image's default handlers give it."""

    def __init__(self, answer: dict):
        self.answer = answer

    def predict(self, observation):
        return self.answer


def test_episodes_are_driven_by_q_values_or_by_ppo_action_probabilities():
    from emulator.endpoints import greedy_action

    dqn = {"predictions": [[0.1, 0.7]], "outputs": {"q": [[0.1, 0.7]]}}
    ppo = {"predictions": [0.0005], "outputs": {"vhead0_squeeze0": [0.0005], "discreteppohead0_softmax0": [[0.8, 0.2]]}}
    assert greedy_action(_Answers(dqn), [0.0] * 4) == 1
    assert greedy_action(_Answers(ppo), [0.0] * 4) == 0


def test_a_model_with_no_per_action_output_cannot_drive_episodes_and_says_so():
    from emulator.endpoints import greedy_action
    from emulator.errors import UserError

    with pytest.raises(UserError, match=r"no Q-values or action probabilities .*\['value'\]\)\. Pass --episodes 0\."):
        greedy_action(_Answers({"predictions": [0.5], "outputs": {"value": [0.5]}}), [0.0] * 4)
