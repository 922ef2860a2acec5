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

REPO_ROOT = Path(__file__).resolve().parents[4]

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
