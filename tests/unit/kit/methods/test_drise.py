"""D-RISE (kit/methods/drise.py): masks, similarity, maps where the evidence is, and the run around it."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from kit.api import Explainer
from kit.cli import main as cli
from kit.core.contract import Capabilities
from kit.core.detection import Detection
from kit.core.geometry import Letterbox
from kit.core.options import ArgumentError
from kit.evaluation.audit import audit_run
from kit.methods.drise import (
    LAYER,
    TARGET,
    DRise,
    DRiseSettings,
    box_iou,
    generate_masks,
    similarity,
)
from kit.upstreams.loaders import Loaded
from tests.conftest import picture, toy_explainer

# ---- a detector whose evidence is known: two regions, each one object ----------------------------

# In network-input pixels (x1, y1, x2, y2). The input is the image at half size, 4 rows of padding
# on top: a 48 x 64 image is a 24 x 32 content at (top 4, left 0) of a 32 x 32 input.
REGIONS = ((4.0, 8.0, 12.0, 16.0), (20.0, 16.0, 28.0, 24.0))
TOP = 4


class RegionOutput:
    def __init__(self, means: torch.Tensor) -> None:
        self.means = means  # (B, 2): each region's mean brightness in [0, 1]

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.stack([torch.eye(2)[d.class_id] * 0.9 + 0.05 for d in detections])

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.stack([self.means[d.image_index, d.class_id] for d in detections])


class RegionAdapter:
    """Object k (class k) is detected, at its region's box, when that region's mean brightness is
    above half: the region is its only evidence. ``objectness``: states that it has one (the
    region's mean), which D-RISE then multiplies in."""

    def __init__(self, *, objectness: bool = False) -> None:
        self.model = nn.Identity()
        self.names = ["left", "right"]
        self.capabilities = Capabilities(objectness=objectness)
        self.forwards: list[int] = []

    def default_layers(self) -> list[str]:
        return []

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        raise AssertionError("D-RISE resolves no layer")

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        batch = torch.zeros(len(images_bgr), 3, 32, 32)
        boxes = []
        for k, image in enumerate(images_bgr):
            h, w = image.shape[:2]
            small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            batch[k, :, TOP : TOP + h // 2, : w // 2] = torch.from_numpy(small).permute(2, 0, 1) / 255.0
            boxes.append(Letterbox(input_hw=(32, 32), content=(TOP, 0, h // 2, w // 2), original_hw=(h, w)))
        return batch, boxes

    def forward(self, batch: torch.Tensor) -> RegionOutput:
        self.forwards.append(len(batch))
        means = [
            batch[:, :, int(y1) : int(y2), int(x1) : int(x2)].mean(dim=(1, 2, 3))
            for x1, y1, x2, y2 in REGIONS
        ]
        return RegionOutput(torch.stack(means, dim=1))

    def detect(self, output: RegionOutput) -> list[Detection]:
        return [
            Detection(image_index=b, box_xyxy=REGIONS[k], class_id=k, score=float(output.means[b, k]), row=k)
            for b in range(len(output.means))
            for k in range(2)
            if output.means[b, k] > 0.5
        ]


def region_explainer(adapter: RegionAdapter | None = None) -> Explainer:
    return Explainer(
        Loaded(adapter=adapter or RegionAdapter(), weights="region.pt", settings={}), upstream="toy"
    )


WHITE = np.full((48, 64, 3), 255, dtype=np.uint8)
FEW = DRiseSettings(masks=200, cell=4, p=0.5, seed=0, batch=32)


def peak(cam: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(x), int(y)


def test_each_detection_peaks_on_its_own_evidence() -> None:
    (result,) = region_explainer().explain(WHITE, method="drise", drise=FEW)
    assert [d.class_name for d in result.detections] == ["left", "right"]
    assert result.layers == (LAYER,)
    for d, (x1, y1, x2, y2) in zip(result.detections, REGIONS):
        cam = d.maps[LAYER]
        assert cam is not None and cam.shape == (48, 64) and cam.dtype == np.float32  # the image's pixels
        assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
        # the region in the image's pixels: twice the input's, less the padding on top
        box = (2 * x1, 2 * (y1 - TOP), 2 * x2, 2 * (y2 - TOP))
        assert d.box_xyxy == box
        x, y = peak(cam)
        assert box[0] <= x < box[2] and box[1] <= y < box[3], (d.class_name, (x, y), box)
        region = np.zeros(cam.shape, bool)
        region[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
        # the evidence stands out, not one lucky pixel (a D-RISE map has a floor: E[w] everywhere)
        assert cam[region].mean() > 1.15 * cam[~region].mean()


def test_one_mask_set_serves_every_detection_of_an_image() -> None:
    adapter = RegionAdapter()
    region_explainer(adapter).explain(WHITE, method="drise", drise=FEW)
    assert adapter.forwards == [1] + [32] * 6 + [8]  # the unmasked forward, then 200 masks once


def test_maps_are_reproducible_by_seed_whatever_the_batches() -> None:
    def maps(settings: DRiseSettings) -> list[np.ndarray]:
        (result,) = region_explainer().explain(WHITE, method="drise", drise=settings)
        return [np.asarray(d.maps[LAYER]) for d in result.detections]

    first, again = maps(FEW), maps(FEW)
    other_batches = maps(DRiseSettings(masks=200, cell=4, seed=0, batch=7))
    other_seed = maps(DRiseSettings(masks=200, cell=4, seed=1, batch=32))
    for a, b, c, d in zip(first, again, other_batches, other_seed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-5)
        assert np.abs(a - d).max() > 0.05


def test_detections_are_those_a_gradient_method_explains() -> None:
    explainer = toy_explainer()
    images = [picture(0), picture(1, (30, 20)), picture(2)]
    grad = explainer.explain(images, method="gradcam", batch_size=2)
    drise = explainer.explain(images, method="drise", batch_size=2, drise=DRiseSettings(masks=8, cell=4))
    for g, d in zip(grad, drise):
        assert [(x.id, x.box_xyxy, x.class_id, x.score) for x in g.detections] == [
            (x.id, x.box_xyxy, x.class_id, x.score) for x in d.detections
        ]
        assert d.layers == ("image",) and all(list(x.maps) == ["image"] for x in d.detections)


def test_an_image_without_detections_costs_one_forward_and_has_none() -> None:
    adapter = RegionAdapter()
    (result,) = region_explainer(adapter).explain(np.zeros((48, 64, 3), np.uint8), method="drise", drise=FEW)
    assert result.error is None and result.detections == () and (result.width, result.height) == (64, 48)
    assert adapter.forwards == [1]


def test_an_image_the_masks_cannot_cover_fails_alone() -> None:
    # The toy sees a 10 x 20 image as 16 x 32 px: a cell of 20 px is larger than its short side.
    explainer = toy_explainer()
    thin, fine = picture(0, (10, 20)), picture(1, (32, 32))
    bad, good = explainer.explain(
        [thin, fine], method="drise", batch_size=2, drise=DRiseSettings(masks=4, cell=20)
    )
    assert bad.error is not None and bad.detections == ()
    assert "cell of 20 px (--drise-cell) is larger than the image the model sees (32 x 16 px" in bad.error
    assert "pass a cell of 16 px or less" in bad.error
    assert good.error is None and len(good.detections) == 1


def test_objectness_is_multiplied_in_where_the_detector_has_one() -> None:
    # Same detections; with objectness, each mask's weight is also the region's brightness (<= 1),
    # so the unnormalized maps shrink, exactly by the objectness of the detections found.
    image = [WHITE]
    plain = DRise(FEW).explain_batch(RegionAdapter(), image)[0].cams["drise"][LAYER]
    scaled = DRise(FEW).explain_batch(RegionAdapter(objectness=True), image)[0].cams["drise"][LAYER]
    assert plain.shape == scaled.shape == (2, 32, 32)
    assert (scaled <= plain + 1e-6).all() and (scaled.sum() < 0.95 * plain.sum())


# ---- the pieces ---------------------------------------------------------------------------------


def test_masks_are_rise_masks_drawn_from_the_seed() -> None:
    masks = generate_masks(count=500, hw=(24, 32), cell=4, p=0.3, seed=3)
    assert masks.shape == (500, 24, 32) and masks.dtype == torch.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert float(masks.mean()) == pytest.approx(0.3, abs=0.02)  # a cell is kept with probability p
    assert len({round(float(v), 4) for v in masks[0].flatten()}) > 2  # bilinear edges, not blocks
    np.testing.assert_array_equal(masks[:7], generate_masks(count=7, hw=(24, 32), cell=4, p=0.3, seed=3))
    assert not torch.equal(masks[:7], generate_masks(count=7, hw=(24, 32), cell=4, p=0.3, seed=4))


def test_similarity_is_iou_times_cosine_times_objectness() -> None:
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_iou(target, boxes).tolist() == [[1.0, pytest.approx(50 / 150), 0.0]]
    p_t = torch.tensor([[0.6, 0.8]])  # unit length already
    p_d = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.6, 0.8]])  # cosines 1, 0.96, 1
    got = similarity(target, p_t, boxes, p_d, torch.tensor([0.5, 1.0, 1.0]))
    np.testing.assert_allclose(got.numpy(), [[0.5, 0.96 / 3, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(similarity(target, p_t, boxes, p_d).numpy(), [[1.0, 0.32, 0.0]], rtol=1e-6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"masks": 0}, r"DRiseSettings.masks must be 1 or more masks, got 0"),
        ({"cell": 0}, r"DRiseSettings.cell must be a positive number of pixels, got 0"),
        ({"p": 0.0}, r"DRiseSettings.p must be between 0 and 1, both excluded .* got 0.0"),
        ({"p": 1.0}, r"DRiseSettings.p must be between 0 and 1"),
        ({"p": math.nan}, r"DRiseSettings.p must be between 0 and 1"),
        ({"seed": -1}, r"DRiseSettings.seed must be 0 or more"),
        ({"batch": 0}, r"DRiseSettings.batch must be a positive number of images"),
        ({"floor": -1.0}, r"DRiseSettings.floor must be 0 \(the paper.s map\) or a number of standard"),
        ({"floor": math.inf}, r"DRiseSettings.floor must be 0"),
        ({"floor": True}, r"DRiseSettings.floor must be 0"),
    ],
)
def test_bad_settings_are_refused_before_any_image(changes: dict[str, object], message: str) -> None:
    adapter = RegionAdapter()
    with pytest.raises(ArgumentError, match=message):
        region_explainer(adapter).explain(WHITE, method="drise", drise=DRiseSettings(**changes))  # type: ignore[arg-type]
    assert adapter.forwards == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"layers": ["feat"]}, r"layers does not go with D-RISE: .* its one layer is 'image'"),
        ({"fuse": True}, r"fuse=True fuses the maps of several layers; D-RISE has one"),
        ({"target": "score"}, r"target and target_class do not go with D-RISE"),
        ({"target_class": 1}, r"target and target_class do not go with D-RISE"),
    ],
)
def test_what_drise_has_no_use_for_is_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        toy_explainer().explain(picture(0), method="drise", **arguments)  # type: ignore[arg-type]
    (result,) = toy_explainer().explain(
        picture(0), method="drise", layers=["image"], drise=DRiseSettings(masks=2)
    )
    assert result.error is None
    with pytest.raises(ArgumentError, match="drise= holds D-RISE's settings; it goes with method='drise'"):
        toy_explainer().explain(picture(0), method="gradcam", drise=DRiseSettings())


