"""Hostile checkpoints against the real upstreams: refused with exit 2, nothing they carry runs.

For each upstream a child inside the checkout (children/hostile_write_corpus.py) writes, once for
the module, a corpus in that upstream's own formats (REDUCE on its model classes with a cfg that
yolov7/yolov3's ``parse_model`` would evaluate, a genuine model beside a payload under a nested
key, plain pickles at protocols 0 to 5, a global naming a module whose import has side effects)
and, for the YOLO upstreams, checkpoints with a tampered number. One process
(children/hostile_refusals.py) loads each file with the entry point's list of admitted modules and
calls every admitted class through a REDUCE: all refused. The CLI runs on one file of each corpus
and must exit 2 with no marker written; a genuine train.py checkpoint still loads.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.integration.conftest import run_child_in_checkout
from tests.integration.helpers import Upstream, make_cam
from tests.integration.test_detectron2 import DETECTRON2
from tests.integration.test_yolov3 import YOLOV3
from tests.integration.test_yolov5 import YOLOV5
from tests.integration.test_yolov7 import YOLOV7

pytestmark = pytest.mark.integration

# The tampered corpus (children/hostile_write_corpus.py yolo) and what each refusal names.
TAMPERED = {
    "nl-huge.pt": "Detect head's nl is 1000000000",
    "nc-huge.pt": "Detect head's nc is 100000000",
    "stride-4096.pt": r"Detect head's stride is the tensor \[.*4096.0\]",
    "names-module.pt": "class names entry 1 is a lone torch.nn.modules.linear.Linear module",
    "names-self.pt": "class names entry 3 is a builtins.list",
    "conv-channels.pt": "layer model.0.conv weight is a single tensor",
}


def _image(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "a.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return path


@dataclass(frozen=True)
class Corpus:
    """The corpora a checkout's hostile_write_corpus.py wrote: folder ``root / name`` holds
    ``names[name]``; ``marker`` is the file a payload would create."""

    root: Path
    marker: Path
    names: dict[str, list[str]]

    def paths(self, corpus: str) -> list[Path]:
        return [self.root / corpus / name for name in self.names[corpus]]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, str, tuple[str, ...]], Corpus]:
    """``written(checkout, kind, cfg)``: the corpora of hostile_write_corpus.py KIND, written once
    per checkout in one process for every test of the module that reads them."""
    cache: dict[tuple[Path, str, tuple[str, ...]], Corpus] = {}

    def written(checkout: Path, kind: str, cfg: tuple[str, ...]) -> Corpus:
        if (checkout, kind, cfg) not in cache:
            root = tmp_path_factory.mktemp(f"corpus-{checkout.name}")
            out, marker = root / "out", root / "pwned"
            result = run_child_in_checkout(
                checkout, "hostile_write_corpus", kind, str(out), str(marker), *cfg
            )
            assert result.returncode == 0, result.stderr[-3000:]
            assert not marker.exists(), "writing the corpus must not have run it"
            names = json.loads(result.stdout.strip().splitlines()[-1])
            assert {c: sorted(p.name for p in (out / c).iterdir()) for c in names} == names
            cache[checkout, kind, cfg] = Corpus(out, marker, names)
        return cache[checkout, kind, cfg]

    return written


def _refusals(checkout: Path, tmp_path: Path, loader: str, paths: list[Path]) -> dict[str, Any]:
    """What the safe loader with ``loader``'s admitted modules makes of each file (and, for the
    YOLO list, of every admitted class called through a REDUCE), in one process."""
    scratch = tmp_path / "reduce.pkl"
    result = run_child_in_checkout(checkout, "hostile_refusals", loader, str(scratch), *map(str, paths))
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _refused_by_the_cli(
    upstream: Upstream, checkout: Path, tmp_path: Path, weights: Path, marker: Path
) -> subprocess.CompletedProcess[str]:
    result = make_cam(upstream, checkout, weights=weights, out=tmp_path / f"run-{weights.name}",
                      source=_image(tmp_path / "images"))  # fmt: skip
    assert result.returncode == 2, (weights.name, result.returncode, result.stderr[-2000:])
    assert "refusing to load" in result.stderr and "--trust-checkpoint" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists(), weights.name
    return result


# Each YOLO upstream with the small model cfg its tests build a checkpoint from.
EVERY_YOLO = pytest.mark.parametrize(
    ("upstream", "fixture", "cfg"),
    [
        (YOLOV7, "yolov7_checkout", "cfg/deploy/yolov7-tiny.yaml"),
        (YOLOV3, "yolov3_checkout", "models/yolov3-tiny.yaml"),
        (YOLOV5, "yolov5_checkout", "models/yolov5n.yaml"),
    ],
    ids=["yolov7", "yolov3", "yolov5"],
)


@EVERY_YOLO
def test_yolo_hostile_corpus_is_refused_and_runs_nothing(
    upstream: Upstream, fixture: str, cfg: str, corpora: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkout: Path = request.getfixturevalue(fixture)
    corpus: Corpus = corpora(checkout, "yolo", (cfg,))
    hostile = [n for n in corpus.names["hostile"] if n != "train.pt"]
    assert len(hostile) == 11 and "train.pt" in corpus.names["hostile"]
    # Every file through the YOLO loader's own list, in one process: the genuine train.py layout
    # loads, every other file is refused; and every admitted class called through a REDUCE is too.
    report = _refusals(checkout, tmp_path, "yolo", corpus.paths("hostile"))
    assert report["files"] == {**dict.fromkeys(hostile, "refused"), "train.pt": "loaded"}, report["files"]
    classes = report["classes"]
    assert classes["count"] > 20 and classes["loaded"] == [], classes
    assert classes["refused"] == 2 * classes["count"], classes
    assert report["side_effect_imported"] is False
    assert not corpus.marker.exists()
    # One file through the CLI as well: a plain pickle (protocol 0). A torch zip file whose
    # pickle calls os.system goes through make cam in test_<upstream>.py's
    # test_unsafe_checkpoint_is_refused_and_nothing_runs.
    weights = corpus.root / "hostile" / "reduce-model.p0.pkl"
    _refused_by_the_cli(upstream, checkout, tmp_path, weights, corpus.marker)


def test_detectron2_hostile_corpus_is_refused_and_runs_nothing(
    detectron2_checkout: Path, corpora: Any, tmp_path: Path
) -> None:
    corpus: Corpus = corpora(detectron2_checkout, "detectron2", ())
    names = corpus.names["hostile"]
    assert len(names) == 6
    weights = corpus.root / "hostile" / "genuine-plus-system.zip.pt"  # the rest in one process below
    _refused_by_the_cli(DETECTRON2, detectron2_checkout, tmp_path, weights, corpus.marker)
    report = _refusals(detectron2_checkout, tmp_path, "detectron2", corpus.paths("hostile"))
    assert report["files"] == dict.fromkeys(names, "refused"), report["files"]
    assert report["classes"] is None and report["side_effect_imported"] is False
    assert not corpus.marker.exists()


@EVERY_YOLO
def test_yolo_numbers_the_code_allocates_from_are_refused_before_it_does(
    upstream: Upstream, fixture: str, cfg: str, corpora: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Issue 22: nl = 10**9 made yolov3's and yolov5's attempt_load build a list of 10**9 grids,
    nc = 10**8 made 10**8 class names, a stride of 4096 raised the image size to 4096, a module
    among the class names stopped the run after its first image with exit 3. The genuine train.py
    layout of the hostile corpus loads through the same loader."""
    checkout: Path = request.getfixturevalue(fixture)
    corpus: Corpus = corpora(checkout, "yolo", (cfg,))
    assert corpus.names["tampered"] == sorted(TAMPERED)
    tampered = corpus.root / "tampered"
    cli = make_cam(upstream, checkout, weights=tampered / "names-module.pt", out=tmp_path / "run",
                   source=_image(tmp_path / "images"))  # fmt: skip
    assert cli.returncode == 2, (cli.returncode, cli.stderr[-2000:])
    assert "Traceback" not in cli.stderr and TAMPERED["names-module.pt"] in cli.stderr, cli.stderr[-2000:]
    assert not (tmp_path / "run" / "manifest.json").exists()
    paths = [*map(str, corpus.paths("tampered")), str(corpus.root / "hostile" / "train.pt")]
    result = run_child_in_checkout(checkout, "hostile_load_each", upstream.name, *paths)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(loaded) == sorted([*TAMPERED, "train.pt"]) and loaded["train.pt"] == "loaded", loaded
    for name, message in TAMPERED.items():
        assert re.search(message, loaded[name]), (name, loaded[name])
        assert loaded[name].startswith(str(tampered / name)), loaded[name]
