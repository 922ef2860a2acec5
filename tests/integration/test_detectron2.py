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

from tests.integration.conftest import run_in_checkout
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
FAST = ("--confidence-threshold", "0.01", "--max-det", "4", "--opts", "INPUT.MIN_SIZE_TEST", "256")
DETECTRON2 = Upstream(
    name="detectron2",
    # the model zoo's .pkl format: a plain pickle
    unsafe_checkpoint=("evil.pkl", "detectron2"),
    cam_args_last=FAST,  # --opts takes the rest of the line
    manifest={"confidence_threshold": 0.01, "min_size_test": 256},
    detections_per_image=4,  # random weights score far more boxes above 0.01
)

SAVE_CHECKPOINT = """
    import sys
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_model
    cfg = get_cfg()
    cfg.merge_from_file(sys.argv[1])
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    def calibrate(module, inputs):
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)) + 1e-5)
    bns = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
    with torch.no_grad():
        model([{"image": torch.randint(0, 255, (3, 256, 320)).float()}])
    for h in hooks:
        h.remove()
    DetectionCheckpointer(model, save_dir=sys.argv[2]).save(sys.argv[3])
    # The model zoo's .pkl format too: a plain pickle of numpy arrays.
    import pickle
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    with open(f"{sys.argv[2]}/{sys.argv[3]}.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "kit tests", "matching_heuristics": False}, f)
"""

# Detections of the upstream's own DefaultPredictor; runs in the patched and the unpatched tree.
PREDICT = """
    import json, sys
    import cv2, torch
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor
    found = []
    for config, weights in zip(sys.argv[2::2], sys.argv[3::2]):
        cfg = get_cfg()
        cfg.merge_from_file(config)
        cfg.merge_from_list(["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "256"])
        cfg.merge_from_list(["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"])
        cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.01"])
        inst = DefaultPredictor(cfg)(cv2.imread(sys.argv[1]))["instances"]
        found.append({"boxes": inst.pred_boxes.tensor.tolist(), "scores": inst.scores.tolist(),
                      "classes": inst.pred_classes.tolist()})
    print(json.dumps(found))
"""

# Each detection's score recomputed from the upstream's own modules at the recorded index, on a
# batch of two images (the second one flipped) so per-image offsets are exercised.
RECOMPUTE = """
    import json, sys
    import cv2, torch
    import detectron2.data.transforms as T
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from kit.upstreams.loaders.detectron2 import safe_checkpointer
    from kit.adapters.detectron2 import Detectron2Adapter
    def check(config, weights, image):
        cfg = get_cfg()
        cfg.merge_from_file(config)
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01",
                             "MODEL.RETINANET.SCORE_THRESH_TEST", "0.01"])
        model = build_model(cfg).eval()
        safe_checkpointer(model, trust=False).load(weights)
        aug = T.ResizeShortestEdge([256, 256], 1333)
        adapter = Detectron2Adapter(model, resize=lambda im: aug.get_transform(im).apply_image(im), max_det=6)
        images, _ = adapter.preprocess([image, image[:, ::-1].copy()])
        return recompute(model, adapter, images)

    def recompute(model, adapter, images):
        with torch.no_grad():
            out = adapter.forward(images)
            dets = adapter.detect(out)
            recomputed = []
            if adapter.kind == "rcnn":
                heads = model.roi_heads
                for d in dets:
                    feats = [out.features[f][d.image_index : d.image_index + 1] for f in heads.in_features]
                    box = out.proposals[d.image_index].proposal_boxes[d.row : d.row + 1]
                    if hasattr(heads, "box_head"):
                        x = heads.box_head(heads.box_pooler(feats, [box]))
                    else:
                        x = heads._shared_roi_transform(feats, [box]).mean(dim=[2, 3])
                    logits = heads.box_predictor(x)[0]
                    recomputed.append(float(torch.softmax(logits, 1)[0, d.class_id]))
            else:
                feats = model.backbone(images.tensor)
                logits = model.head([feats[f] for f in model.head_in_features])[0]
                for d in dets:
                    level = logits[d.level]
                    n, _, h, w = level.shape
                    per_anchor = level.view(n, -1, model.num_classes, h, w).permute(0, 3, 4, 1, 2)
                    per_anchor = per_anchor.reshape(n, -1, model.num_classes)
                    recomputed.append(float(per_anchor[d.image_index, d.row, d.class_id].sigmoid()))
            target = out.score(dets).tolist()
            # the box target's decoded boxes are the kept boxes (Faster R-CNN's clipped to the image
            # as fast_rcnn_inference clips them; RetinaNet's inference does not clip)
            decoded = out.box(dets)
            for k, d in enumerate(dets):
                h, w = images.image_sizes[d.image_index]
                if adapter.kind == "rcnn":
                    decoded[k, 0::2] = decoded[k, 0::2].clamp(0, w)
                    decoded[k, 1::2] = decoded[k, 1::2].clamp(0, h)
        return {"scores": [d.score for d in dets], "recomputed": recomputed, "target": target,
                "images": sorted({d.image_index for d in dets}), "levels": [d.level for d in dets],
                "boxes": [list(d.box_xyxy) for d in dets], "decoded": decoded.tolist()}

    image = cv2.imread(sys.argv[1])
    print(json.dumps([check(c, w, image) for c, w in zip(sys.argv[2::2], sys.argv[3::2])]))
"""

