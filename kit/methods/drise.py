"""D-RISE (Petsiuk et al., CVPR 2021): black-box saliency for detectors, by random masks.

Every detector the kit loads can be explained this way, whatever its layers: the adapter's own
``preprocess``, ``forward`` and ``detect`` are all it needs. For each image:

1. one unmasked forward gives the detections to explain (the same ones, ids, boxes and scores a
   Grad-CAM run of the same batch gives);
2. ``masks`` random masks (RISE, Petsiuk et al., BMVC 2018, Sec. 3.2): a binary grid of cells of
   ``cell`` px of the image as the model sees it, each cell kept with probability ``p``,
   upsampled bilinearly and shifted by a random offset within a cell, so the edges fall anywhere;
3. each masked image (masked pixels are black, 0, as in RISE) goes through the same forward and
   the model's own NMS, in batches of ``batch`` images;
4. D-RISE Sec. 3.2: the weight of mask i for detection t is the best similarity, over the masked
   image's detections j, of d_t to d_j: IoU(box_t, box_j) x cosine(P_t, P_j) x O_j, with P the
   class-probability vector and O_j the objectness where the model has one (YOLO; the target's
   own objectness is 1 in the paper); 0 when the masked image has no detection;
5. the map is sum_i w_i M_i / (masks x p) (RISE Eq. 6), in the pixels of the model's input; the run
   loop brings it back to the image's pixels and normalizes it, as it does a CAM.

With ``floor`` (``--drise-floor Z``, off by default) the map keeps only the pixels whose mask values
correlate with the detection's weight at ``Z`` standard errors or more (z = Pearson r x sqrt(masks):
under no dependence, z is about standard normal), and shows there the mean-centred sum
sum_i (w_i - mean w) M_i / (masks x p), 0 elsewhere. Without it, a map's background is the noise of
the mask draw, which a reader takes for structure and which keeps two seeds' top 15 % pixels apart
(docs/evaluation.md, "How many masks D-RISE needs"); a detection with no significant pixel gets an
all-zero map (more masks or a larger cell may find one).

One set of masks serves every detection of an image, and the masks depend only on the seed and
the image's size as the model sees it: a run is reproducible whatever its batch sizes and order.
The map's one layer is ``image``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.engine import Explanation
from kit.core.errors import KitError
from kit.core.geometry import Letterbox, boxes_to_original, map_size, resize_picture, scale_box
from kit.core.options import ArgumentError
from kit.core.targets import Target
from kit.methods.base import NO_JOB, BatchJob, Method, Request

NAME = "drise"  # the --method value
LAYER = "image"  # the one layer of a D-RISE map: the image itself
# What the manifest records as the run's target: D-RISE explains the whole detection vector.
TARGET = "detection-similarity"
# The names a caller of the Python API gives the settings (the CLI passes its flags instead).
API_NAMES = {f: f"DRiseSettings.{f}" for f in ("masks", "cell", "p", "seed", "batch", "floor")}
COSINE_EPS = 1e-8


class DRiseError(KitError, ValueError):
    """An image D-RISE cannot explain with the settings given (its cell does not fit)."""


@dataclass(frozen=True)
class DRiseSettings:
    """The D-RISE settings (CLI: ``--drise-masks``, ``--drise-cell``, ``--drise-p``, ``--drise-seed``,
    ``--drise-batch``).

    masks: random masks per image (the paper uses 1000). cell: a grid cell's side in pixels of the
    image as the model sees it (16: a 640 px input has 40 x 40 cells). p: the probability that a
    cell is kept. seed: the masks' random seed. batch: masked images per forward pass (speed and
    memory only; the maps do not depend on it). floor: 0 for the paper's map; Z > 0 keeps only the
    pixels significant at Z standard errors (:meth:`DRiseSums.map`; 4 in ``make eval``).
    """

    masks: int = 1000
    cell: int = 16
    p: float = 0.5
    seed: int = 0
    batch: int = 16
    floor: float = 0.0

    def checked(self, names: Mapping[str, str] = API_NAMES) -> DRiseSettings:
        """These settings, or an ArgumentError naming the bad one as ``names`` calls it."""
        if not _is_int(self.masks) or self.masks < 1:
            raise ArgumentError(f"{names['masks']} must be 1 or more masks, got {self.masks}; e.g. 1000")
        if not _is_int(self.cell) or self.cell < 1:
            raise ArgumentError(
                f"{names['cell']} must be a positive number of pixels, got {self.cell}; e.g. 16"
            )
        if not isinstance(self.p, (int, float)) or math.isnan(self.p) or not 0.0 < self.p < 1.0:
            raise ArgumentError(
                f"{names['p']} must be between 0 and 1, both excluded (the probability a cell is kept), "
                f"got {self.p}; e.g. 0.5"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ArgumentError(f"{names['seed']} must be 0 or more, got {self.seed}")
        if not _is_int(self.batch) or self.batch < 1:
            raise ArgumentError(f"{names['batch']} must be a positive number of images, got {self.batch}")
        if (
            not isinstance(self.floor, (int, float))
            or isinstance(self.floor, bool)
            or not math.isfinite(self.floor)
            or self.floor < 0
        ):
            raise ArgumentError(
                f"{names['floor']} must be 0 (the paper's map) or a number of standard errors above 0, "
                f"got {self.floor}; e.g. 4"
            )
        return self

    def record(self) -> dict[str, Any]:
        """The settings that decide the maps, for the manifest (``batch`` does not: left out; ``floor``
        only when set, so a run of the paper's map records what runs before the floor recorded and
        can be resumed)."""
        values = asdict(self)
        del values["batch"]
        if not self.floor:
            del values["floor"]
        return values


def generate_masks(*, count: int, hw: tuple[int, int], cell: int, p: float, seed: int) -> torch.Tensor:
    """``count`` RISE masks of ``hw`` pixels as float32 (count, h, w) in [0, 1] (RISE Sec. 3.2).

    A grid of ``ceil(h / cell) + 1`` x ``ceil(w / cell) + 1`` cells, each 1 with probability ``p``,
    upsampled bilinearly to ``cell`` px a cell, then cropped at a random offset in ``[0, cell)``
    on each axis. Drawn from ``seed`` alone, mask by mask, so a mask set never depends on how it
    is consumed. (:meth:`DRise.saliency` draws the grids once and renders them batch by batch:
    1000 masks of an 800 x 1333 input would be 4 GB at once.)
    """
    grids, shifts = mask_grids(count=count, hw=hw, cell=cell, p=p, seed=seed)
    return render_masks(grids, shifts, hw=hw, cell=cell)


def mask_grids(
    *, count: int, hw: tuple[int, int], cell: int, p: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of :func:`generate_masks`: (count, 1, rows, cols) binary grids and (count, 2)
    shifts, small whatever the image size."""
    h, w = int(hw[0]), int(hw[1])
    rows, cols = -(-h // cell) + 1, -(-w // cell) + 1
    generator = torch.Generator().manual_seed(seed)
    grids = torch.empty(count, 1, rows, cols)
    shifts = torch.empty(count, 2, dtype=torch.long)
    for k in range(count):  # mask by mask: the first n masks of any count are the same
        grids[k, 0] = (torch.rand(rows, cols, generator=generator) < p).float()
        shifts[k] = torch.randint(0, cell, (2,), generator=generator)
    return grids, shifts


def render_masks(
    grids: torch.Tensor, shifts: torch.Tensor, *, hw: tuple[int, int], cell: int
) -> torch.Tensor:
    """Grids of :func:`mask_grids` as (n, h, w) masks: upsampled, then cropped at their shifts."""
    h, w = int(hw[0]), int(hw[1])
    rows, cols = grids.shape[2:]
    masks = torch.empty(len(grids), h, w)
    for start in range(0, len(grids), 64):  # the upsampled grids of 64 masks at a time
        up = F.interpolate(grids[start : start + 64], size=(rows * cell, cols * cell), mode="bilinear")
        for k in range(up.shape[0]):
            dy, dx = (int(v) for v in shifts[start + k])
            masks[start + k] = up[k, 0, dy : dy + h, dx : dx + w]
    return masks


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), xyxy: (n, m)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def similarity(
    target_boxes: torch.Tensor,
    target_probabilities: torch.Tensor,
    boxes: torch.Tensor,
    probabilities: torch.Tensor,
    objectness: torch.Tensor | None = None,
) -> torch.Tensor:
    """D-RISE Eq. 2 for every (target t, detection j): IoU x cosine(P_t, P_j) x O_j, (n, m).

    Without ``objectness`` (detectors that have none) the factor is 1, as is the target's own.
    """
    iou = box_iou(target_boxes, boxes)
    t = F.normalize(target_probabilities, dim=1, eps=COSINE_EPS)
    d = F.normalize(probabilities, dim=1, eps=COSINE_EPS)
    score = iou * (t @ d.T)
    return score if objectness is None else score * objectness[None, :]