# ---- the command line and the run folder ---------------------------------------------------------


def toy_main() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "toy_main.py"
    spec = importlib.util.spec_from_file_location("toy_main", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--drise-masks", "0"], "--drise-masks must be 1 or more masks, got 0"),
        (["--drise-cell", "0"], "--drise-cell must be a positive number of pixels, got 0"),
        (["--drise-p", "0"], "--drise-p must be between 0 and 1, both excluded"),
        (["--drise-p", "1.5"], "--drise-p must be between 0 and 1, both excluded"),
        (["--drise-seed", "-3"], "--drise-seed must be 0 or more, got -3"),
        (["--drise-batch", "0"], "--drise-batch must be a positive number of images, got 0"),
        (["--drise-floor", "-2"], "--drise-floor must be 0 (the paper's map) or a number of standard errors"),
        (["--target-layers", "feat"], "--target-layers does not go with D-RISE"),
        (["--fuse"], "--fuse fuses the maps of several layers"),
        (["--target", "score"], "--target and --target-class do not go with D-RISE"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), picture(0))
    argv = [
        "--source",
        str(tmp_path / "a.png"),
        "--project",
        str(tmp_path / "runs"),
        "--method",
        "drise",
        *flags,
    ]
    assert cli.guarded(lambda: toy_main().main(argv)) == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "runs").exists()  # refused before the run folder, before the model