# Faster R-CNN FPN: the adapter's one-proposal gradients equal the engine's full backward.
LOCAL_EQUALS_FULL = """
    import sys
    import cv2, torch
    import detectron2.data.transforms as T
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from kit.upstreams.loaders.detectron2 import safe_checkpointer
    from kit.adapters.detectron2 import Detectron2Adapter
    from kit.core.contract import Capabilities
    from kit.core.engine import explain
    from kit.methods.cam import CAM_METHODS as METHODS
    from kit.core.targets import TARGETS
    cfg = get_cfg()
    cfg.merge_from_file(sys.argv[1])
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"])
    model = build_model(cfg).eval()
    safe_checkpointer(model, trust=False).load(sys.argv[2])
    aug = T.ResizeShortestEdge([256, 256], 1333)
    adapter = Detectron2Adapter(model, resize=lambda im: aug.get_transform(im).apply_image(im), max_det=2)
    images, _ = adapter.preprocess([cv2.imread(sys.argv[3])])
    # the pooled maps (local gradients) and backbone layers below them (the score route)
    layers = adapter.resolve_layers(adapter.default_layers() + ["backbone.bottom_up.res4"])
    for name in ("class-prob", "box"):
        runs = [explain(forward=lambda: adapter.forward(images), detect=adapter.detect, layers=layers,
                        target=TARGETS[name], methods=[METHODS["gradcam"]], model=model,
                        capabilities=capabilities)
                for capabilities in (adapter.capabilities, Capabilities())]
        assert len(runs[0].detections) == 2
        for layer in layers:
            a, b = (r.cams["gradcam"][layer] for r in runs)
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()) + 1e-12)
            assert torch.equal(runs[0].no_gradient[layer], runs[1].no_gradient[layer])
        assert float(runs[1].cams["gradcam"]["backbone.bottom_up.res4"].abs().max()) > 0
    # a batch of two: detections of both images share backward passes; each image's maps are
    # those of the image alone
    image = cv2.imread(sys.argv[3])
    kw = dict(detect=adapter.detect, layers=layers, target=TARGETS["class-prob"],
              methods=[METHODS["gradcam"]], model=model,
              capabilities=adapter.capabilities)
    both, _ = adapter.preprocess([image, image[:, ::-1].copy()])
    pair = explain(forward=lambda: adapter.forward(both), **kw)
    for i, one_image in enumerate([image, image[:, ::-1].copy()]):
        one, _ = adapter.preprocess([one_image])
        alone = explain(forward=lambda: adapter.forward(one), **kw)
        rows = [k for k, d in enumerate(pair.detections) if d.image_index == i]
        assert [(pair.detections[k].row, pair.detections[k].class_id) for k in rows] == [
            (d.row, d.class_id) for d in alone.detections]
        for layer in layers:
            a, b = pair.cams["gradcam"][layer][rows], alone.cams["gradcam"][layer]
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()) + 1e-12)
    print("ok")
"""


