"""Values a user passes are checked on the host before anything starts; each bad one fails
with one line saying what to pass instead."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from emulator.inputs import (
    InputError,
    check_output_folder,
    check_port,
    check_preset_name,
    check_steps,
    preset_and_folder,
)


@pytest.mark.parametrize("port", [None, 0, 1, 8080, 65535])
def test_ports_1_to_65535_zero_and_none_are_accepted(port):
    assert check_port(port) == port


@pytest.mark.parametrize("port", [-1, 65536, 99999, True, "8080", 80.0])
def test_other_ports_are_refused_with_the_range(port):
    with pytest.raises(InputError, match=r"is not a port: pass 1-65535, or 0 to have a free one picked\."):
        check_port(port)


@pytest.mark.parametrize("steps", [None, 1, 2000])
def test_a_positive_step_budget_or_none_is_accepted(steps):
    assert check_steps(steps) == steps


@pytest.mark.parametrize("steps", [0, -5, 1.5, True])
def test_a_step_budget_that_trains_nothing_is_refused(steps):
    with pytest.raises(InputError, match=f"steps {steps!r} is not a training budget: pass a positive number"):
        check_steps(steps)


def test_an_output_folder_that_exists_or_can_be_created_is_accepted(tmp_path):
    assert check_output_folder(tmp_path) == tmp_path
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists(), "checking creates nothing"


def test_an_output_folder_that_is_a_file_or_below_one_is_refused(tmp_path):
    file = tmp_path / "results.txt"
    file.write_text("")
    with pytest.raises(InputError, match="results.txt is a file, not a folder"):
        check_output_folder(file)
    with pytest.raises(InputError, match="cannot be created: .*results.txt is a file"):
        check_output_folder(file / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_folder_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(InputError, match="no permission to write in .*locked, where it would be created"):
        check_output_folder(locked / "out")


@pytest.fixture
def presets(tmp_path):
    for name in ("preset-a.py", "preset-b.py", "train_coach.py"):
        (tmp_path / name).write_text("")
    return tmp_path


@pytest.mark.parametrize("preset", ["preset-a", "preset-a.py"])
def test_a_preset_name_in_the_source_dir_is_accepted(presets, preset):
    assert check_preset_name(preset, presets) == preset


@pytest.mark.parametrize("preset", ["../../etc/passwd", "/etc/passwd", "sub/preset-a", "..", ".hidden", "a\\b", ""])
def test_a_preset_that_is_a_path_is_refused_on_the_host(presets, preset):
    with pytest.raises(InputError) as refused:
        check_preset_name(preset, presets)
    assert str(refused.value) == (f"preset {preset!r} is not a preset name: pass the name of a preset file in "
                                  f"{presets} (without .py), not a path. Presets there: preset-a, preset-b.")


def test_a_missing_preset_names_the_folder_and_the_presets_there(presets):
    with pytest.raises(InputError, match=r"Preset 'preset-c' not found: no file preset-c.py in .*\. "
                                         r"Presets there: preset-a, preset-b\."):
        check_preset_name("preset-c", presets)


def test_the_path_of_a_preset_file_makes_its_folder_the_jobs_code(presets, tmp_path):
    assert preset_and_folder(str(presets / "preset-a.py"), None, tmp_path / "elsewhere") == ("preset-a", presets)


def test_a_preset_name_is_looked_up_in_the_source_dir_else_the_default_folder(presets, tmp_path):
    assert preset_and_folder("preset-b", presets, tmp_path / "elsewhere") == ("preset-b", presets)
    assert preset_and_folder("preset-b", None, presets) == ("preset-b", presets)


def test_a_preset_path_that_is_no_file_or_outside_the_source_dir_is_refused(presets, tmp_path):
    with pytest.raises(InputError, match="no such file. Pass the path of a preset .py file"):
        preset_and_folder(str(presets / "preset-z.py"), None, presets)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="is not in the source dir .*other: pass the preset's name with --source-dir"):
        preset_and_folder(str(presets / "preset-a.py"), tmp_path / "other", presets)


def test_a_source_dir_that_is_not_a_folder_is_refused(presets):
    with pytest.raises(InputError, match="source dir .*preset-a.py is not a folder"):
        preset_and_folder("preset-a", presets / "preset-a.py", presets)


# -- ports when serving --------------------------------------------------------------------

def test_port_0_picks_a_free_port_and_never_says_8080_is_taken(caplog):
    from emulator.serving import choose_port, port_is_free

    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            blocker.bind(("127.0.0.1", 8080))
            blocker.listen()
        except OSError:
            pass  # taken by another listener: just as good
        with caplog.at_level(logging.WARNING):
            port = choose_port(0)
        assert port not in (0, 8080) and port_is_free(port)
        assert "8080" not in caplog.text
    finally:
        blocker.close()


def test_an_out_of_range_serving_port_is_refused_before_binding():
    from emulator.serving import choose_port

    with pytest.raises(InputError, match="99999 is not a port"):
        choose_port(99999)
