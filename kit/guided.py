"""Guided backpropagation and guided Grad-CAM (Springenberg et al. 2015; Selvaraju et al. 2017, Sec. 3).

Guided backpropagation is the gradient of a score w.r.t. the input pixels in which every ReLU lets
a gradient through only where its input was positive *and* the incoming gradient is positive
(Springenberg et al., ICLR 2015 workshop, arXiv 1412.6806, Fig. 1). Guided Grad-CAM multiplies that
fine-grained but class-agnostic picture with the coarse, class-discriminative CAM.

Activations other than ReLU. pytorch-grad-cam's ``GuidedBackpropReLUModel`` replaces ``nn.ReLU``
modules only, so on a YOLO network (SiLU, LeakyReLU, Hardswish, Mish) it computes a plain
gradient. Here every activation module of a type in ``activations`` is guided by one rule:

    grad_in = ReLU(grad_out) * f'(x) * [x > 0]

the activation's own slope ``f'(x)``, where the input is positive and the incoming gradient is
positive, and nothing elsewhere. For ReLU this is exactly the original rule (f' = 1 for x > 0).
For LeakyReLU it drops the negative-side leak, for SiLU, Hardswish and Mish it keeps their slope
on the positive side (always > 0 there), so the result stays a non-negative "positive evidence"
signal. Activations applied as functions (``torch.relu``, ``F.relu_``, detectron2's blocks) are not
modules and cannot be swapped: they back-propagate as usual. Add custom activation classes (e.g.
yolov7's export-friendly ``models.common.SiLU``) through ``activations``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kit.errors import KitError, ShapeError

GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
)


class GuidedBackpropError(KitError):
    """Guided backpropagation cannot run on this model or score (no activation modules, no gradient)."""


class _GuidedFunction(torch.autograd.Function):
    """``f(x)`` forward; ``ReLU(grad_out) * f'(x) * [x > 0]`` backward, with f any elementwise module."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, activation: nn.Module) -> Tensor:
        ctx.activation = activation
        ctx.save_for_backward(x)
        # An in-place activation would overwrite the input saved for the backward pass.
        return activation(x.clone() if getattr(activation, "inplace", False) else x)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            # forward(), not __call__: the module's hooks already ran once, in the forward pass.
            y = ctx.activation.forward(leaf.clone())
            # Vector-Jacobian product of an elementwise f: ReLU(grad_out) * f'(x).
            (grad_in,) = torch.autograd.grad(y, leaf, grad_outputs=grad_out.clamp(min=0))
        return grad_in * (x > 0).to(grad_in.dtype), None


class GuidedActivation(nn.Module):
    """Stands in for an activation module inside :func:`guided_activations`."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.original = original

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = _GuidedFunction.apply(x, self.original)
        return out


@contextmanager
def guided_activations(
    model: nn.Module, *, activations: tuple[type[nn.Module], ...] = GUIDED_ACTIVATIONS
) -> Iterator[int]:
    """Swap every activation module of the given types for its guided version during the block.

    Yields the number of modules swapped. The original module objects are put back on exit, also
    on error, so flags such as ``inplace`` and any hooks on them survive.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):
                if isinstance(child, activations) and not isinstance(child, GuidedActivation):
                    parent._modules[name] = GuidedActivation(child)
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


def guided_backprop(
    model: nn.Module,
    inputs: Tensor,
    score_fn: Callable[[Any], Tensor],
    *,
    activations: tuple[type[nn.Module], ...] = GUIDED_ACTIVATIONS,
) -> Tensor:
    """Guided-backpropagation gradient of ``score_fn(model(inputs))`` w.r.t. ``inputs``: (B,C,H,W).

    ``score_fn`` maps the model output to the score(s) to explain; several scores are summed,
    so with one score per image each image gets the gradient of its own score (keep the model in
    eval mode so that images do not interact through batch norm). Parameters get no ``.grad``.
    """
    if inputs.dim() != 4:
        raise ShapeError(f"expected a (B, C, H, W) batch of images, got shape {tuple(inputs.shape)}")
    x = inputs.detach().clone().requires_grad_(True)
    with guided_activations(model, activations=activations) as count, torch.enable_grad():
        if count == 0:
            names = ", ".join(t.__name__ for t in activations)
            raise GuidedBackpropError(
                f"{type(model).__name__} has no activation module of the types {names}; guided "
                "backpropagation would be a plain gradient. Pass its activation classes as activations="
            )
        score = score_fn(model(x))
        if not isinstance(score, Tensor) or not score.requires_grad:
            raise GuidedBackpropError(
                "score_fn returned a value that does not depend on the input through autograd; "
                "return a tensor computed from the model output (no .item(), no detach)"
            )
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad


def guided_gradcam(guided: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3): ``guided * cam`` per pixel, float32.

    ``guided`` is one image's guided-backpropagation gradient, (3, H, W) or (H, W, 3); ``cam`` the
    (H, W) map at the same resolution. The result keeps the layout of ``guided``; pass it to
    :func:`deprocess_image` for display. When both layouts fit (H = 3), (3, H, W) is assumed.
    """
    g = np.asarray(guided, dtype=np.float32)
    c = np.asarray(cam, dtype=np.float32)
    if c.ndim == 2 and g.ndim == 3:
        if g.shape[0] == 3 and g.shape[1:] == c.shape:
            return g * c[None]
        if g.shape[2] == 3 and g.shape[:2] == c.shape:
            return g * c[:, :, None]
    raise ShapeError(
        f"expected guided (3, H, W) or (H, W, 3) and cam (H, W) of the same H, W, got {g.shape} and "
        f"{c.shape}; resize the CAM to the input size first"
    )


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """A gradient image as uint8 for display, as pytorch-grad-cam's (after keras-grad-cam).

    Standardise, scale the standard deviation to 0.1 around 0.5, clip to [0, 1], times 255.
    """
    x = np.asarray(img)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    x = x - np.mean(x)
    x = x / (np.std(x) + 1e-5)
    x = np.clip(x * 0.1 + 0.5, 0, 1)
    return (x * 255).astype(np.uint8)
