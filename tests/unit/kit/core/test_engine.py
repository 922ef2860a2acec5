"""The engine on a tiny two-level detector: gradients, hooks, no-gradient levels, parameters."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

import kit.core.engine
from kit.core.contract import Capabilities
from kit.core.detection import Detection
from kit.core.engine import Chunks, LayerOutputError, explain, hooked_activations
from kit.core.errors import KitError
from kit.core.targets import TARGETS, ClassLogit
from kit.methods.cam import CAM_METHODS


class TinyDetector(nn.Module):
    """Backbone -> two levels (8x8 and 4x4), each with a 1x1 head of 3 class logits per cell."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.p3 = nn.Conv2d(4, 5, 3, padding=1)
        self.p4 = nn.Conv2d(5, 6, 3, stride=2, padding=1)
        self.head3 = nn.Conv2d(5, 3, 1)
        self.head4 = nn.Conv2d(6, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = torch.relu(self.p3(torch.relu(self.stem(x))))
        p4 = torch.relu(self.p4(p3))
        rows = [h(p).flatten(2).transpose(1, 2) for h, p in ((self.head3, p3), (self.head4, p4))]
        return torch.cat(rows, 1)  # (B, 64 + 16, 3) logits


class TinyOutput:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def _pick(self, detections: Sequence[Detection]) -> torch.Tensor:
        b = torch.tensor([d.image_index for d in detections])
        r = torch.tensor([d.row for d in detections])
        c = torch.tensor([d.class_id for d in detections])
        return self.logits[b, r, c]

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        return self._pick(detections)

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.sigmoid(self._pick(detections))

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.sigmoid(self._pick(detections))


DETECTIONS = [
    Detection(image_index=0, box_xyxy=(0, 0, 4, 4), class_id=1, score=0.9, row=9, level=0),
    Detection(image_index=1, box_xyxy=(0, 0, 8, 8), class_id=2, score=0.8, row=64 + 5, level=1),
    Detection(image_index=1, box_xyxy=(2, 2, 6, 6), class_id=0, score=0.7, row=20, level=0),
]


def run(
    model: TinyDetector, x: torch.Tensor, detections: Sequence[Detection] = DETECTIONS, **kwargs: object
) -> object:
    layers = {"p3": model.p3, "p4": model.p4}
    return explain(
        forward=lambda: TinyOutput(model(x)),
        detect=lambda output: list(detections),
        layers=layers,
        target=kwargs.pop("target", ClassLogit()),  # type: ignore[arg-type]
        methods=list(CAM_METHODS.values()),
        model=model,
        **kwargs,  # type: ignore[arg-type]
    )


def reference_gradients(model: TinyDetector, x: torch.Tensor, det: Detection) -> dict[str, torch.Tensor]:
    """The seeds' way: a full backward per detection, gradients read from retained activations."""
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, o) or o.retain_grad())
        for n, m in (("p3", model.p3), ("p4", model.p4))
    ]
    try:
        model.zero_grad()
        model(x)[det.image_index, det.row, det.class_id].backward()
    finally:
        for h in hooks:
            h.remove()
    return {n: a.grad[det.image_index].clone() for n, a in acts.items()}  # type: ignore[index]


def assert_cams_match_reference(
    model: TinyDetector, x: torch.Tensor, result: object, detections: Sequence[Detection]
) -> dict[str, torch.Tensor]:
    """Every method's map of every detection equals the one from the seeds' full backward."""
    with hooked_activations({"p3": model.p3, "p4": model.p4}) as store:
        model(x)
        acts = {name: v.detach() for name, v in store.items()}
    for k, det in enumerate(detections):
        ref = reference_gradients(model, x, det)
        for layer in ("p3", "p4"):
            a, g = acts[layer][det.image_index][None], ref[layer][None]
            for name, method in CAM_METHODS.items():
                got = result.cams[name][layer][k]  # type: ignore[attr-defined]
                torch.testing.assert_close(got, method(a, g)[0], rtol=1e-5, atol=1e-6)
    return acts


@pytest.mark.parametrize("chunk_size", [1, 2, 32])
def test_cams_equal_per_detection_backward(chunk_size: int) -> None:
    model = TinyDetector()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = run(model, x, chunks=Chunks(size=chunk_size))
    assert_cams_match_reference(model, x, result, DETECTIONS)