def test_a_cell_larger_than_the_yolo_input_is_refused_up_front() -> None:
    import argparse

    opt = argparse.Namespace(**vars(cli_options("--method", "drise", "--drise-cell", "700")), img_size=[640])
    with pytest.raises(
        ArgumentError, match=r"--drise-cell 700 is larger than the image the model sees \(--img-size 640\)"
    ):
        cli.check_yolo_arguments(opt, size_flag="--img-size")


def cli_options(*argv: str) -> object:
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_kit_arguments(parser)
    for flag, default in (("--conf-thres", 0.25), ("--iou-thres", 0.45), ("--max-det", 300)):
        parser.add_argument(flag, type=type(default), default=default)
    parser.add_argument("--project", default="runs")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")
    return parser.parse_args(list(argv))


def test_a_drise_run_folder_with_eval_audit_report_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, labels = tmp_path / "src", tmp_path / "labels"
    src.mkdir()
    labels.mkdir()
    for k in range(2):
        cv2.imwrite(str(src / f"i{k}.png"), picture(k))
        (labels / f"i{k}.txt").write_text("0 0.5 0.5 1 1\n")
    (src / "notes.png").write_text("not an image")
    base = ["--source", str(src), "--project", str(tmp_path / "runs"), "--name", "exp", "--method", "drise"]
    run = [
        *base,
        "--drise-masks",
        "6",
        "--drise-cell",
        "4",
        "--eval",
        str(labels),
        "--eval-steps",
        "2",
        "--audit",
    ]
    assert cli.guarded(lambda: toy_main().main(run)) == cli.EXIT_IMAGES_FAILED  # notes.png only
    out = tmp_path / "runs" / "exp"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["method"], manifest["target"], manifest["layers"]) == ("drise", TARGET, ["image"])
    assert manifest["drise"] == {"masks": 6, "cell": 4, "p": 0.5, "seed": 0}
    explained = [i for i in manifest["images"] if i["error"] is None]
    assert len(explained) == 2
    for image in explained:
        (det,) = image["detections"]
        assert (out / det["maps"]["image"]["overlay"]).is_file()
    scores = json.loads((out / "eval.json").read_text())
    assert scores["images"]["evaluated"] == 2 and len(scores["detections"]) == 2
    assert all(r["maps"]["image"]["deletion_auc"] is not None for r in scores["detections"])
    assert (out / "index.html").is_file() and (out / "audit.json").is_file()
    assert audit_run(out).format_table()
    capsys.readouterr()
    # resume compares the masks: other settings are refused, the same ones go on
    other = [
        *base,
        "--drise-masks",
        "7",
        "--drise-cell",
        "4",
        "--eval",
        str(labels),
        "--eval-steps",
        "2",
        "--resume",
    ]
    assert cli.guarded(lambda: toy_main().main(other)) == cli.EXIT_REFUSED
    assert '"masks": 6' in capsys.readouterr().err
    floored = [*base, "--drise-floor", "4", "--eval", str(labels), "--eval-steps", "2", "--resume"]
    assert cli.guarded(lambda: toy_main().main(floored)) == cli.EXIT_REFUSED  # another map: refused
    assert '"floor": 4.0' in capsys.readouterr().err


