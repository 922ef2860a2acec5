"""Guided backpropagation: agreement with pytorch-grad-cam, the rule for other activations, cleanup."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from kit.errors import KitError, ShapeError
from kit.guided import (
    GUIDED_ACTIVATIONS,
    GuidedActivation,
    GuidedBackpropError,
    deprocess_image,
    guided_activations,
    guided_backprop,
    guided_gradcam,
)


class TinyReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _activation_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.SiLU, nn.LeakyReLU, GuidedActivation))]


def test_agrees_with_pytorch_grad_cam_guided_backprop() -> None:
    reference = pytest.importorskip("pytorch_grad_cam")
    torch.manual_seed(0)
    model = TinyReLUNet().eval()
    x = torch.randn(1, 3, 8, 8)
    category = 2

    ours = guided_backprop(model, x, lambda out: out[0, category])
    # The package replaces the ReLUs for good (with new, not in-place ones): give it a copy.
    theirs = reference.GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")(x.clone(), category)
    ours_hwc = ours[0].permute(1, 2, 0).numpy()
    assert np.abs(theirs).max() > 1e-3  # a non-trivial gradient
    np.testing.assert_allclose(ours_hwc, theirs, atol=1e-5, rtol=0)

    # ... and it differs from the plain gradient, so the guided rule was applied.
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xg)[0, category], xg)
    assert not torch.allclose(plain, ours, atol=1e-4)


def test_batch_gives_each_image_its_own_gradient() -> None:
    torch.manual_seed(0)
    model = TinyReLUNet().eval()
    x = torch.randn(3, 3, 8, 8)
    cats = torch.tensor([0, 4, 2])
    batch = guided_backprop(model, x, lambda out: out[torch.arange(3), cats])
    for i in range(3):
        one = guided_backprop(model, x[i : i + 1], lambda out, i=i: out[0, cats[i]])
        torch.testing.assert_close(batch[i : i + 1], one)
    assert all(p.grad is None for p in model.parameters())


def _single_activation_grad(activation: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    model = nn.Sequential(activation)
    return guided_backprop(model, x.view(1, 1, 1, -1), lambda out: (out.view(-1) * w).sum()).view(-1)


def test_silu_and_leaky_relu_rule_by_hand() -> None:
    # grad_in = relu(grad_out) * f'(x) * [x > 0]; grad_out = w.
    x = torch.tensor([-1.0, 0.5, 2.0, 3.0])
    w = torch.tensor([2.0, 1.0, -1.0, 0.5])
    # pixel 0: x < 0 -> 0;  pixel 2: w < 0 -> 0;  pixels 1, 3: w * f'(x)
    s = torch.sigmoid(x)
    silu_slope = s * (1 + x * (1 - s))  # d/dx x*sigmoid(x)
    expected = torch.tensor([0.0, 1.0 * silu_slope[1].item(), 0.0, 0.5 * silu_slope[3].item()])
    torch.testing.assert_close(_single_activation_grad(nn.SiLU(), x, w), expected)
    leaky = _single_activation_grad(nn.LeakyReLU(0.1, inplace=True), x, w)
    torch.testing.assert_close(leaky, torch.tensor([0.0, 1.0, 0.0, 0.5]))
    torch.testing.assert_close(_single_activation_grad(nn.ReLU(), x, w), torch.tensor([0.0, 1.0, 0.0, 0.5]))


@pytest.mark.parametrize("kind", GUIDED_ACTIVATIONS, ids=lambda t: t.__name__)
def test_every_guided_activation_follows_the_rule(kind: type[nn.Module]) -> None:
    torch.manual_seed(0)
    x, w = torch.randn(50) * 3, torch.randn(50)
    xg = x.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(kind()(xg), xg, grad_outputs=torch.ones(50))  # f'(x), elementwise
    expected = torch.relu(w) * slope * (x > 0)
    guided = _single_activation_grad(kind(), x, w)
    torch.testing.assert_close(guided, expected)
    assert (guided >= 0).all() and (guided[x <= 0] == 0).all()


def test_the_same_originals_come_back_after_success_and_after_an_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.SiLU(), nn.Conv2d(2, 2, 1), nn.LeakyReLU(0.1, inplace=True))
    before = _activation_modules(model)
    with guided_activations(model) as count:
        assert count == 2
        assert all(isinstance(m, GuidedActivation) for m in (model[1], model[3]))
    assert _activation_modules(model) == before and model[1] is before[0] and model[3].inplace

    def failing(out: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    calls: list[int] = []
    handle = model[1].register_forward_hook(lambda _m, _i, _o: calls.append(1))
    try:
        guided_backprop(model, torch.rand(1, 3, 4, 4), lambda out: out.sum())
    finally:
        handle.remove()
    assert calls == [1]  # the original's hooks run once per forward, not again in the backward

    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(model, torch.rand(1, 3, 4, 4), failing)
    assert [type(m) for m in model] == [nn.Conv2d, nn.SiLU, nn.Conv2d, nn.LeakyReLU]
    assert model[1] is before[0] and model[3] is before[1]
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_a_model_without_activation_modules_is_an_error() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x))

    with pytest.raises(GuidedBackpropError, match="Functional has no activation module") as info:
        guided_backprop(Functional(), torch.rand(1, 3, 2, 2), lambda out: out.sum())
    assert isinstance(info.value, KitError)
    with pytest.raises(GuidedBackpropError, match="does not depend on the input"):
        guided_backprop(nn.Sequential(nn.ReLU()), torch.rand(1, 3, 2, 2), lambda out: out.sum().detach())
    with pytest.raises(ShapeError, match=r"\(3, 2, 2\)"):
        guided_backprop(nn.Sequential(nn.ReLU()), torch.rand(3, 2, 2), lambda out: out.sum())


def test_guided_gradcam_keeps_the_layout() -> None:
    g_chw = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    cam = np.array([[0.0, 1.0], [0.5, 2.0]], dtype=np.float32)
    out = guided_gradcam(g_chw, cam)
    np.testing.assert_allclose(out, g_chw * cam[None])
    np.testing.assert_allclose(guided_gradcam(g_chw.transpose(1, 2, 0), cam), out.transpose(1, 2, 0))
    with pytest.raises(ShapeError, match=r"\(3, 2, 2\) and \(2, 3\)"):
        guided_gradcam(g_chw, np.zeros((2, 3)))


def test_deprocess_image_matches_pytorch_grad_cam() -> None:
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import deprocess_image as reference

    rng = np.random.default_rng(0)
    img = rng.normal(size=(6, 5, 3)).astype(np.float32)
    out = deprocess_image(img)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, reference(img))
    assert (deprocess_image(np.zeros((2, 2, 3))) == 127).all()  # a flat image sits at mid grey