BATCH_DETECTIONS = [  # three images, interleaved, the busiest (image 2) with three detections
    Detection(image_index=2, box_xyxy=(0, 0, 4, 4), class_id=1, score=0.9, row=9, level=0),
    Detection(image_index=0, box_xyxy=(0, 0, 8, 8), class_id=2, score=0.8, row=64 + 5, level=1),
    Detection(image_index=2, box_xyxy=(2, 2, 6, 6), class_id=0, score=0.7, row=20, level=0),
    Detection(image_index=1, box_xyxy=(2, 2, 6, 6), class_id=0, score=0.6, row=33, level=0),
    Detection(image_index=2, box_xyxy=(2, 2, 6, 6), class_id=2, score=0.5, row=64 + 2, level=1),
    Detection(image_index=0, box_xyxy=(2, 2, 6, 6), class_id=1, score=0.4, row=3, level=0),
]


@pytest.mark.parametrize("chunk_size", [1, 4, 32])
def test_a_batch_gives_each_image_its_own_maps_in_fewer_backwards(
    chunk_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Detections of different images share a backward; each must still get exactly the maps
    # of a backward from its own score with its image alone in the batch.
    model = TinyDetector()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    result = run(model, x, BATCH_DETECTIONS, chunks=Chunks(size=chunk_size))
    monkeypatch.setattr(torch.autograd, "grad", grad)
    # one backward per round of (at most) one detection per image, not one per detection
    expected_calls = {1: 6, 4: 3, 32: 3}[chunk_size]
    assert len(calls) == expected_calls
    acts = assert_cams_match_reference(model, x, result, BATCH_DETECTIONS)
    for k, det in enumerate(BATCH_DETECTIONS):
        # and the image alone in the batch gives the same Grad-CAM (the eigen methods' arbitrary
        # SVD sign may flip with the last bit of a differently batched convolution)
        alone = x[det.image_index : det.image_index + 1]
        ref = reference_gradients(model, alone, Detection(**{**det.__dict__, "image_index": 0}))
        for layer in ("p3", "p4"):
            expected = CAM_METHODS["gradcam"](acts[layer][det.image_index][None], ref[layer][None])[0]
            got = result.cams["gradcam"][layer][k]  # type: ignore[attr-defined]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_large_layers_get_smaller_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # p3 + p4 of one image: (5*8*8 + 6*4*4) floats = 1,664 bytes per detection
    model = TinyDetector()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    chunks: list[int] = []
    real = kit.core.engine._store_maps

    def spy(
        explanation: object, name: str, activation: object, grad: object, rows: torch.Tensor, *a: object
    ) -> None:
        if name == "p3":
            chunks.append(len(rows))
        real(explanation, name, activation, grad, rows, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(kit.core.engine, "_store_maps", spy)
    for budget, expected in ((1.0, [6]), (2 * 1664 / 2**20, [2, 2, 2]), (1e-9, [1] * 6)):
        chunks.clear()
        result = run(model, x, BATCH_DETECTIONS, chunks=Chunks(mb=budget))
        assert chunks == expected
        assert_cams_match_reference(model, x, result, BATCH_DETECTIONS)


def test_level_without_gradient_is_flagged_not_drawn() -> None:
    model = TinyDetector()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    result = run(model, x)
    # p4 feeds only the 4x4 level: the level-0 detections get no gradient there, and vice versa
    # p3 feeds p4, so the level-1 detection does reach p3.
    assert result.no_gradient["p4"].tolist() == [True, False, True]  # type: ignore[attr-defined]
    assert result.no_gradient["p3"].tolist() == [False, False, False]  # type: ignore[attr-defined]
    assert torch.count_nonzero(result.cams["gradcam"]["p4"][0]) == 0  # type: ignore[attr-defined]
    for per_layer in result.cams.values():  # type: ignore[attr-defined]
        for cams in per_layer.values():
            assert torch.isfinite(cams).all()


def test_parameters_get_no_grad_and_flags_are_restored() -> None:
    model = TinyDetector()
    model.head3.weight.requires_grad_(False)
    x = torch.rand(2, 3, 8, 8)
    run(model, x)
    assert all(p.grad is None for p in model.parameters())
    assert model.head3.weight.requires_grad is False
    assert model.head4.weight.requires_grad is True


def test_hooks_removed_after_success_and_after_error() -> None:
    model = TinyDetector()
    x = torch.rand(2, 3, 8, 8)
    run(model, x)
    assert all(not m._forward_hooks for m in model.modules())

    def failing_target(output: object, detections: object) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(model, x, target=failing_target)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_no_detections_gives_empty_maps() -> None:
    model = TinyDetector()
    result = explain(
        forward=lambda: TinyOutput(model(torch.rand(1, 3, 8, 8))),
        detect=lambda output: [],
        layers={"p3": model.p3},
        target=TARGETS["class-logit"],
        methods=[CAM_METHODS["gradcam"]],
        model=model,
    )
    assert result.detections == []
    assert result.cams["gradcam"]["p3"].shape == (0, 8, 8)


def test_layer_that_is_not_a_feature_map_is_refused_clearly() -> None:
    model = TinyDetector()
    with pytest.raises(LayerOutputError, match="not a \\(B, C, H, W\\) feature map"):
        explain(
            forward=lambda: TinyOutput(model(torch.rand(1, 3, 8, 8))),
            detect=lambda output: [],
            layers={"flat": model},  # the whole model outputs (B, N, 3)
            target=ClassLogit(),
            methods=[CAM_METHODS["gradcam"]],
        )
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_that_never_runs_is_refused() -> None:
    model = TinyDetector()
    unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(KitError, match="did not run"):
        explain(
            forward=lambda: TinyOutput(model(torch.rand(1, 3, 8, 8))),
            detect=lambda output: [],
            layers={"unused": unused},
            target=ClassLogit(),
            methods=[CAM_METHODS["gradcam"]],
        )


class SharedHeadDetector(nn.Module):
    """Two levels (8x8, 4x4) through one shared subnet, as RetinaNet's head: it runs once per level."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.p3 = nn.Conv2d(3, 4, 3, padding=1)
        self.p4 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.subnet = nn.Conv2d(4, 5, 3, padding=1)
        self.score = nn.Conv2d(5, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = torch.relu(self.p3(x))
        p4 = torch.relu(self.p4(p3))
        rows = [self.score(torch.relu(self.subnet(p))).flatten(2).transpose(1, 2) for p in (p3, p4)]
        return torch.cat(rows, 1)  # (B, 64 + 16, 3)


def test_layer_run_once_per_level_is_explained_at_each_detections_level() -> None:
    model = SharedHeadDetector().eval()
    x = torch.randn(2, 3, 8, 8)
    gradcam = CAM_METHODS["gradcam"]
    result = explain(
        forward=lambda: TinyOutput(model(x)),
        detect=lambda output: list(DETECTIONS),
        layers={"subnet": model.subnet},
        target=ClassLogit(),
        methods=[gradcam],
        model=model,
        chunks=Chunks(size=2),
        capabilities=Capabilities(per_level_layers=True),
    )
    cams = result.cams["gradcam"]["subnet"]
    assert cams.shape == (3, 8, 8)  # the largest run's resolution
    assert not result.no_gradient["subnet"].any()
    for k, det in enumerate(DETECTIONS):
        runs: list[torch.Tensor] = []
        hook = model.subnet.register_forward_hook(
            lambda m, i, o, runs=runs: runs.append(o) or o.retain_grad()
        )
        try:
            model(x)[det.image_index, det.row, det.class_id].backward()
        finally:
            hook.remove()
        act = runs[det.level]  # type: ignore[index]
        expected = gradcam(act.detach()[det.image_index][None], act.grad[det.image_index][None])  # type: ignore[index]
        if expected.shape[1:] != (8, 8):
            expected = nn.functional.interpolate(expected[:, None], size=(8, 8), mode="bilinear")[:, 0]
        torch.testing.assert_close(cams[k], expected[0], rtol=1e-4, atol=1e-6)
    assert not model.subnet._forward_hooks


def test_layer_run_several_times_needs_a_level_per_detection() -> None:
    model = SharedHeadDetector().eval()
    x = torch.randn(1, 3, 8, 8)
    det = Detection(image_index=0, box_xyxy=(0, 0, 4, 4), class_id=1, score=0.9, row=3, level=None)
    with pytest.raises(KitError, match="runs 2 times"):
        explain(
            forward=lambda: TinyOutput(model(x)),
            detect=lambda output: [det],
            layers={"subnet": model.subnet},
            target=ClassLogit(),
            methods=[CAM_METHODS["gradcam"]],
            model=model,
        )
    assert not model.subnet._forward_hooks


def test_a_layer_run_twice_is_refused_unless_the_adapter_maps_detections_to_runs() -> None:
    """Without per_level_layers, which run of a shared layer made a detection is unknown."""
    model = SharedHeadDetector().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(KitError, match=r"'subnet' runs 2 times .* choose a layer that runs once"):
        explain(
            forward=lambda: TinyOutput(model(x)),
            detect=lambda output: list(DETECTIONS),
            layers={"subnet": model.subnet},
            target=ClassLogit(),
            methods=[CAM_METHODS["gradcam"]],
            model=model,
        )