def test_a_large_image_is_masked_at_its_maps_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above kit.core.geometry.MAP_MAX_SIDE (here 40 px, above the toy's 32 px input) the masked copies
    are the
    image scaled down to the maps' size, the targets' boxes with it; the maps agree with masking at
    full size, and the boxes stay in the image's pixels."""
    import kit.core.geometry
    import kit.methods.drise
    from tests.conftest import ToyAdapter

    image = picture(5, (48, 64))
    settings = DRiseSettings(masks=64, cell=4, p=0.5, seed=0, batch=16)
    adapter = ToyAdapter()
    shapes: list[tuple[int, ...]] = []
    preprocess = adapter.preprocess
    monkeypatch.setattr(
        adapter, "preprocess", lambda images: shapes.extend(i.shape for i in images) or preprocess(images)
    )
    explainer = Explainer(Loaded(adapter=adapter, weights="toy.pt", settings={}), upstream="toy")
    (full,) = explainer.explain(image, method="drise", drise=settings)
    monkeypatch.setattr(kit.core.geometry, "MAP_MAX_SIDE", 40)
    shapes.clear()
    targets: list[list[float]] = []
    real_similarity = kit.methods.drise.similarity
    monkeypatch.setattr(
        kit.methods.drise,
        "similarity",
        lambda boxes, *rest: targets.extend(boxes.tolist()) or real_similarity(boxes, *rest),
    )
    (bounded,) = explainer.explain(image, method="drise", drise=settings)
    assert targets and all(box == [0.0, 0.0, 40.0, 30.0] for box in targets)  # the box, scaled with the image
    assert shapes[0] == (48, 64, 3) and set(shapes[1:]) == {(30, 40, 3)}  # the unmasked forward, then masks
    (d,), (e,) = bounded.detections, full.detections
    assert d.box_xyxy == e.box_xyxy == (0.0, 0.0, 64.0, 48.0)
    cam, full_cam = d.maps[LAYER], e.maps[LAYER]
    assert cam is not None and full_cam is not None and cam.shape == (30, 40)
    scaled = cv2.resize(full_cam, (40, 30), interpolation=cv2.INTER_AREA)
    assert float(np.corrcoef(scaled.ravel(), cam.ravel())[0, 1]) > 0.9


def test_the_growing_sum_holds_the_map_of_every_prefix_of_the_masks() -> None:
    """DRise.sums after k masks is the sum of a k-mask run with the same seed (the first k masks of
    any count are the same), and its last step is saliency's map: a convergence curve costs one run."""
    adapter = RegionAdapter()
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [40.0, 24.0, 56.0, 40.0]])  # REGIONS in image pixels
    probabilities = torch.tensor([[0.95, 0.05], [0.05, 0.95]])
    grown = {
        stats.count: stats.weighted.clone()
        for stats in DRise(FEW).sums(adapter, WHITE, boxes=boxes, probabilities=probabilities, hw=(24, 32))
    }
    assert list(grown) == [32, 64, 96, 128, 160, 192, 200]
    for k in (64, 200):
        fewer = DRise(DRiseSettings(masks=k, cell=4, seed=0, batch=32))
        maps = fewer.saliency(adapter, WHITE, boxes=boxes, probabilities=probabilities, hw=(24, 32))
        np.testing.assert_allclose(grown[k] / (k * 0.5), maps.reshape(2, -1), atol=1e-6)
    assert (grown[200] - grown[32]).abs().max() > 0  # it does grow


