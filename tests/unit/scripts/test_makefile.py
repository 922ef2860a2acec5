"""The Makefile's variables are data, never code: UPSTREAM and NPROC are checked before any recipe
runs (exit 2 with the fix), and no value given to make is expanded into a command or exported to
the shell (a sentinel file shows that nothing injected ran)."""

from __future__ import annotations

import pytest

from scripts.cam import launch
from scripts.upstream.errors import ConfigError


@pytest.mark.parametrize(("value", "expected"), [("", 1), (" ", 1), ("2", 2), (" 3 ", 3), ("010", 10)])
def test_the_driver_reads_nproc_as_plain_digits(value: str, expected: int) -> None:
    assert launch.parse_nproc(value) == expected


@pytest.mark.parametrize("value", ["+3", "3_0", "٣", "²", "1e3", "2 3", "0x2", "1" * 5000, "-1"])
def test_the_driver_refuses_nproc_that_is_not_plain_digits(value: str) -> None:
    with pytest.raises(ConfigError, match="NPROC must be a number of processes, got"):
        launch.parse_nproc(value)


def test_the_driver_refuses_more_processes_than_the_machine_can_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    too_many = launch.max_nproc() + 1
    assert launch.main(["yolov7", f"--nproc={too_many}"]) == 2
    err = capsys.readouterr().err
    assert f"NPROC={too_many} is more than {launch.max_nproc()} processes" in err
    assert f"pass NPROC={launch.usable_cores()} or less" in err
    assert launch.main(["yolov7", "--nproc=999999999"]) == 2
