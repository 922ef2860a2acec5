"""detectron2 end to end: patched checkout, random-weight checkpoints of model-zoo configs, make cam.

Models are built from the pinned configs (Faster R-CNN C4 and FPN, RetinaNet) with random weights.
A random ResNet without trained normalization blows its activations up, so each frozen BN takes
the statistics of its input on one random image before the state dict is saved (a data-dependent
init): the detectors then give finite, varied scores, and thresholds near 0 keep detections.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.conftest import run_child_in_checkout
from tests.integration.helpers import (
    Upstream,
    assert_detects_like_unpatched,
    assert_series_applied,
    assert_unsafe_checkpoint_is_refused,
    check_run,
    make_cam,
)

pytestmark = pytest.mark.integration

IMAGE = "docs/tutorials/lazyconfig.jpg"  # the checkout's only image (a 1300x340 docs figure)
CONFIGS = {
    "c4": "configs/COCO-Detection/faster_rcnn_R_50_C4_3x.yaml",
    "fpn": "configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
    "retinanet": "configs/COCO-Detection/retinanet_R_50_FPN_3x.yaml",
}
DEFAULT_LAYERS = {
    "c4": ["backbone.res4"],
    "fpn": [f"backbone.fpn_output{k}" for k in range(2, 6)],
    "retinanet": ["head.cls_subnet"],
}
# What a run that names no method explains: RetinaNet's default method is ODAM (docs/evaluation.md's
# rule), each detection at its own FPN level's layer; Grad-CAM at DEFAULT_LAYERS for the others.
RUN_METHOD = {"c4": "gradcam", "fpn": "gradcam", "retinanet": "odam"}
RUN_LAYERS = {
    **DEFAULT_LAYERS,
    "retinanet": [f"backbone.fpn_output{k}" for k in range(3, 6)]
    + ["backbone.top_block.p6", "backbone.top_block.p7"],
}
FAST = ("--confidence-threshold", "0.01", "--max-det", "4", "--opts", "INPUT.MIN_SIZE_TEST", "256")
DETECTRON2 = Upstream(
    name="detectron2",
    # the model zoo's .pkl format: a plain pickle
    unsafe_checkpoint=("evil.pkl", "detectron2"),
    cam_args_last=FAST,  # --opts takes the rest of the line
    manifest={"confidence_threshold": 0.01, "min_size_test": 256},
    detections_per_image=4,  # random weights score far more boxes above 0.01
)


@pytest.fixture(scope="module")
def checkpoints(detectron2_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each config's random-weight model as DetectionCheckpointer saves it (.pth) and in the model
    zoo's .pkl format (children/detectron2_save_checkpoint.py)."""
    folder = tmp_path_factory.mktemp("d2weights")
    out = {}
    for key, config in CONFIGS.items():
        result = run_child_in_checkout(
            detectron2_checkout, "detectron2_save_checkpoint", config, str(folder), key
        )
        assert result.returncode == 0, result.stderr[-3000:]
        saved = json.loads(result.stdout.strip().splitlines()[-1])
        pth, pkl = folder / f"{key}.pth", folder / f"{key}.pkl"
        assert saved["pth"] == str(pth) and saved["pkl"] == str(pkl) and saved["calibrated"] > 0, saved
        assert pth.is_file() and pkl.is_file()
        out[key] = pth
    return out