class DRise(Method):
    """D-RISE as a :class:`kit.methods.base.Method`: black-box, no layers, no target score."""

    name = NAME
    settings_type: Optional[type] = DRiseSettings
    explains_candidates = False  # a candidate is not a detection of the masked images' forwards

    def __init__(self, settings: DRiseSettings | None = None) -> None:
        self.settings = (settings or DRiseSettings()).checked()

    def __repr__(self) -> str:
        return f"DRise({self.settings})"

    def configured(self, settings: object | None) -> DRise:
        """D-RISE with ``settings`` (default :class:`DRiseSettings`), checked."""
        if settings is not None and not isinstance(settings, DRiseSettings):
            raise ArgumentError(
                f"D-RISE's settings are a DRiseSettings(masks=..., cell=..., p=..., seed=..., batch=..., "
                "floor=...), "
                f"got {type(settings).__name__}"
            )
        return DRise((settings or DRiseSettings()).checked())

    def layers(self, requested: Sequence[str]) -> list[str] | None:
        return [LAYER]

    def check_request(self, request: Request) -> None:
        """Refuse what D-RISE has no use for: layers, fusion, a target score."""
        layers, names = request.layers, request.names
        if [str(layer) for layer in layers] not in ([], [LAYER]):
            raise ArgumentError(
                f"{names['layers']} does not go with D-RISE: it explains the image itself, its one layer is "
                f"'{LAYER}'; leave {names['layers']} out"
            )
        if request.fuse:
            raise ArgumentError(
                f"{names['fuse']} fuses the maps of several layers; D-RISE has one map per detection "
                f"(layer '{LAYER}'); leave {names['fuse']} out"
            )
        if request.target != "class-logit" or request.target_class is not None:
            raise ArgumentError(
                f"{names['target']} and {names['target_class']} do not go with D-RISE: it explains the whole "
                "detection (its box, class probabilities and objectness), not one score; leave them out"
            )

    def check_input_side(self, side: int, *, names: Mapping[str, str]) -> None:
        """Refuse a longest input side (``names['size']``) smaller than a cell (``names['cell']``)."""
        cell = self.settings.cell
        if side and cell > side:
            raise ArgumentError(
                f"{names['cell']} {cell} is larger than the image the model sees ({names['size']} {side}): "
                f"the masks could not cover any image; pass {names['cell']} {side} or less"
            )

    def recorded_target(self, target: Target) -> str:
        return TARGET  # the whole detection vector, whatever target the run names

    def record(self) -> dict[str, Any]:
        return {"drise": self.settings.record()}

    def resolve_layers(self, adapter: Adapter, names: Sequence[str]) -> dict[str, nn.Module]:
        return {}  # black-box: no layer is hooked

    def explain_batch(
        self, adapter: Adapter, images: Sequence[np.ndarray], job: BatchJob = NO_JOB
    ) -> tuple[Explanation, list[Letterbox]]:
        """One unmasked forward for the batch (its detections), then each image's masks.

        The maps are ``cams[NAME][LAYER]``: (n, h, w) at the network input's size, as the run loop
        takes a CAM (:func:`kit.run.runner.to_image_result`); no detection lacks one. The job's
        ``layers`` and ``target`` are not used; ``more`` is refused (:attr:`explains_candidates`).
        """
        if job.more is not None:
            raise DRiseError("D-RISE explains kept detections only, not pre-NMS candidates")
        batch, letterboxes = adapter.preprocess(images)
        with torch.no_grad():
            output = adapter.forward(batch)
            detections = adapter.detect(output)
            probabilities = (
                output.class_probabilities(detections).float().cpu()
                if detections
                else torch.zeros(0, len(adapter.names))
            )
        input_hw = letterboxes[0].input_hw if letterboxes else (1, 1)
        maps = torch.zeros(len(detections), *input_hw)
        for index, (image, letterbox) in enumerate(zip(images, letterboxes)):
            mine = [k for k, d in enumerate(detections) if d.image_index == index]
            if not mine:
                continue  # nothing to explain: no masked forward at all
            boxes = boxes_to_original(
                np.array([detections[k].box_xyxy for k in mine]).reshape(-1, 4), letterbox
            )
            top, left, height, width = letterbox.content
            maps[mine, top : top + height, left : left + width] = self.saliency(
                adapter,
                image,
                boxes=torch.as_tensor(boxes, dtype=torch.float32),
                probabilities=probabilities[mine],
                hw=(height, width),
            )
        explanation = Explanation(
            detections=detections,
            output=output,
            cams={NAME: {LAYER: maps}},
            no_gradient={LAYER: torch.zeros(len(detections), dtype=torch.bool)},
        )
        return explanation, letterboxes

    def saliency(
        self,
        adapter: Adapter,
        image: np.ndarray,
        *,
        boxes: torch.Tensor,
        probabilities: torch.Tensor,
        hw: tuple[int, int],
    ) -> torch.Tensor:
        """The D-RISE maps (n, h, w) of n detections of one image, given their boxes in the image's
        pixels and class probabilities; ``hw`` is the image's size as the model sees it (the
        masks' resolution).

        An image larger than its maps' bounded size (:func:`kit.core.geometry.map_size`) is masked scaled
        down to that size, its boxes with it: the model sees it at ``hw`` either way, and the
        masked copies then take memory that does not grow with the image's pixels.
        """
        s = self.settings
        stats = None
        for grown in self.sums(adapter, image, boxes=boxes, probabilities=probabilities, hw=hw):
            stats = grown  # the same sums, grown in place batch by batch
        assert stats is not None  # masks >= 1: at least one batch
        return stats.map(p=s.p, floor=s.floor).reshape(len(boxes), *hw)

    def sums(
        self,
        adapter: Adapter,
        image: np.ndarray,
        *,
        boxes: torch.Tensor,
        probabilities: torch.Tensor,
        hw: tuple[int, int],
    ) -> Iterator[DRiseSums]:
        """:meth:`saliency`'s sums (:class:`DRiseSums`) after each batch of masks: the map of the
        first k masks is theirs (the first k masks of any count are the same), so the estimate's
        convergence can be read as it grows. The object yielded is the same, grown in place."""
        s = self.settings
        height, width = hw
        if s.cell > min(height, width):
            raise DRiseError(
                f"the D-RISE cell of {s.cell} px (--drise-cell) is larger than the image the model sees "
                f"({width} x {height} px, width x height): the masks cannot cover it; pass a cell of "
                f"{min(height, width)} px or less"
            )
        grids, shifts = mask_grids(count=s.masks, hw=hw, cell=s.cell, p=s.p, seed=s.seed)
        original_hw = map_size(image.shape[:2])
        if original_hw != image.shape[:2]:
            scale = torch.tensor(scale_box([1.0, 1.0, 1.0, 1.0], image.shape[:2], original_hw))
            boxes = boxes * scale.to(boxes.dtype)
            image = resize_picture(image, original_hw)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).float()
        stats = DRiseSums.empty(len(boxes), height * width)
        for start in range(0, s.masks, s.batch):  # masks rendered a batch at a time: memory stays flat
            chunk = render_masks(
                grids[start : start + s.batch], shifts[start : start + s.batch], hw=hw, cell=s.cell
            )
            # Each mask to the image's own pixels (bilinear; the identity at the same size, skipped),
            # then onto the image, the whole batch at once: black where masked.
            full = chunk
            if tuple(original_hw) != (height, width):
                full = F.interpolate(chunk[:, None], size=original_hw, mode="bilinear")[:, 0]
            masked = _apply_masks(pixels, full)
            weights = self._weights(adapter, masked, boxes=boxes, probabilities=probabilities)
            stats.add(weights, chunk.reshape(len(chunk), -1))
            yield stats

    def _weights(
        self,
        adapter: Adapter,
        masked: Sequence[np.ndarray],
        *,
        boxes: torch.Tensor,
        probabilities: torch.Tensor,
    ) -> torch.Tensor:
        """(n targets, len(masked)): each target's best similarity among each masked image's detections."""
        batch, letterboxes = adapter.preprocess(masked)
        with torch.no_grad():
            output = adapter.forward(batch)
            found = adapter.detect(output)
            found_probabilities = output.class_probabilities(found).float().cpu() if found else None
            objectness = (
                output.objectness(found).float().cpu() if found and adapter.capabilities.objectness else None
            )
        weights = torch.zeros(len(boxes), len(masked))
        for index, letterbox in enumerate(letterboxes):
            mine = [k for k, d in enumerate(found) if d.image_index == index]
            if not mine or found_probabilities is None:
                continue  # no detection in this masked image: its weight stays 0
            found_boxes = boxes_to_original(_boxes(found, mine), letterbox)
            score = similarity(
                boxes,
                probabilities,
                torch.as_tensor(found_boxes, dtype=torch.float32),
                found_probabilities[mine],
                None if objectness is None else objectness[mine],
            )
            weights[:, index] = score.max(dim=1).values.clamp(min=0)
        return weights


