"""Multi-layer fusion: hand-computed cases and agreement with pytorch-grad-cam's multi-layer maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kit.core.errors import ShapeError
from kit.core.fusion import fuse_layers
from kit.methods.cam import CAM_METHODS


def test_single_layer_is_its_min_max_scaling() -> None:
    m = np.array([[1.0, 2.0], [3.0, 5.0]], dtype=np.float32)
    np.testing.assert_allclose(fuse_layers([m]), (m - 1) / 4, atol=1e-6)


def test_two_layers_by_hand() -> None:
    # Layer a scales to [[0, 1], [0, 0]], layer b (negative part cut by the ReLU) to [[0, 0], [1, 0.5]].
    # Mean: [[0, 0.5], [0.5, 0.25]] -> scaled by 0.5: [[0, 1], [1, 0.5]].
    a = np.array([[0.0, 4.0], [0.0, 0.0]])
    b = np.array([[-3.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(fuse_layers([a, b]), [[0.0, 1.0], [1.0, 0.5]], atol=1e-6)


def test_stacks_resize_to_the_largest_layer_and_accept_tensors() -> None:
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    fine = np.zeros((2, 4, 4), dtype=np.float32)
    fine[:, 3, 3] = 1.0
    fused = fuse_layers([coarse, fine])
    assert fused.shape == (2, 4, 4) and fused.dtype == np.float32
    assert fused[0, 0, 0] == pytest.approx(1.0) and fused[0, 3, 3] > 0  # both layers present
    np.testing.assert_allclose(fused[1], fine[1], atol=1e-6)  # a zero layer adds nothing
    assert fuse_layers([coarse, fine], size=(3, 5)).shape == (2, 3, 5)


def test_constant_and_non_finite_maps_become_zero() -> None:
    assert not fuse_layers([np.full((3, 3), 2.0)]).any()
    m = np.array([[np.nan, np.inf], [1.0, 0.0]])
    np.testing.assert_allclose(fuse_layers([m]), [[0.0, 0.0], [1.0, 0.0]], atol=1e-6)


def test_bad_inputs_name_the_shapes() -> None:
    with pytest.raises(ShapeError, match="at least one layer"):
        fuse_layers([])
    with pytest.raises(ShapeError, match=r"\(2, 3, 3\), \(1, 3, 3\)"):
        fuse_layers([np.zeros((2, 3, 3)), np.zeros((1, 3, 3))])
    with pytest.raises(ShapeError, match=r"\(3,\)"):
        fuse_layers([np.zeros(3)])


class TwoScaleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)  # 12x12
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)  # 6x6: resized by the fusion
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(torch.relu(self.conv1(x))))


@pytest.mark.parametrize("name", ["gradcam", "layercam", "eigencam"])
def test_agrees_with_pytorch_grad_cam_on_two_layers(name: str) -> None:
    reference = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = TwoScaleNet().eval()
    x = torch.randn(2, 3, 12, 12)
    categories = [1, 3]

    store: list[torch.Tensor] = []
    layers = (model.conv1, model.conv2)
    handles = [m.register_forward_hook(lambda _m, _i, out: store.append(out)) for m in layers]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    scores = out[torch.arange(2), torch.tensor(categories)]
    grads = torch.autograd.grad(scores.sum(), store)
    per_layer = [CAM_METHODS[name](a, g) for a, g in zip(store, grads)]
    ours = fuse_layers(per_layer, size=(12, 12))

    cls = {"gradcam": reference.GradCAM, "layercam": reference.LayerCAM, "eigencam": reference.EigenCAM}[name]
    with cls(model=model, target_layers=[model.conv1, model.conv2]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in categories])
    assert ours.max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
