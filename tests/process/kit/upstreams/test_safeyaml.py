"""kit.upstreams.safeyaml: a YAML file is read as data only. Every refusal is a ConfigFileError naming the
file (and the line where there is one); hostile files that could crash or fill memory are read in
a child process under a memory limit, which must end with exit 2 and a bounded peak."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.upstreams import safeyaml
from tests.children import run_module
from tests.unit.kit.upstreams.test_safeyaml import write

MEMORY_LIMIT = 1 << 30  # address space of the child: 1 GiB


PEAK_BUDGET_MB = 100  # resident peak (measured: 15 MB refusing any of them, 35 MB reading 64 kB)


# What the child runs: read the file, exit 2 on a refusal (as every entry point does), 0 when read.
def read_in_child(path: Path, *, max_bytes: int = safeyaml.MAX_BYTES) -> tuple[int, str, float]:
    """Exit code, stderr and resident peak (MB) of a child process reading ``path`` under a 1 GiB
    address-space limit."""
    outcome = run_module("readers", "yaml", str(path), str(max_bytes), address_space=MEMORY_LIMIT)
    assert outcome.stdout == ("read\n" if outcome.exit == 0 else ""), outcome.stdout
    return outcome.exit, outcome.stderr, outcome.peak_mb


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("deep flow", "[" * 100_000, "nested more than 50 levels deep"),
        ("deep block", "".join(" " * i + "- \n" for i in range(0, 400, 2)), "nested more than 50 levels"),
        (
            "deep mapping",
            "".join(" " * i + f"k{i}:\n" for i in range(0, 400, 2)),
            "nested more than 50 levels",
        ),
        ("billion laughs", BILLION_LAUGHS, "an anchor (&a / *a)"),
        ("huge number", "a: " + "1:0" * 30_000 + "\n", "a number written with 90000 characters"),
    ],
)
def test_hostile_files_end_with_exit_2_in_bounded_memory(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    code, err, peak = read_in_child(path, max_bytes=len(text.encode()) + 1)
    assert code == 2, (name, code, err[-2000:])
    assert expected in err and str(path) in err, err[-2000:]
    assert peak < PEAK_BUDGET_MB, (name, peak)


def test_the_largest_file_read_stays_in_budget(tmp_path: Path) -> None:
    """The costliest YAML per byte (a long flow list of numbers) at the size limit is read; one
    byte more is refused unread."""
    path = write(tmp_path, "a: [" + "1," * ((safeyaml.MAX_BYTES - 8) // 2) + "11]\n")
    assert path.stat().st_size == safeyaml.MAX_BYTES
    code, err, peak = read_in_child(path)
    assert code == 0, err[-2000:]
    assert peak < PEAK_BUDGET_MB, peak
    write(tmp_path, path.read_text() + " ")
    code, err, _ = read_in_child(path)
    assert code == 2 and f"larger than {safeyaml.MAX_BYTES} bytes" in err, err[-2000:]
