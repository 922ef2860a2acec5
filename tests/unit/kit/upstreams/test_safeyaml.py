"""kit.upstreams.safeyaml: a YAML file is read as data only. Every refusal is a ConfigFileError naming the
file (and the line where there is one); hostile files that could crash or fill memory are read in
a child process under a memory limit, which must end with exit 2 and a bounded peak."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kit.core.errors import ConfigFileError, KitError
from kit.upstreams import safeyaml
from kit.upstreams.safeyaml import load_yaml, read_yaml
from tests.children import run_python

REPO_ROOT = Path(__file__).resolve().parents[4]
MEMORY_LIMIT = 1 << 30  # address space of the child: 1 GiB
PEAK_BUDGET_MB = 100  # resident peak (measured: 15 MB refusing any of them, 35 MB reading 64 kB)

DETECTRON2_LIKE = """\
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
  MASK_ON: False
  RESNETS:
    DEPTH: 50
  PIXEL_STD: [57.375, 57.120, 58.395]
  ANCHOR_GENERATOR:
    ASPECT_RATIOS: [[0.5, 1.0, 2.0]]
SOLVER:
  STEPS: (210000, 250000)
  BASE_LR: 0.02
  MAX_ITER: 270000
  WARMUP_FACTOR: 1.0e-3
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
  FORMAT: BGR
  CROP: {ENABLED: yes, TYPE: 'relative_range', SIZE: [0.9, 0.9]}
TEST:
  EVAL_PERIOD: ~