@dataclass
class DRiseSums:
    """The running sums of D-RISE for n detections over k masks of P pixels: enough for the paper's
    map (RISE Eq. 6) and for each pixel's significance, the z of the Pearson correlation between the
    mask's value at the pixel and the detection's weight. The (n, P) sum is float32, as the maps
    (its size grows with detections x pixels); the small ones are float64, and the centred sums
    are taken in float64.

    weighted: sum_i w_i M_i (n, P); weight, weight_sq: sum_i w_i, sum_i w_i^2 (n,); mask,
    mask_sq: sum_i M_i, sum_i M_i^2 (P,); count: k.
    """

    weighted: torch.Tensor
    weight: torch.Tensor
    weight_sq: torch.Tensor
    mask: torch.Tensor
    mask_sq: torch.Tensor
    count: int = 0

    @classmethod
    def empty(cls, detections: int, pixels: int) -> DRiseSums:
        zeros = torch.zeros
        return cls(
            zeros(detections, pixels),
            zeros(detections, dtype=torch.float64),
            zeros(detections, dtype=torch.float64),
            zeros(pixels, dtype=torch.float64),
            zeros(pixels, dtype=torch.float64),
        )

    def add(self, weights: torch.Tensor, masks: torch.Tensor) -> None:
        """Add a batch: ``weights`` (n, b) of ``masks`` (b, P); the float64 sums a mask at a time, so
        that no float64 copy of the batch is made (P is up to the maps' bounded size)."""
        self.weighted += weights.float() @ masks.float()  # sum_i w_i M_i (RISE Eq. 6)
        w = weights.double()
        self.weight += w.sum(dim=1)
        self.weight_sq += (w * w).sum(dim=1)
        for mask in masks:
            row = mask.double()
            self.mask += row
            self.mask_sq += row.square_()
        self.count += masks.shape[0]

    def z(self, rows: slice = slice(None)) -> torch.Tensor:
        """(n, P): each pixel's z = r x sqrt(count), r the correlation across masks of its mask value
        with the detection's weight; 0 where either never varies (no evidence either way). ``rows``:
        these detections only."""
        return self._z(rows, self._centred(rows), self._mask_spread())

    def map(self, *, p: float, floor: float = 0.0) -> torch.Tensor:
        """(n, P) float32: the paper's map ``sum_i w_i M_i / (count x p)`` (floor 0), or (floor > 0)
        the mean-centred ``sum_i (w_i - mean w) M_i / (count x p)`` where z >= floor, 0 elsewhere
        (a few detections at a time: the float64 work stays small whatever their number)."""
        if floor <= 0:
            return self.weighted / (self.count * p)
        out = torch.zeros_like(self.weighted)
        mask_spread = self._mask_spread()
        for start in range(0, len(self.weight), FLOOR_ROWS):
            rows = slice(start, start + FLOOR_ROWS)
            centred = self._centred(rows)  # z's sign is its sign: z >= floor > 0 keeps positive pixels only
            kept = self._z(rows, centred, mask_spread) >= floor
            out[rows] = torch.where(kept, centred / (self.count * p), torch.zeros_like(centred)).float()
        return out

    def _centred(self, rows: slice) -> torch.Tensor:
        """(r, P) float64: sum_i (w_i - mean w) M_i, the covariance sum of weight and mask value."""
        mean = (self.weight[rows] / self.count)[:, None]
        return self.weighted[rows].double() - mean * self.mask[None, :]

    def _mask_spread(self) -> torch.Tensor:
        """(P,) float64: sqrt(sum_i (M_i - mean M)^2) at each pixel."""
        mean = self.mask / self.count
        return (self.mask_sq - self.count * mean**2).clamp(min=0).sqrt()

    def _z(self, rows: slice, centred: torch.Tensor, mask_spread: torch.Tensor) -> torch.Tensor:
        """:meth:`z` of ``rows`` from their :meth:`_centred` sums and the :meth:`_mask_spread`."""
        w_mean = self.weight[rows] / self.count
        w_spread = (self.weight_sq[rows] - self.count * w_mean**2).clamp(min=0).sqrt()
        scale = w_spread[:, None] * mask_spread[None, :]
        r = torch.where(scale > 1e-12, centred / scale.clamp(min=1e-12), torch.zeros_like(centred))
        return r * math.sqrt(self.count)


FLOOR_ROWS = 1  # detections whose significance is computed at once (a few float64 rows x pixels each)

APPLY_MB = 64.0  # masks applied to the image this many megabytes of float32 pixels at a time


def _apply_masks(pixels: torch.Tensor, masks: torch.Tensor) -> list[np.ndarray]:
    """The image ``pixels`` (h, w, 3) float under each mask (n, h, w), rounded to uint8: a few masks
    at a time (within APPLY_MB), not one by one, nor the whole batch of a large image at once."""
    per = max(1, int(APPLY_MB * 2**20 // (4 * pixels.numel())))
    out: list[np.ndarray] = []
    for start in range(0, len(masks), per):
        out += list((pixels[None] * masks[start : start + per, ..., None]).round_().to(torch.uint8).numpy())
    return out


def _boxes(detections: Sequence[Detection], picked: Sequence[int]) -> np.ndarray:
    return np.array([detections[k].box_xyxy for k in picked], dtype=np.float64).reshape(-1, 4)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
