"""kit.upstreams.loaders.detectron2_config: a detectron2 config and its ``_BASE_`` chain, read as data and
merged as fvcore merges them (checked against fvcore's own ``load_yaml_with_base``), with bases
that are local files only. No detectron2 checkout needed; the equality over the checkout's real
configs is in tests/integration/test_detectron2.py."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from kit.core.errors import ConfigFileError
from kit.upstreams.loaders.detectron2_config import MAX_BASE_DEPTH, MAX_FILES, literal_problem, read_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def fvcore_load(path: Path) -> dict[str, Any]:
    """fvcore's merge of a file and its bases (safe YAML only: the files here hold no tags)."""
    from fvcore.common.config import CfgNode

    loaded: dict[str, Any] = CfgNode.load_yaml_with_base(str(path), allow_unsafe=False)
    return loaded


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout's configs/ with a base and a family of configs, as detectron2 lays them out."""
    root = tmp_path / "checkout"
    write(
        root / "configs" / "Base-RCNN-FPN.yaml",
        "MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  RESNETS: {DEPTH: 50, OUT_FEATURES: [res2, res3]}\n"
        "  ROI_HEADS: {NAME: StandardROIHeads, NUM_CLASSES: 80}\nSOLVER: {BASE_LR: 0.02, STEPS: '(6, 8)'}\n"
        "VERSION: 2\n",
    )
    write(root / "configs" / "Base-Extra.yaml", "MODEL:\n  ROI_HEADS: {NUM_CLASSES: 20}\n  MASK_ON: true\n")
    write(
        root / "configs" / "COCO-Detection" / "faster.yaml",
        '_BASE_: "../Base-RCNN-FPN.yaml"\nMODEL:\n  WEIGHTS: "detectron2://x.pkl"\n  RESNETS: {DEPTH: 101}\n',
    )
    write(
        root / "configs" / "COCO-Detection" / "both.yaml",
        "_BASE_: [../Base-RCNN-FPN.yaml, ../Base-Extra.yaml]\nSOLVER: {BASE_LR: 0.01}\n",
    )
    write(
        root / "configs" / "COCO-Detection" / "chained.yaml", "_BASE_: ./faster.yaml\nINPUT: {FORMAT: RGB}\n"
    )
    return root


@pytest.mark.parametrize(
    "name",
    [
        "Base-RCNN-FPN.yaml",
        "COCO-Detection/faster.yaml",
        "COCO-Detection/both.yaml",
        "COCO-Detection/chained.yaml",
    ],
)
def test_a_chain_merges_exactly_as_fvcore_merges_it(checkout: Path, name: str) -> None:
    path = checkout / "configs" / name
    assert read_config(path, checkout=checkout) == fvcore_load(path)


def test_merge_semantics(checkout: Path) -> None:
    merged = read_config(checkout / "configs" / "COCO-Detection" / "both.yaml", checkout=checkout)
    assert merged["MODEL"]["ROI_HEADS"] == {"NAME": "StandardROIHeads", "NUM_CLASSES": 20}  # later base wins
    assert merged["SOLVER"] == {"BASE_LR": 0.01, "STEPS": "(6, 8)"}  # the file over its bases
    assert "_BASE_" not in merged


def test_a_config_outside_the_checkout_may_name_a_base_of_its_configs(checkout: Path, tmp_path: Path) -> None:
    mine = write(
        tmp_path / "mine" / "my.yaml", "_BASE_: COCO-Detection/faster.yaml\nMODEL: {WEIGHTS: w.pkl}\n"
    )
    merged = read_config(mine, checkout=checkout)
    assert merged["MODEL"]["WEIGHTS"] == "w.pkl" and merged["MODEL"]["RESNETS"]["DEPTH"] == 101
    beside = write(tmp_path / "mine" / "COCO-Detection" / "faster.yaml", "MODEL: {WEIGHTS: beside.pkl}\n")
    assert read_config(mine, checkout=checkout)["MODEL"] == {"WEIGHTS": "w.pkl"}  # detectron2's rule first
    beside.unlink()


def test_absolute_and_home_bases_are_local_files(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = checkout / "configs" / "Base-RCNN-FPN.yaml"
    mine = write(tmp_path / "abs.yaml", f"_BASE_: {base}\n")
    assert read_config(mine, checkout=checkout) == fvcore_load(mine)
    monkeypatch.setenv("HOME", str(checkout))
    mine = write(tmp_path / "home.yaml", "_BASE_: ~/configs/Base-Extra.yaml\n")
    assert read_config(mine, checkout=checkout) == fvcore_load(mine)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/Base-RCNN-FPN.yaml",
        "http://127.0.0.1:9/base.yaml",
        "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        "file:///etc/passwd",
        "s3://bucket/base.yaml",
    ],
)
def test_a_url_base_is_refused_without_a_connection(
    checkout: Path, tmp_path: Path, url: str, no_network: None
) -> None:
    mine = write(tmp_path / "mine.yaml", f'_BASE_: "{url}"\nMODEL: {{WEIGHTS: w.pkl}}\n')
    with pytest.raises(ConfigFileError) as info:
        read_config(mine, checkout=checkout)
    message = str(info.value)
    assert str(mine) in message and url in message and "is a URL" in message and "local files only" in message