VERSION: 2
"""


def test_plain_data_reads_exactly_as_safe_load() -> None:
    for text in (DETECTRON2_LIKE, (REPO_ROOT / "upstreams.yaml").read_text(encoding="utf-8")):
        assert load_yaml(text, name="x.yaml") == yaml.safe_load(text)
    assert load_yaml("a: [1, 2.5, x, null, true, 0x10, 1:20, !!str 3]\n", name="x") == {
        "a": [1, 2.5, "x", None, True, 16, 80, "3"]
    }
    assert load_yaml("", name="x") is None
    assert load_yaml("\ufeffa: 1\n", name="x") == {"a": 1}  # a byte-order mark, as editors write it


def write(folder: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'a: !!python/object/apply:os.system ["touch {marker}"]\n',
            "line 1: the tag !!python/object/apply:os",
        ),
        (
            'a: 1\nb: !!python/object/new:os.system ["touch {marker}"]\n',
            "line 2: the tag !!python/object/new:os",
        ),
        ("a: !!python/name:os.system\n", "the tag !!python/name:os.system is not plain data"),
        ('a: !!python/object/apply:subprocess.call [["touch", "{marker}"]]\n', "apply:subprocess.call"),
        ("!!python/object:__main__.X {a: 1}\n", "the tag !!python/object:__main__.X"),
        ("a: !!python/object/apply:eval [\"open('{marker}', 'w')\"]\n", "apply:eval is not plain data"),
        ("a: !!binary aGVsbG8=\n", "the tag !!binary"),
        ("a: !!set {x, y}\n", "the tag !!set"),
        ("a: !!omap [{x: 1}]\n", "the tag !!omap"),
        ("a: !mine 3\n", "the tag !mine"),
        ("a: 2024-01-31\n", "'2024-01-31' reads as a date; quote it"),
        ("a: 1\nb: 2\na: 3\n", "line 3: the key 'a' is given twice"),
        ("a: " + "1:0" * 60 + "\n", "a number written with 180 characters"),
        ("a: !!bool maybe\n", "line 1: 'maybe' is no !!bool (KeyError"),
        ("a: 1\nb: !!int abc\n", "line 2: 'abc' is no !!int (ValueError"),
        ("a: !!float abc\n", "'abc' is no !!float"),
        ("a: !!map [1]\n", "line 1: !!map is given a sequence"),
        ("a: !!str [1]\n", "!!str is given a sequence"),
        ("a: !!seq x\n", "!!seq is given a scalar"),
        ("a: [1\n", "is not valid YAML"),
        ("a: 1\n---\nb: 2\n", "is not valid YAML"),
        ("a: \x01\n", "the character U+0001 (offset 3) is not allowed"),
        ("? [1]\n: 2\n", "found unhashable key"),
    ],
)
def test_what_is_not_plain_data_is_refused_with_file_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, text.replace("{marker}", str(marker)))
    with pytest.raises(ConfigFileError) as info:
        read_yaml(path)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)
    assert not marker.exists()


def test_anchors_and_aliases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"line 1: an anchor \(&x / \*x\)"):
        load_yaml("a: &x [1]\nb: 2\n", name="x.yaml")  # an anchor alone: refused before any alias
    with pytest.raises(ConfigFileError, match="line 2: an anchor .* anchors and aliases are not read"):
        load_yaml("a: 1\nb: &y {c: 1}\nc: *y\n", name="x.yaml")
    with pytest.raises(ConfigFileError, match="line 1: an alias"):
        load_yaml("*z\n", name="x.yaml")


def test_the_eval_tag_is_arithmetic_only_where_asked(tmp_path: Path) -> None:
    text = 'SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3)] for x in [32, 64]]"]\n'
    expected = {"SIZES": [[32, 32 * 2 ** (1.0 / 3)], [64, 64 * 2 ** (1.0 / 3)]]}
    assert load_yaml(text, name="x", expressions=True) == expected
    with pytest.raises(ConfigFileError, match="the tag !!python/object/apply:eval is not plain data"):
        load_yaml(text, name="x")
    marker = tmp_path / "ran"
    code = f"__import__('os').system('touch {marker}')"
    with pytest.raises(ConfigFileError, match="line 1: .* is not plain arithmetic"):
        load_yaml(f'a: !!python/object/apply:eval ["{code}"]\n', name="x", expressions=True)
    assert not marker.exists()
    for bad in ("[1]", '["1", "2"]', "{a: 1}", "[[1]]"):
        with pytest.raises(ConfigFileError, match="takes one expression in quotes"):
            load_yaml(f"a: !!python/object/apply:eval {bad}\n", name="x", expressions=True)
    with pytest.raises(ConfigFileError, match="line 2: .*the tag !!python/object/apply:os.system"):
        load_yaml('a: 1\nb: !!python/object/apply:os.system ["true"]\n', name="x", expressions=True)


def test_files_that_are_not_regular_utf8_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read .*nope.yaml': No such file"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigFileError, match=r"cannot read 'a\\x00b.yaml': embedded null byte"):
        read_yaml("a\x00b.yaml")
    with pytest.raises(ConfigFileError, match="is not a regular file"):
        read_yaml(tmp_path)
    with pytest.raises(ConfigFileError, match="/dev/zero is not a regular file"):
        read_yaml("/dev/zero")  # would never end
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigFileError, match="fifo.yaml is not a regular file"):
        read_yaml(fifo)  # opening it for reading would wait for a writer forever
    latin1 = write(tmp_path, "a: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigFileError, match=r"config.yaml is not UTF-8 text \(byte 0xe9 at offset 6\)"):
        read_yaml(latin1)
    big = write(tmp_path, "- 1\n" * 20_000)  # 80 kB
    with pytest.raises(ConfigFileError, match=f"larger than {safeyaml.MAX_BYTES} bytes"):
        read_yaml(big)
    assert read_yaml(big, max_bytes=80_000) == [1] * 20_000


def test_the_error_types_are_the_kits_refusals() -> None:
    assert issubclass(ConfigFileError, KitError) and issubclass(ConfigFileError, ValueError)


# What the child runs: read the file, exit 2 on a refusal (as every entry point does), 0 when read.
CHILD = """
    import sys
    from kit.core.errors import KitError
    from kit.upstreams.safeyaml import read_yaml
    try:
        read_yaml(sys.argv[1], max_bytes=int(sys.argv[2]))
    except KitError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
"""


def read_in_child(path: Path, *, max_bytes: int = safeyaml.MAX_BYTES) -> tuple[int, str, float]:
    """Exit code, stderr and resident peak (MB) of a child process reading ``path`` under a 1 GiB
    address-space limit."""
    outcome = run_python(CHILD, str(path), str(max_bytes), address_space=MEMORY_LIMIT)
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
