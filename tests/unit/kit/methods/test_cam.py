"""CAM methods: hand-computed values on tiny tensors, and agreement with the grad-cam package."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kit.core.errors import KitError, ShapeError
from kit.methods.cam import (
    CAM_METHODS,
    CamMethod,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
    first_component_projection,
    get_cam_method,
)

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


def test_xgradcam_by_hand() -> None:
    # w_k = sum_ij A_ij g_ij / sum(A): channel 0: (1+2+3+4) * 1 / 10 = 1; channel 1: (2*2 + 0*1) / 4 = 1
    # cam = A0 + A1 = [[3, 3], [4, 4]]
    a, g = _pair([[1, 1], [1, 1]], [[2, 0], [0, 1]])
    torch.testing.assert_close(XGradCAM().channel_weights(a, g), torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(XGradCAM()(a, g), torch.tensor([[[3.0, 3.0], [4.0, 4.0]]]))


def test_layercam_by_hand() -> None:
    # Pixel weights relu(g): channel 0 -> [[1, 0], [2, 0]], channel 1 -> [[0, 3], [0, 0]]
    # cam = [[1*1 + 0*2, 0*2 + 3*1], [2*3 + 0*1, 0*4 + 0*0]] = [[1, 3], [6, 0]]
    a, g = _pair([[1, -1], [2, -5]], [[-2, 3], [0, -1]])
    torch.testing.assert_close(LayerCAM()(a, g), torch.tensor([[[1.0, 3.0], [6.0, 0.0]]]))


def test_hirescam_by_hand_keeps_negative_gradients_until_the_relu() -> None:
    # cam = sum_k g_k * A_k = [[1*1 - 2*2, -1*2 + 3*1], [2*3 + 0*1, -5*4 - 1*0]] = [[-3, 1], [6, -20]]
    a, g = _pair([[1, -1], [2, -5]], [[-2, 3], [0, -1]])
    torch.testing.assert_close(HiResCAM().cam(a, g), torch.tensor([[[-3.0, 1.0], [6.0, -20.0]]]))
    torch.testing.assert_close(HiResCAM()(a, g), torch.tensor([[[0.0, 1.0], [6.0, 0.0]]]))


def test_hirescam_equals_gradcam_when_gradients_are_constant_per_channel() -> None:
    # With g^k constant over space, sum_k g^k A^k = sum_k mean(g^k) A^k (HiResCAM paper, Sec. 3).
    torch.manual_seed(0)
    a = torch.randn(2, 5, 4, 4)
    g = torch.randn(2, 5, 1, 1).expand(2, 5, 4, 4)
    torch.testing.assert_close(HiResCAM()(a, g), GradCAM()(a, g))


def test_eigencam_projects_on_the_first_principal_component() -> None:
    # Pixel vectors (2 channels) along the direction (1, 1): the projection is +-sqrt(2) * (t - mean t).
    t = torch.tensor([[0.0, 1.0], [2.0, 5.0]])  # mean 2 -> centred [[-2, -1], [0, 3]]
    a = torch.stack([t, t])[None]
    projection = first_component_projection(a)[0]
    expected = torch.tensor([[-2.0, -1.0], [0.0, 3.0]]) * 2**0.5
    assert torch.allclose(projection, expected, atol=1e-5) or torch.allclose(projection, -expected, atol=1e-5)


def test_eigencam_ignores_gradients_and_reuses_repeated_rows() -> None:
    torch.manual_seed(0)
    a = torch.randn(1, 4, 5, 5).expand(3, 4, 5, 5)
    cams = EigenCAM()(a, torch.randn(3, 4, 5, 5))
    assert not EigenCAM.uses_gradients
    assert torch.equal(cams[0], cams[1]) and torch.equal(cams[1], cams[2])
    torch.testing.assert_close(cams, EigenCAM()(a, torch.zeros(3, 4, 5, 5)))


@pytest.mark.parametrize("name", sorted(n for n, m in CAM_METHODS.items() if m.uses_gradients))
def test_zero_gradients_give_zero_map_without_nan(name: str) -> None:
    a = torch.rand(3, 4, 5, 6)
    cam = CAM_METHODS[name](a, torch.zeros_like(a))
    assert cam.shape == (3, 5, 6)
    assert torch.equal(cam, torch.zeros(3, 5, 6))


@pytest.mark.parametrize("name", sorted(CAM_METHODS))
def test_nan_free_on_zero_activations(name: str) -> None:
    cam = CAM_METHODS[name](torch.zeros(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    assert torch.equal(cam, torch.zeros(2, 4, 4))


@pytest.mark.parametrize("name", sorted(CAM_METHODS))
def test_batch_rows_are_independent_and_float32(name: str) -> None:
    torch.manual_seed(0)
    a, g = torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 5, 5, dtype=torch.float64)
    batch = CAM_METHODS[name](a, g)
    assert batch.dtype == torch.float32
    for n in range(4):
        torch.testing.assert_close(batch[n : n + 1], CAM_METHODS[name](a[n : n + 1], g[n : n + 1]))
    half = CAM_METHODS[name](a.half(), g.half())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


@pytest.mark.parametrize("name", sorted(CAM_METHODS))
def test_does_not_track_gradients(name: str) -> None:
    a = torch.rand(1, 2, 3, 3, requires_grad=True)
    assert not CAM_METHODS[name](a * 2, torch.ones(1, 2, 3, 3)).requires_grad


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ShapeError, match=r"\(1, 2, 3, 3\) and \(1, 2, 3\)"):
        GradCAM()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3))


def test_get_method_and_unknown_name() -> None:
    assert get_cam_method("gradcampp") is CAM_METHODS["gradcampp"]
    assert all(isinstance(m, CamMethod) and m.name == k for k, m in CAM_METHODS.items())
    with pytest.raises(ValueError, match="'scorecam'.*eigencam, eigengradcam, gradcam, gradcampp") as info:
        get_cam_method("scorecam")
    assert isinstance(info.value, KitError)


def test_a_method_can_override_cam_only() -> None:
    # The extension point for methods that are not channel-weighted: here relu(g) * A summed over c.
    class PixelWeighted(CamMethod):
        name = "pixelweighted"

        def cam(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
            return (torch.relu(gradients) * activations).sum(dim=1)

    a, g = _pair([[1, 1], [1, 1]], [[-2, 0], [0, -2]])
    # relu(G1) = 0, so the map is A0 itself.
    torch.testing.assert_close(PixelWeighted()(a, g), torch.tensor([A0]))
    with pytest.raises(NotImplementedError, match="PixelWeighted computes its map in cam"):
        PixelWeighted().channel_weights(a, g)


def test_a_method_must_override_something() -> None:
    with pytest.raises(TypeError, match="Nothing must override channel_weights"):

        class Nothing(CamMethod):
            name = "nothing"


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


@pytest.mark.parametrize("name", sorted(CAM_METHODS))
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
    ours = CAM_METHODS[name](store[0], grads).numpy()
    ours = _minmax(_minmax(ours))  # the package scales per layer, then again after aggregating layers

    cls = {
        "gradcam": reference.GradCAM,
        "gradcampp": reference.GradCAMPlusPlus,
        "xgradcam": reference.XGradCAM,
        "layercam": reference.LayerCAM,
        "hirescam": reference.HiResCAM,
        "eigencam": reference.EigenCAM,
        "eigengradcam": reference.EigenGradCAM,
    }[name]
    with cls(model=model, target_layers=[model.conv2]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in categories])
    assert ours.max() == pytest.approx(1.0, abs=1e-5)  # a non-trivial map, not all zeros
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