def test_masks_applied_a_few_at_a_time_are_each_mask_applied_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from kit.methods import drise

    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (12, 10, 3)).astype(np.float32))
    masks = torch.from_numpy(rng.random((5, 12, 10)).astype(np.float32))
    alone = [(pixels * m[..., None]).round().to(torch.uint8).numpy() for m in masks]
    monkeypatch.setattr(drise, "APPLY_MB", 2 * 4 * pixels.numel() / 2**20)  # two masks at a time
    for got in (drise._apply_masks(pixels, masks), drise._apply_masks(pixels, masks[:1])):
        assert all(np.array_equal(a, b) for a, b in zip(alone, got)) and got[0].dtype == np.uint8
    assert len(drise._apply_masks(pixels, masks)) == 5


def test_the_sums_give_each_pixels_correlation_with_the_weight_and_the_floored_map() -> None:
    """DRiseSums.z is Pearson's r of each pixel's mask values with the weights, times sqrt(masks);
    the floored map is the mean-centred sum where z reaches the floor and 0 elsewhere."""
    from kit.methods.drise import DRiseSums

    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(300, 40, generator=gen)
    weights = torch.stack([masks[:, 3] + 0.3 * torch.rand(300, generator=gen), torch.full((300,), 0.4)])
    stats = DRiseSums.empty(2, 40)
    for start in range(0, 300, 64):  # in batches, as D-RISE adds them
        stats.add(weights[:, start : start + 64], masks[start : start + 64])
    assert stats.count == 300
    expected = np.array([np.corrcoef(weights[0].numpy(), masks[:, j].numpy())[0, 1] for j in range(40)])
    np.testing.assert_allclose(stats.z()[0].numpy(), expected * math.sqrt(300), atol=1e-4)  # float32 sum
    np.testing.assert_allclose(stats.z()[1].numpy(), 0.0)  # a constant weight: no evidence anywhere
    np.testing.assert_allclose(stats.map(p=0.5).numpy(), (weights @ masks).numpy() / 150, rtol=1e-5)
    floored = stats.map(p=0.5, floor=4.0)
    assert floored[0, 3] > 0 and int((floored[0] > 0).sum()) <= 3  # pixel 3 and at most chance others
    centred = (weights[0] - weights[0].mean()) @ masks[:, 3] / 150
    assert float(floored[0, 3]) == pytest.approx(float(centred), rel=1e-5)
    assert float(floored[1].abs().max()) == 0.0


def test_a_floored_map_is_zero_away_from_the_evidence() -> None:
    """With --drise-floor the noise of the mask draw is gone: outside the detection's region nearly
    every pixel is 0, while the paper's map is positive everywhere (its floor, E[w])."""
    floored = DRiseSettings(masks=200, cell=4, p=0.5, seed=0, batch=32, floor=4.0)
    (plain,) = region_explainer().explain(WHITE, method="drise", drise=FEW)
    (result,) = region_explainer().explain(WHITE, method="drise", drise=floored)
    for d, d_plain, (x1, y1, x2, y2) in zip(result.detections, plain.detections, REGIONS):
        cam, cam_plain = d.maps[LAYER], d_plain.maps[LAYER]
        assert cam is not None and cam_plain is not None
        box = (2 * x1, 2 * (y1 - TOP), 2 * x2, 2 * (y2 - TOP))
        region = np.zeros(cam.shape, bool)
        region[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
        assert cam[region].mean() > 0.3 and (cam[~region] == 0).mean() > 0.9
        assert (cam_plain[~region] > 0).mean() > 0.9
