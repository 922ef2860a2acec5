"""`python -m scripts`: one table of commands, each a module with main(argv) -> int."""

from __future__ import annotations

import importlib

import pytest

from scripts.__main__ import COMMANDS, main


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_a_module_with_main(name: str) -> None:
    assert callable(importlib.import_module(COMMANDS[name].module).main)


def test_help_lists_every_command_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name, command in COMMANDS.items():
        assert any(line.split() == [name, *command.summary.split()] for line in lines), name


def test_config_before_the_command_is_the_setup_engines_only(capsys: pytest.CaptureFixture[str]) -> None:
    """`--config` before cam would be taken for cam's own --config (the model config): refused."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "upstreams.yaml", "cam", "yolov7"])
    assert exit_info.value.code == 2
    assert "--config before the command is for setup, status" in capsys.readouterr().err