def test_setup_applies_the_series_on_the_pin(detectron2_checkout: Path) -> None:
    assert_series_applied(DETECTRON2, detectron2_checkout)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_make_cam_explains_every_detection(
    key: str, detectron2_checkout: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = None if key == "fpn" else CONFIGS[key]  # fpn: make cam's default config
    weights = checkpoints[key].with_suffix(".pkl") if key == "fpn" else checkpoints[key]  # model-zoo format
    result = make_cam(DETECTRON2, detectron2_checkout, weights=weights, out=out, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = check_run(DETECTRON2, out, layers=RUN_LAYERS[key])
    assert manifest["method"] == RUN_METHOD[key]
    (image,) = manifest["images"]
    assert Path(image["file"]).name == Path(IMAGE).name and (image["width"], image["height"]) == (1300, 340)
    assert (out / "lazyconfig_summary.jpg").is_file()
    levels = {det["level"] for det in image["detections"]}
    assert levels == {None} if key == "c4" else None not in levels  # FPN: the level pooled from


def test_recorded_index_gives_back_the_detection_score(
    detectron2_checkout: Path, checkpoints: dict[str, Path]
) -> None:
    args = [str(detectron2_checkout / IMAGE)]
    for key, config in CONFIGS.items():
        args += [config, str(checkpoints[key])]
    """Each detection's score recomputed from the upstream's own modules at the index the adapter
    records, on a batch of two images (children/detectron2_recompute.py)."""
    result = run_child_in_checkout(detectron2_checkout, "detectron2_recompute", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    for key, found in zip(CONFIGS, json.loads(result.stdout.strip().splitlines()[-1])):
        assert found["images"] == [0, 1] and len(found["scores"]) == 12, key
        np.testing.assert_allclose(found["recomputed"], found["scores"], rtol=1e-4, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(found["target"], found["scores"], rtol=1e-4, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(found["decoded"], found["boxes"], rtol=1e-4, atol=1e-3, err_msg=key)
        if key == "retinanet":
            assert None not in found["levels"], key


def test_local_gradients_equal_the_full_backward(
    detectron2_checkout: Path, checkpoints: dict[str, Path]
) -> None:
    """Faster R-CNN FPN: the adapter's one-proposal gradients and the score route equal the
    engine's full backward, and a batch of two gives each image the maps of the image alone
    (children/detectron2_local_equals_full.py)."""
    image = str(detectron2_checkout / IMAGE)
    result = run_child_in_checkout(
        detectron2_checkout, "detectron2_local_equals_full", CONFIGS["fpn"], str(checkpoints["fpn"]), image
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    layers = report["layers"]
    assert layers == [*DEFAULT_LAYERS["fpn"], "backbone.bottom_up.res4"], layers
    for target in ("class-prob", "box"):
        found = report["targets"][target]
        assert found["detections"] == 2 and found["agree"] == layers, (target, found)
        assert found["deep_max"] > 0, (target, found)
    assert len(report["batch"]) == 2
    for image_found in report["batch"]:
        assert image_found["detections"] == 2 and image_found["same_detections"] is True, image_found
        assert image_found["agree"] == layers, image_found


def test_odam_explains_each_detection_at_the_level_it_is_pooled_from(
    detectron2_checkout: Path, checkpoints: dict[str, Path]
) -> None:
    """Faster R-CNN FPN and RetinaNet: a detection's level is the FPN level its score reads (the
    box pooler's assignment; RetinaNet's head level), the level layer outputs that very map, and
    ODAM's map there equals relu(sum_c g * A) of plain autograd through the whole model, with
    every other level flagged (children/detectron2_own_level.py)."""
    args = [str(detectron2_checkout / IMAGE)]
    for key in ("fpn", "retinanet"):
        args += [CONFIGS[key], str(checkpoints[key])]
    result = run_child_in_checkout(detectron2_checkout, "detectron2_own_level", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    fpn, retinanet = json.loads(result.stdout.strip().splitlines()[-1])
    assert fpn["level_layers"] == DEFAULT_LAYERS["fpn"]
    assert retinanet["level_layers"] == [
        *(f"backbone.fpn_output{k}" for k in (3, 4, 5)),
        "backbone.top_block.p6",
        "backbone.top_block.p7",
    ]
    # squares of sides 20, 112, 224, 448, 1000: p2, p3, p4 (canonical 224), p5, p5 (clamped)
    assert fpn["boxes"] == fpn["boxes_upstream"] == [0, 1, 2, 3, 3]
    assert fpn["levels"] == fpn["upstream_levels"]
    for found, count in ((fpn, 4), (retinanet, 5)):
        assert found["same_as_features"] == [True] * count
        assert found["kept"] == 4 and set(found["levels"]) == set(range(count)), found["levels"]
        others = [sorted(set(range(count)) - {level}) for level in found["levels"]]
        assert found["flags"] == others
        # the score reads its own level only (RetinaNet's p7 is computed from p6)
        assert [r for r in found["reached"] if r != [3, 4]] == [[lv] for lv in found["levels"] if lv != 4]
        assert found["max_value"] > 0 and found["max_error"] <= 1e-3 * found["max_value"], found


def test_randomization_check_re_explains_the_trained_proposals_when_pinned(
    detectron2_checkout: Path, checkpoints: dict[str, Path]
) -> None:
    """Faster R-CNN FPN, its backbone re-initialized bottom-up in a copy: re-explained with the
    trained proposals pinned, every detection's row is the trained proposal box (pooled from the
    randomized features); without, the rows are other boxes. Pinning alone changes no score, the
    trained model is untouched and no hook is left; proposals of another image size are refused
    (children/detectron2_pinned_proposals.py)."""
    image = str(detectron2_checkout / IMAGE)
    result = run_child_in_checkout(
        detectron2_checkout, "detectron2_pinned_proposals", CONFIGS["fpn"], str(checkpoints["fpn"]), image
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["detections"] == 4, found
    assert found["pinned_same_rows"] == [True] * 4 and found["pinned_all_same"] is True, found
    assert found["pinned_features_differ"] is True, found
    assert found["free_same_rows"] == [False] * 4, found
    assert found["unrandomized_score_error"] <= 1e-6, found
    assert found["trained_untouched"] is True and found["hooks_left"] == 0, found
    assert "pinned proposals are of images of sizes" in found["other_image"], found


def test_patched_model_detects_exactly_like_the_unpatched_one(
    detectron2_checkout: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    # The patched code paths; C4 shares FPN's fast_rcnn inference.
    args = [str(detectron2_checkout / IMAGE)]
    for key in ("fpn", "retinanet"):
        args += [CONFIGS[key], str(checkpoints[key])]
    assert_detects_like_unpatched(
        DETECTRON2, detectron2_checkout, tmp_path, child="detectron2_predict", args=args, runs=2
    )


def test_bad_inputs_are_reported_and_the_rest_processed(
    detectron2_checkout: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    picture = cv2.imread(str(detectron2_checkout / IMAGE))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(picture, cv2.COLOR_BGR2BGRA))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "bad"
    result = make_cam(
        DETECTRON2,
        detectron2_checkout,
        weights=checkpoints["retinanet"],
        out=out,
        source=folder,
        config=CONFIGS["retinanet"],
    )
    assert result.returncode != 0, result.stderr[-3000:]  # make turns the entry point's 1 into 2
    assert "1 of 3 images failed" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {Path(i["file"]).name: i for i in manifest["images"]}
    assert set(by_name) == {"gray.png", "rgba.png", "notes.txt"}
    assert "notes.txt" in by_name["notes.txt"]["error"]
    for name in ("gray.png", "rgba.png"):
        assert not by_name[name].get("error") and by_name[name]["detections"], name
    assert "notes.txt" in result.stderr


def test_missing_weights_bad_layer_and_unsafe_pickle_are_clear_errors(
    detectron2_checkout: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    result = make_cam(DETECTRON2, detectron2_checkout, weights=tmp_path / "nope.pkl", out=tmp_path / "a")
    assert result.returncode != 0
    assert "nope.pkl" in result.stderr and "WEIGHTS=" in result.stderr
    result = make_cam(
        DETECTRON2,
        detectron2_checkout,
        weights=checkpoints["fpn"],
        out=tmp_path / "b",
        args=["--target-layers", "backbone.nope"],
    )
    assert result.returncode != 0
    assert "backbone.nope" in result.stderr and "backbone.fpn_output2" in result.stderr
    assert_unsafe_checkpoint_is_refused(DETECTRON2, detectron2_checkout, tmp_path)


def test_proposal_indices_skip_rows_with_non_finite_values(detectron2_checkout: Path) -> None:
    """The patched fast_rcnn_inference_single_image drops the proposals with a NaN box (row 1) or
    an infinite score (row 3); every row it records is that proposal's box and score
    (children/detectron2_non_finite.py)."""
    result = run_child_in_checkout(detectron2_checkout, "detectron2_non_finite")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    rows = found["rows"]
    assert rows == found["kept"] and len(rows) == 5 and not {1, 3} & set(rows), found
    assert found["same_box"] == found["same_score"] == [True] * 5, found


@pytest.mark.parametrize("key", ["fpn", "retinanet"])
def test_box_target_and_missed_objects_end_to_end(
    key: str, detectron2_checkout: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """--target box with --eval --explain-missed: every object no detection matched has a why, and
    every candidate that was explained has its overlays; objectness is refused naming the others."""
    source = tmp_path / "images"
    source.mkdir()
    (source / "lazyconfig.jpg").write_bytes((detectron2_checkout / IMAGE).read_bytes())
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "lazyconfig.txt").write_text("0 0.3 0.5 0.2 0.6\n5 0.8 0.3 0.1 0.3\n")
    out = tmp_path / "run"
    args = ["--target", "box", "--eval", str(labels), "--explain-missed", "--eval-curves", "0"]
    result = make_cam(
        DETECTRON2, detectron2_checkout, weights=checkpoints[key], out=out, source=source,
        config=CONFIGS[key], args=args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "box" and manifest["explain_missed"] is True
    (image,) = manifest["images"]
    assert image["detections"] and all(d["maps"] for d in image["detections"])
    missed = image["missed"]
    assert 1 <= len(missed) <= 2 and {m["class_id"] for m in missed} <= {0, 5}
    for m in missed:
        candidate = m["candidate"]
        assert candidate["why"] in {
            "below_threshold",
            "suppressed",
            "other_class",
            "mislocalized",
            "no_candidate",
        }
        if candidate["why"] != "no_candidate":
            assert candidate["iou"] >= 0.1 and candidate["maps"]
            for layer in candidate["maps"].values():
                assert layer["overlay"] is None or (out / layer["overlay"]).is_file()
    refused = make_cam(
        DETECTRON2, detectron2_checkout, weights=checkpoints[key], out=tmp_path / "no", source=source,
        config=CONFIGS[key], args=["--target", "objectness"],
    )  # fmt: skip
    assert refused.returncode != 0
    assert "objectness" in refused.stderr and "box-x1" in refused.stderr, refused.stderr[-2000:]


# --- config files are data (issue 22) ---------------------------------------------------------------


def test_every_checkout_config_gives_detectron2s_own_cfg(detectron2_checkout: Path, tmp_path: Path) -> None:
    """Every .yaml config of the checkout, and old-version configs that detectron2 upgrades, merged
    by detectron2's own merge_from_file and by the kit (children/detectron2_same_cfg.py)."""
    old = [
        tmp_path / "guessed_v1.yaml",  # no VERSION, MODEL.WEIGHT: detectron2 guesses v1 and upgrades
        tmp_path / "v0.yaml",
        tmp_path / "mine" / "faster.yaml",  # outside the checkout, its base named by absolute path
    ]
    old[0].write_text("MODEL:\n  WEIGHT: w.pkl\n  ROI_HEADS:\n    SCORE_THRESH: 0.3\nTEST:\n  AUG_ON: true\n")
    old[1].write_text("VERSION: 0\nMODEL:\n  RPN_HEAD:\n    NAME: StandardRPNHead\n")
    old[2].parent.mkdir()
    base = detectron2_checkout / "configs" / "Base-RetinaNet.yaml"  # its anchors: the eval tag
    old[2].write_text(f"_BASE_: {base}\nMODEL:\n  WEIGHTS: w.pkl\n  RETINANET: {{NUM_CLASSES: 3}}\n")
    result = run_child_in_checkout(detectron2_checkout, "detectron2_same_cfg", *map(str, old))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    configs = list((detectron2_checkout / "configs").rglob("*.yaml"))
    assert found == {"files": len(configs) + len(old), "differ": []} and len(configs) >= 90


def hostile_configs(folder: Path, checkout: Path, marker: Path, port: int) -> dict[str, Path]:
    """Configs a careless or hostile user passes, each next to a genuine base of the checkout."""
    base = checkout / "configs" / "Base-RCNN-FPN.yaml"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    texts = {
        "tag.yaml": f"_BASE_: {base}\nMODEL:\n  WEIGHTS: {payload}\n",
        "evil_base.yaml": f"MODEL:\n  DEVICE: {payload}\n",
        "chain.yaml": f"_BASE_: [{base}, middle.yaml]\n",
        "middle.yaml": "_BASE_: evil_base.yaml\n",
        "url.yaml": f'_BASE_: "http://127.0.0.1:{port}/Base-RCNN-FPN.yaml"\n',
        "zoo.yaml": '_BASE_: "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"\n',
        "lazy.py": f"import os\nos.system('touch {marker}')\n",
        "deep.yaml": "MODEL: " + "[" * 50_000 + "\n",
        "version.yaml": f"_BASE_: {base}\nVERSION: 99\n",
        "literal.yaml": f"_BASE_: {base}\nMODEL:\n  DEVICE: '{'-' * 5000}1'\n",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    return {name: folder / name for name in texts}


HOSTILE_EXPECTED = {
    "tag.yaml": "tag.yaml, line 3: the tag !!python/object/apply:os.system is not plain data",
    "chain.yaml": "evil_base.yaml, line 2: the tag !!python/object/apply:os.system",
    "url.yaml": "is a URL: configs are read from local files only, never fetched",
    "zoo.yaml": "_BASE_ 'detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml' is a URL",
    "lazy.py": "is a Python file (a LazyConfig): its code would run",
    "deep.yaml": "nested more than 50 levels deep",
    "version.yaml": "VERSION 99 is not a config version of this detectron2 (0 to 2)",
    "literal.yaml": "MODEL.DEVICE: a value nested too deeply to read as a Python literal",
}


def test_hostile_config_files_are_refused_before_anything_runs(
    detectron2_checkout: Path, tmp_path: Path
) -> None:
    """Through the real entry point: exit 2 naming the file and the problem, no payload ran (the
    marker file does not exist), and the URL base's server saw no connection."""
    from tests.integration.test_entrypoint_checks import assert_refused, run_entry_point

    marker = tmp_path / "payload-ran"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        configs = hostile_configs(tmp_path, detectron2_checkout, marker, server.getsockname()[1])
        base = ["--input", IMAGE, "--output", str(tmp_path / "run"), "--opts", "MODEL.DEVICE", "cpu"]
        for name, expected in HOSTILE_EXPECTED.items():
            result = run_entry_point(detectron2_checkout, "--config-file", str(configs[name]), *base)
            assert_refused(result, str(configs[name]), expected)
            assert not marker.exists(), name
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    assert not (tmp_path / "run").exists()


def test_opts_values_yacs_cannot_read_are_refused(detectron2_checkout: Path, tmp_path: Path) -> None:
    from tests.integration.test_entrypoint_checks import assert_refused, run_entry_point

    base = ["--input", IMAGE, "--output", str(tmp_path / "run"), "--opts", "MODEL.DEVICE", "cpu"]
    deep = "+0" * 4000  # ast.literal_eval: RecursionError (was exit 3)
    result = run_entry_point(detectron2_checkout, *base, "MODEL.WEIGHTS", deep)
    assert_refused(result, "--opts MODEL.WEIGHTS: a value nested too deeply")
    result = run_entry_point(detectron2_checkout, *base, "INPUT.FORMAT", "x" * 100_000)
    assert_refused(result, "--opts INPUT.FORMAT: a text value of 100000 characters (at most 10000)")
    result = run_entry_point(detectron2_checkout, *base, "_BASE_", "https://example.com/x.yaml")
    assert_refused(result, "--opts", "_BASE_")  # fvcore: only in files; never fetched
    assert not (tmp_path / "run").exists()