@pytest.fixture(scope="module")
def checkpoints(detectron2_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("d2weights")
    out = {}
    for key, config in CONFIGS.items():
        result = run_in_checkout(detectron2_checkout, SAVE_CHECKPOINT, config, str(folder), key)
        assert result.returncode == 0, result.stderr[-3000:]
        out[key] = folder / f"{key}.pth"
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
    manifest = check_run(DETECTRON2, out, layers=DEFAULT_LAYERS[key])
    (image,) = manifest["images"]
    assert Path(image["file"]).name == Path(IMAGE).name and (image["width"], image["height"]) == (1300, 340)
    assert (out / "lazyconfig_summary.jpg").is_file()
    levels = {det["level"] for det in image["detections"]}
    assert levels == {None} if key != "retinanet" else None not in levels


def test_recorded_index_gives_back_the_detection_score(
    detectron2_checkout: Path, checkpoints: dict[str, Path]
) -> None:
    args = [str(detectron2_checkout / IMAGE)]
    for key, config in CONFIGS.items():
        args += [config, str(checkpoints[key])]
    result = run_in_checkout(detectron2_checkout, RECOMPUTE, *args)
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
    image = str(detectron2_checkout / IMAGE)
    result = run_in_checkout(
        detectron2_checkout, LOCAL_EQUALS_FULL, CONFIGS["fpn"], str(checkpoints["fpn"]), image
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_patched_model_detects_exactly_like_the_unpatched_one(
    detectron2_checkout: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    # The patched code paths; C4 shares FPN's fast_rcnn inference.
    args = [str(detectron2_checkout / IMAGE)]
    for key in ("fpn", "retinanet"):
        args += [CONFIGS[key], str(checkpoints[key])]
    assert_detects_like_unpatched(DETECTRON2, detectron2_checkout, tmp_path, code=PREDICT, args=args, runs=2)


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


NON_FINITE = """
    import torch
    from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
    nan, inf = float("nan"), float("inf")
    boxes = torch.tensor([[0, 0, 10, 10], [nan, 0, 5, 5], [20, 20, 40, 40], [0, 0, 1, 1], [30, 5, 45, 12.0]])
    scores = torch.tensor([[0.1, 0.8, 0.1], [0.9, 0, 0.1], [0.7, 0.2, 0.1], [inf, 0, 0], [0.05, 0.6, 0.35]])
    inst, kept = fast_rcnn_inference_single_image(boxes, scores, (50, 50), 0.05, 0.5, -1)
    rows = inst.indices.tolist()
    assert rows == kept.tolist() and len(rows) == 5 and not {1, 3} & set(rows), rows
    for k, row in enumerate(rows):
        assert torch.equal(inst.pred_boxes.tensor[k], boxes[row]), (k, row)
        assert inst.scores[k] == scores[row, inst.pred_classes[k]], (k, row)
    print("ok")
"""


def test_proposal_indices_skip_rows_with_non_finite_values(detectron2_checkout: Path) -> None:
    result = run_in_checkout(detectron2_checkout, NON_FINITE)
    assert result.returncode == 0, result.stderr[-3000:]


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

# Every .yaml config of the checkout, and old-version configs that detectron2 upgrades, merged by
# detectron2's own merge_from_file (unsafe YAML: these files are genuine) and by the kit.
SAME_CFG = """
    import glob, json, logging, sys
    from pathlib import Path
    from detectron2.config import get_cfg
    from kit.upstreams.loaders.detectron2 import merge_config
    from kit.upstreams.loaders.detectron2_config import read_config
    logging.disable(logging.WARNING)
    files = sorted(glob.glob("configs/**/*.yaml", recursive=True)) + sys.argv[1:]
    differ = []
    for name in files:
        theirs, ours = get_cfg(), get_cfg()
        theirs.merge_from_file(name)
        merge_config(ours, read_config(name, checkout=Path(".")), name)
        if theirs != ours or theirs.dump() != ours.dump():
            differ.append(name)
    print(json.dumps({"files": len(files), "differ": differ}))
"""


def test_every_checkout_config_gives_detectron2s_own_cfg(detectron2_checkout: Path, tmp_path: Path) -> None:
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
    result = run_in_checkout(detectron2_checkout, SAME_CFG, *map(str, old))
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
