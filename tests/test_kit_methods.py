"""CAM methods: hand-computed values on tiny tensors, and agreement with the grad-cam package."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kit.errors import KitError, ShapeError
from kit.methods import METHODS, CamMethod, GradCAM, GradCAMPlusPlus, get_method

# Two channels of a 2x2 activation, shared by the hand computations below.
A0 = [[1.0, 2.0], [3.0, 4.0]]  # sum = 10
A1 = [[2.0, 1.0], [1.0, 0.0]]  # sum = 4


def _pair(g0: list[list[float]], g1: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[A0, A1]]), torch.tensor([[g0, g1]], dtype=torch.float32)


def test_gradcam_by_hand_including_relu() -> None:
    # G0 = 1 everywhere -> w0 = mean = 1; G1 = [[-2,0],[0,-2]] -> w1 = -4/4 = -1   (eq. 1)
    # cam = 1*A0 - 1*A1 = [[-1, 1], [2, 4]];  relu -> [[0, 1], [2, 4]]              (eq. 2)
    a, g = _pair([[1, 1], [1, 1]], [[-2, 0], [0, -2]])
    torch.testing.assert_close(GradCAM().channel_weights(a, g), torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(GradCAM()(a, g), torch.tensor([[[0.0, 1.0], [2.0, 4.0]]]))


def test_gradcampp_by_hand() -> None:
    # alpha_ij = g^2 / (2 g^2 + sum(A) g^3); w = sum_ij alpha_ij relu(g_ij).
    # channel 0: g = 1, sum(A0) = 10 -> alpha = 1 / (2 + 10) = 1/12 at 4 pixels -> w0 = 4/12 = 1/3
    # channel 1: sum(A1) = 4; g = 2 -> alpha = 4 / (8 + 4*8) = 0.1, contributes 0.1*2 = 0.2
    #                         g = 1 -> alpha = 1 / (2 + 4) = 1/6, contributes 1/6
    #                         g = 0 -> alpha := 0                         -> w1 = 0.2 + 1/6 = 11/30
    # cam = A0/3 + 11/30*A1 = [[32, 31], [41, 40]] / 30
    a, g = _pair([[1, 1], [1, 1]], [[2, 0], [0, 1]])
    torch.testing.assert_close(GradCAMPlusPlus().channel_weights(a, g), torch.tensor([[1 / 3, 11 / 30]]))
    expected = torch.tensor([[[32.0, 31.0], [41.0, 40.0]]]) / 30
    torch.testing.assert_close(GradCAMPlusPlus()(a, g), expected)


def test_gradcampp_negative_gradients_give_no_weight() -> None:
    # channel 1: g = -2 -> alpha = 4 / (8 + 4*(-8)) = -1/6, but relu(g) = 0, so w1 = 0 (not -1/6 * -2).
    a, g = _pair([[1, 1], [1, 1]], [[-2, 0], [0, -2]])
    torch.testing.assert_close(GradCAMPlusPlus().channel_weights(a, g), torch.tensor([[1 / 3, 0.0]]))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_zero_gradients_give_zero_map_without_nan(name: str) -> None:
    a = torch.rand(3, 4, 5, 6)
    cam = METHODS[name](a, torch.zeros_like(a))
    assert cam.shape == (3, 5, 6)
    assert torch.equal(cam, torch.zeros(3, 5, 6))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batch_rows_are_independent_and_float32(name: str) -> None:
    torch.manual_seed(0)
    a, g = torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 5, 5, dtype=torch.float64)
    batch = METHODS[name](a, g)
    assert batch.dtype == torch.float32
    for n in range(4):
        torch.testing.assert_close(batch[n : n + 1], METHODS[name](a[n : n + 1], g[n : n + 1]))
    half = METHODS[name](a.half(), g.half())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_does_not_track_gradients(name: str) -> None:
    a = torch.rand(1, 2, 3, 3, requires_grad=True)
    assert not METHODS[name](a * 2, torch.ones(1, 2, 3, 3)).requires_grad


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ShapeError, match=r"\(1, 2, 3, 3\) and \(1, 2, 3\)"):
        GradCAM()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3))


def test_get_method_and_unknown_name() -> None:
    assert get_method("gradcampp") is METHODS["gradcampp"]
    assert all(isinstance(m, CamMethod) and m.name == k for k, m in METHODS.items())
    with pytest.raises(ValueError, match="'scorecam'.*gradcam, gradcampp") as info:
        get_method("scorecam")
    assert isinstance(info.value, KitError)


def test_a_method_can_override_cam_only() -> None:
    # The extension point for non channel-weighted methods, e.g. LayerCAM: relu(g) * A summed over c.
    class LayerCAM(CamMethod):
        name = "layercam"

        def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
            return torch.relu(gradients).mean(dim=(2, 3))

        def cam(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
            return (torch.relu(gradients) * activations).sum(dim=1)

    a, g = _pair([[1, 1], [1, 1]], [[-2, 0], [0, -2]])
    # relu(G1) = 0, so the map is A0 itself.
    torch.testing.assert_close(LayerCAM()(a, g), torch.tensor([A0]))


# --- agreement with pytorch-grad-cam on a tiny conv net ----------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)  # target layer, no ReLU: signed activations
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(torch.relu(self.conv1(x))))


def _minmax(cam: np.ndarray) -> np.ndarray:
    # pytorch_grad_cam.utils.image.scale_cam_image, per map: (x - min) / (1e-7 + max).
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    return cam / (1e-7 + cam.max(axis=(1, 2), keepdims=True))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_agrees_with_pytorch_grad_cam(name: str) -> None:
    reference = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, 3, 12, 12)  # padding=1 keeps 12x12, so the package's resize is the identity
    categories = [1, 3]

    store: list[torch.Tensor] = []
    handle = model.conv2.register_forward_hook(lambda _m, _i, out: store.append(out))
    try:
        out = model(x)
    finally:
        handle.remove()
    scores = out[torch.arange(2), torch.tensor(categories)]
    (grads,) = torch.autograd.grad(scores.sum(), store[0])
    ours = METHODS[name](store[0], grads).numpy()
    ours = _minmax(_minmax(ours))  # the package scales per layer, then again after aggregating layers

    cls = {"gradcam": reference.GradCAM, "gradcampp": reference.GradCAMPlusPlus}[name]
    with cls(model=model, target_layers=[model.conv2]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in categories])
    assert ours.max() == pytest.approx(1.0, abs=1e-5)  # a non-trivial map, not all zeros
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
