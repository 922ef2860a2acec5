"""CAM methods: small strategies that turn (activations, gradients) of one layer into maps.

The pipeline is the one of pytorch-grad-cam's ``BaseCAM`` reduced to plain tensors: a method
computes one weight per channel (:meth:`CamMethod.channel_weights`), the map is the weighted sum of
the activation channels followed by a ReLU. A method that is not channel-weight based (LayerCAM,
EigenCAM, ...) overrides :meth:`CamMethod.cam` instead. Every method works on a batch of N maps at
once, one per explained detection, so the engine can chunk detections freely.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from kit.errors import MethodNotFoundError, ShapeError

# pytorch-grad-cam 1.5.7 uses this epsilon in Grad-CAM++'s denominator; we keep it so maps agree.
GRADCAMPP_EPS = 1e-6


class CamMethod(abc.ABC):
    """A CAM method: ``method(activations, gradients) -> maps`` with shapes (N,C,H,W) -> (N,H,W)."""

    name: str = ""

    @abc.abstractmethod
    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Return the (N,C) importance of each activation channel for each of the N targets."""

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Return the (N,H,W) map before the final ReLU; default: sum_c w[n,c] * A[n,c]."""
        weights = self.channel_weights(activations, gradients)
        return torch.einsum("nc,nchw->nhw", weights, activations)

    def __call__(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Return relu(cam) as float32 (N,H,W), on the device of ``activations``."""
        a, g = _as_float32_pair(activations, gradients)
        return torch.relu(self.cam(a, g))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al., ICCV 2017)."""

    name = "gradcam"

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        # Eq. 1: alpha_k^c = 1/Z * sum_i sum_j dy^c / dA^k_ij  (global average pooling of gradients).
        # Eq. 2: L^c = ReLU(sum_k alpha_k^c A^k) is CamMethod.cam + __call__.
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018), as computed by pytorch-grad-cam 1.5.7."""

    name = "gradcampp"

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        # Eq. 19 with the exponential-output assumption, so higher derivatives are powers of g:
        #   a_ij = g_ij^2 / (2 g_ij^2 + sum_ab A_ab * g_ij^3)
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + GRADCAMPP_EPS)
        # a_ij is 0/0 where the gradient is 0; those pixels contribute nothing.
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        # Eq. 9-10: w_k = sum_ij a_ij * ReLU(dY/dA_ij).
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3))


METHODS: dict[str, CamMethod] = {m.name: m for m in (GradCAM(), GradCAMPlusPlus())}


def get_method(name: str) -> CamMethod:
    """Return the method registered as ``name``; raise with the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        valid = ", ".join(sorted(METHODS))
        raise MethodNotFoundError(f"unknown CAM method {name!r}; choose one of: {valid}") from None


def _as_float32_pair(activations: Tensor, gradients: Tensor) -> tuple[Tensor, Tensor]:
    """Check that both are (N,C,H,W) of the same shape; return detached float32 copies, same device."""
    if activations.dim() != 4 or activations.shape != gradients.shape:
        raise ShapeError(
            "activations and gradients must both be (N,C,H,W) with the same shape, got "
            f"{tuple(activations.shape)} and {tuple(gradients.shape)}; for a transformer layer, "
            "reshape its tokens to a feature map first"
        )
    a = activations.detach().to(dtype=torch.float32)
    g = gradients.detach().to(device=a.device, dtype=torch.float32)
    return a, g
