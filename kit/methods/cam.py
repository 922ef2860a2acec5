"""CAM methods: small strategies that turn (activations, gradients) of one layer into maps.

The pipeline is the one of pytorch-grad-cam's ``BaseCAM`` reduced to plain tensors: a method
computes one weight per channel (:meth:`CamMethod.channel_weights`), the map is the weighted sum of
the activation channels followed by a ReLU. A method that is not channel-weight based (LayerCAM,
EigenCAM, ...) overrides :meth:`CamMethod.cam` instead. Every method works on a batch of N maps at
once, one per explained detection, so the engine can chunk detections freely.

Every formula follows pytorch-grad-cam 1.5.7 (same epsilons, same SVD call), so that the maps
agree with that package's within float32 rounding; ``tests/unit/kit/methods/test_cam.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.engine import DEFAULT_CHUNKS, Chunks, Explanation, MapMethod, OwnLevels, explain
from kit.core.errors import ShapeError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, Target, get_target
from kit.methods.base import NO_JOB, BatchJob, Method, MoreDetections, look_up

# pytorch-grad-cam 1.5.7 uses this epsilon in Grad-CAM++'s denominator; we keep it so maps agree.
GRADCAMPP_EPS = 1e-6
# ... and this one in XGrad-CAM's denominator.
XGRADCAM_EPS = 1e-7


class CamMethod(Method):
    """A CAM method: ``method(activations, gradients) -> maps`` with shapes (N,C,H,W) -> (N,H,W).

    A subclass overrides :meth:`channel_weights` (Grad-CAM family) or :meth:`cam` (pixel-wise and
    projection methods); defining neither is an error at class creation.
    """

    name: str = ""
    # False for methods that ignore the gradients (EigenCAM): their map is the same for every target.
    uses_gradients: bool = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.channel_weights is CamMethod.channel_weights and cls.cam is CamMethod.cam:
            raise TypeError(f"CAM method {cls.__name__} must override channel_weights() or cam()")

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Return the (N,C) importance of each activation channel for each of the N targets."""
        raise NotImplementedError(f"{type(self).__name__} computes its map in cam(), without channel weights")

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

    def explain_batch(
        self, adapter: Adapter, images: Sequence[np.ndarray], job: BatchJob = NO_JOB
    ) -> tuple[Explanation, list[Letterbox]]:
        """One forward for the batch, then every detection at every layer (:func:`explain_batch`)."""
        return explain_batch(
            adapter, images, layers=job.layers, target=job.target, methods=[self], more=job.more
        )


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
        # Eq. 9-10: w_k = sum_ij a_ij * ReLU(g_ij). Only pixels with g > 0 count, where
        # a_ij * g_ij = p^3 / (2 p^2 + sum_a p^3) with p = ReLU(g): one pass over p's powers, in
        # place (the gradient stacks are large), instead of alpha over every pixel and a mask.
        # Where g <= 0 this gives 0/eps = 0, as the package's np.where(g != 0, ...) does, and it
        # never meets the package's inf * 0 where 2 + sum_a * g = 0 for a negative g.
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        p = torch.relu(gradients)
        p2 = p * p
        p3 = p2 * p
        den = p3 * sum_a
        den.add_(p2, alpha=2).add_(GRADCAMPP_EPS)
        return p3.div_(den).sum(dim=(2, 3))


class XGradCAM(CamMethod):
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv 2008.02312)."""

    name = "xgradcam"

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        # w_k = sum_ij (A^k_ij / sum_ab A^k_ab) * dy^c / dA^k_ij: the gradient map weighted by A's share.
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        return (gradients * activations / (sum_a + XGRADCAM_EPS)).sum(dim=(2, 3))


class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al., IEEE TIP 2021): a weight per pixel, not per channel."""

    name = "layercam"

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        # w^k_ij = ReLU(g^k_ij), one weight per pixel;  M = ReLU(sum_k w^k_ij * A^k_ij).
        return (torch.relu(gradients) * activations).sum(dim=1)