def test_a_hostile_base_is_refused_naming_the_chain(checkout: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    write(tmp_path / "evil.yaml", f'MODEL:\n  WEIGHTS: !!python/object/apply:os.system ["touch {marker}"]\n')
    write(tmp_path / "middle.yaml", "_BASE_: evil.yaml\n")
    top = write(tmp_path / "top.yaml", "_BASE_: [checkout/configs/Base-Extra.yaml, middle.yaml]\n")
    with pytest.raises(ConfigFileError) as info:
        read_config(top, checkout=checkout)
    message = str(info.value)
    chain = f"{top} -> {tmp_path / 'middle.yaml'} -> {tmp_path / 'evil.yaml'}"
    assert message.startswith(f"{chain}, line 2: the tag !!python/object/apply:os.system"), message
    assert not marker.exists()


def test_cycles_depth_and_fan_out_are_bounded(checkout: Path, tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: ./sub/../a.yaml\n")  # the same file by another name
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigFileError, match="a cycle, .*a.yaml already includes this file"):
        read_config(tmp_path / "a.yaml", checkout=checkout)
    write(tmp_path / "self.yaml", "_BASE_: self.yaml\n")
    with pytest.raises(ConfigFileError, match="a cycle"):
        read_config(tmp_path / "self.yaml", checkout=checkout)
    for i in range(MAX_BASE_DEPTH + 1):
        write(tmp_path / f"deep{i}.yaml", f"_BASE_: deep{i + 1}.yaml\nK{i}: {i}\n")
    write(tmp_path / f"deep{MAX_BASE_DEPTH + 1}.yaml", "K: 0\n")
    with pytest.raises(ConfigFileError, match=f"nested more than {MAX_BASE_DEPTH} deep"):
        read_config(tmp_path / "deep0.yaml", checkout=checkout)
    assert read_config(tmp_path / "deep1.yaml", checkout=checkout)["K1"] == 1  # one less: read
    # a list of 4 bases at each of 4 levels: 4**4 = 256 reads of one file
    for level in range(4):
        write(tmp_path / f"fan{level}.yaml", f"_BASE_: [{', '.join([f'fan{level + 1}.yaml'] * 4)}]\n")
    write(tmp_path / "fan4.yaml", "X: 1\n")
    with pytest.raises(ConfigFileError, match=f"more than {MAX_FILES} config files"):
        read_config(tmp_path / "fan0.yaml", checkout=checkout)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- MODEL\n", "holds a list, not a mapping of config keys"),
        ("", "holds nothing (an empty file), not a mapping"),
        ("_BASE_: 3\n", "_BASE_ must name a config file, or a list of them; got 3"),
        ("_BASE_: ~\n", "_BASE_ must name a config file"),
        ("_BASE_: [a.yaml, [b.yaml]]\n", "_BASE_ must name a config file"),
        ("_BASE_: ''\n", "_BASE_ must name a config file"),
        ("_BASE_: nope.yaml\n", "_BASE_ 'nope.yaml': no such file ("),
        ("_BASE_: Base-RCNN-FPN.yaml\nSOLVER: 3\nMODEL: {META_ARCHITECTURE: {A: 1}}\n", "cannot inherit key"),
        ("MODEL: {1: 2}\n", "the key 1 under MODEL. is not text"),
        ("MODEL: {NAME: '" + "-" * 5000 + "1'}\n", "MODEL.NAME: a value nested too deeply"),
        ("A: '" + "x" * 10_001 + "'\n", "A: a text value of 10001 characters"),
        ("A: '{[]: 1}'\n", "A: a value yacs reads as a Python literal that fails"),
    ],
)
def test_refusals_name_the_file(checkout: Path, tmp_path: Path, text: str, expected: str) -> None:
    path = write(checkout / "configs" / "mine.yaml", text)
    with pytest.raises(ConfigFileError) as info:
        read_config(path, checkout=checkout)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("SyncBN", None),
        ("(640, 672)", None),
        ("[[0.5, 1.0, 2.0]]", None),
        ("((((", None),  # a SyntaxError: yacs keeps the text
        ("9" * 5000, None),  # a ValueError (int digits limit): kept as text
        ("-" * 5000 + "1", "nested too deeply"),
        ("+0" * 4000, "nested too deeply"),
        ("x" * 10_001, "a text value of 10001 characters"),
        ("{{}: 1}", "fails: unhashable type"),
    ],
)
def test_literal_problem_says_what_yacs_cannot_read(value: str, problem: str | None) -> None:
    found = literal_problem(value)
    assert (found is None) if problem is None else (found is not None and problem in found), found