class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin, arXiv 2011.08891): the element-wise product of gradients and features."""

    name = "hirescam"

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        # M = ReLU(sum_k g^k (.) A^k): Grad-CAM without averaging the gradients over space.
        return (gradients * activations).sum(dim=1)


class EigenCAM(CamMethod):
    """EigenCAM (Muhammad & Yeasin, IJCNN 2020, arXiv 2008.00299): first principal component of A.

    Gradient-free: the map is the same for every target of an image.
    """

    name = "eigencam"
    uses_gradients = False

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return first_component_projection(activations)


class EigenGradCAM(CamMethod):
    """Eigen-Grad-CAM (pytorch-grad-cam): EigenCAM on the element-wise product of gradients and A."""

    name = "eigengradcam"

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return first_component_projection(gradients * activations)


# The CAM family, by name (every method, D-RISE included: kit.methods.registry.METHODS).
CAM_METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (GradCAM(), GradCAMPlusPlus(), XGradCAM(), LayerCAM(), HiResCAM(), EigenCAM(), EigenGradCAM())
}


def get_cam_method(name: str) -> CamMethod:
    """A CAM method by name (the gradient methods several of which share one engine pass: ``make eval``);
    an unknown name raises with the valid ones."""
    return look_up(CAM_METHODS, name, what="CAM method")


def explain_batch(
    adapter: Adapter,
    images: Sequence[np.ndarray],
    *,
    layers: Mapping[str, nn.Module] | OwnLevels | None = None,
    target: Target | None = None,
    methods: Sequence[MapMethod],
    chunks: Chunks = DEFAULT_CHUNKS,
    more: MoreDetections | None = None,
) -> tuple[Explanation, list[Letterbox]]:
    """One forward for the batch, then every detection at every layer with every method (they share
    the gradients); and each image's letterbox.

    ``layers``: default the adapter's (:meth:`~kit.core.contract.Adapter.default_layers`); an
    :class:`~kit.core.engine.OwnLevels` explains each detection at its own level only; ``target``:
    default the class logit. ``more`` (``--explain-missed``) adds detections explained after the
    kept ones, in the order it gives them.
    """
    batch, letterboxes = adapter.preprocess(images)
    modules = adapter.resolve_layers(adapter.default_layers()) if layers is None else layers

    def detect(output: DetectorOutput) -> list[Detection]:
        kept = adapter.detect(output)
        return kept if more is None else kept + more(output, kept, letterboxes)

    explanation = explain(
        forward=lambda: adapter.forward(batch),
        detect=detect,
        layers=modules,
        target=get_target("class-logit") if target is None else target,
        methods=methods,
        model=adapter.model,
        capabilities=adapter.capabilities,
        chunks=chunks,
    )
    return explanation, letterboxes


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


def first_component_projection(x: Tensor) -> Tensor:
    """Project each sample's pixels (C-vectors) on their first principal component: (N,C,H,W) -> (N,H,W).

    Follows pytorch-grad-cam's ``get_2d_projection`` step by step (NaN -> 0, centre the (HW, C)
    matrix over pixels, project on the first right-singular vector), in float32 NumPy on the CPU.
    The sign of a singular vector is arbitrary; we keep whatever NumPy's LAPACK returns, which is
    what that package returns (no sign correction in 1.5.7's EigenCAM). ``torch.linalg.svd`` picks
    the opposite sign for a sizeable share of inputs, hence NumPy. ``full_matrices=False`` returns
    the same first row as the package's ``full_matrices=True`` without the (HW, HW) matrix U.
    Rows equal to the previous row (the same image explained for several detections) reuse its result.
    """
    batch = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((batch.shape[0], *batch.shape[2:]), dtype=np.float32)
    for n, sample in enumerate(batch):
        if n > 0 and np.array_equal(sample, batch[n - 1], equal_nan=True):
            out[n] = out[n - 1]
            continue
        pixels = np.where(np.isnan(sample), np.float32(0), sample).reshape(sample.shape[0], -1).T
        pixels = pixels - pixels.mean(axis=0)
        _, _, vt = np.linalg.svd(pixels, full_matrices=False)
        out[n] = (pixels @ vt[0]).reshape(sample.shape[1:])
    return torch.from_numpy(out).to(x.device)
