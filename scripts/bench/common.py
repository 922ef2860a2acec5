"""What `make bench`'s driver and its per-upstream workers share: flags, timing, memory, records.

The driver (``scripts/bench/driver.py``) runs one worker process per model with ``worker_arguments``;
every worker parses them with ``worker_parser``, so the two cannot drift apart. A worker prints
progress lines and, last, one line ``RECORDS <json list>`` that the driver collects.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

RANDOM_WEIGHTS = "random (built from the cfg)"


def worker_parser(description: str | None) -> argparse.ArgumentParser:
    """The flags every bench worker takes (the driver passes all of them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--cfg", required=True, help="model cfg of the checkout (random weights)")
    parser.add_argument("--deep", required=True, help="comma-separated deep layer set")
    parser.add_argument("--image", required=True, help="image of the checkout")
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--detections", default="1,10,50")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-slow-above", type=int, default=50, help="seed/pgc only up to this many")
    parser.add_argument("--folder-images", type=int, default=16, help="0 skips the folder throughput")
    parser.add_argument("--layer-sets", default="head,deep,odam")
    parser.add_argument("--baselines", default="seed,pytorch-grad-cam", help="comma list; empty: kit only")
    parser.add_argument("--drise-masks", type=int, default=1000, help="D-RISE's masks per image; 0 skips it")
    return parser


def worker_arguments(
    *, checkout: Path, upstream: str, cfg: str, deep: str, image: str, options: argparse.Namespace
) -> list[str]:
    """The driver's flags for one model's worker (``options``: the driver's parsed flags)."""
    return [
        "--checkout", str(checkout), "--upstream", upstream, "--cfg", cfg, "--deep", deep,
        "--image", image, "--detections", options.detections, "--img-size", str(options.img_size),
        "--repeat", str(options.repeat), "--layer-sets", options.layer_sets,
        "--baselines", options.baselines, "--folder-images", str(options.folder_images),
        "--drise-masks", str(options.drise_masks),
    ]  # fmt: skip


class PeakRSS:
    """Peak resident memory of this process during a block (sampled every 5 ms), in MB."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * 4096 / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    @contextmanager
    def measure(self) -> Iterator[None]:
        self.peak = self.now()
        self._stop.clear()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, self.now())


ODAM_SET = "odam"  # the layer set of the ODAM-style method: the adapter's level layers


def set_layers(adapter: Any, name: str, deep: str) -> dict[str, Any]:
    """A set's layers: the adapter's defaults for ``head``, its level layers for ``odam`` (none
    where it states none: the set is then skipped), the worker's ``--deep`` list otherwise."""
    if name == ODAM_SET:
        levels = odam_levels(adapter)
        return {} if levels is None else adapter.resolve_layers(list(dict.fromkeys(levels)))
    return adapter.resolve_layers(adapter.default_layers() if name == "head" else deep.split(","))


def odam_levels(adapter: Any) -> list[str] | None:
    """The adapter's layer of each head level (``Capabilities.level_layers``), or None."""
    known = adapter.capabilities.level_layers
    if known is None:
        print(f"  {type(adapter).__name__} states no level layers: the odam set is skipped", file=sys.stderr)
        return None
    return list(known.layers)


@dataclass(frozen=True)
class KitStep:
    """One count of detections the kit was just measured at: the baselines run on the same ones."""

    layer_set: str
    n: int
    detections: list[Any]
    plain: float  # seconds of plain inference, the ratio's denominator


def measure_kit(
    records: Records,
    layer_set: str,
    adapter: Any,
    inputs: Any,
    layers: dict[str, Any],
    target: Any,
    args: Any,
) -> Iterator[KitStep]:
    """Plain inference and the kit (Grad-CAM, Grad-CAM++; for the ``odam`` set the ODAM-style
    method, each detection at its own level's layer) for each count of ``detections``.

    Records both, then yields a :class:`KitStep` so the worker can add its baselines on the same
    detections (:func:`measure_baselines`); a count the model does not reach is skipped with a note.
    ``args``: the worker's flags (:func:`worker_arguments`), of which ``detections`` and ``repeat``.
    """
    detections, repeat = args.detections, args.repeat
    import torch

    from kit.core.engine import explain
    from kit.methods.registry import METHODS

    if not layers:
        return
    levels = odam_levels(adapter) if layer_set == ODAM_SET else None
    methods = ("odam",) if levels is not None else ("gradcam", "gradcampp")
    adapter.max_det = None
    with torch.no_grad():  # detect.py's inference: the forward and the upstream's postprocessing
        plain, plain_peak = timed(lambda: adapter.detect(adapter.forward(inputs)), repeat=repeat)
    for n in (int(v) for v in detections.split(",")):
        adapter.max_det = n
        with torch.no_grad():
            dets = adapter.detect(adapter.forward(inputs))
        if len(dets) < n:
            print(f"  only {len(dets)} detections for n={n}; skipped", file=sys.stderr)
            continue
        records.add(layer_set, n, "plain", plain, plain_peak, plain)
        for method in methods:

            def kit_run(method: str = method) -> None:
                explain(
                    forward=lambda: adapter.forward(inputs),
                    detect=adapter.detect,
                    layers=layers,
                    target=target,
                    methods=[METHODS[method]],  # type: ignore[list-item]
                    model=adapter.model,
                    capabilities=adapter.capabilities,
                    levels=levels,
                )

            seconds, peak = timed(kit_run, repeat=repeat)
            records.add(layer_set, n, f"kit-{method}", seconds, peak, plain)
        yield KitStep(layer_set=layer_set, n=n, detections=dets, plain=plain)


def measure_baselines(
    records: Records,
    step: KitStep,
    baselines: set[str],
    *,
    seed: Callable[[], Any],
    grad_cam: Callable[[], tuple[float, float]],
) -> None:
    """The baselines asked for (``--baselines``), on the detections the kit just explained: the
    seeds' algorithm ``seed`` (timed once, without warm-up: it is the slow one) and ``grad_cam``,
    which times pytorch-grad-cam itself (its warm-up and hooks are its own)."""
    if "seed" in baselines:
        seconds, peak = timed(seed, repeat=1, warmup=False)
        records.add(step.layer_set, step.n, "seed", seconds, peak, step.plain)
    if "pytorch-grad-cam" in baselines:
        seconds, peak = grad_cam()
        records.add(step.layer_set, step.n, "pytorch-grad-cam", seconds, peak, step.plain)


def time_grad_cam(
    model: Any, layers: dict[str, Any], inputs: Any, picks: list[tuple[int, int]], score: Callable[..., Any]
) -> tuple[float, float]:
    """pytorch-grad-cam's GradCAM called once per detection, as its users do: ``model`` maps
    ``inputs`` to per-row class scores, ``score(out, row, class_id)`` is a detection's target.
    Timed once without warm-up; its hooks are released after."""
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=model, target_layers=list(layers.values()))

    def run() -> None:
        for row, cls in picks:
            cam(input_tensor=inputs, targets=[lambda out, r=row, c=cls: score(out, r, c)])

    try:
        return timed(run, repeat=1, warmup=False)
    finally:
        cam.activations_and_grads.release()


def measure_folder(
    records: Records,
    *,
    adapter: Any,
    image: Any,
    count: int,
    layer_sets: dict[str, dict[str, Any]],
    target: Any,
    detections: int = 10,
    batch_sizes: Sequence[int] = (1, 8),
) -> None:
    """Images per second explaining a folder of ``count`` images, Grad-CAM, at each batch size.

    The folder is the image and its mirror, each at its own brightness; ``detections`` per image
    (the adapter's ``max_det``). One batch is explained first as a warm-up; no files are written.
    """
    import numpy as np

    from kit.methods.cam import CAM_METHODS, explain_batch

    rng = np.random.default_rng(0)
    folder = [image if i % 2 == 0 else image[:, ::-1] for i in range(count)]
    folder = [np.clip(np.rint(im * rng.uniform(0.8, 1.2)), 0, 255).astype(np.uint8) for im in folder]
    adapter.max_det = detections
    model = records.model
    for layer_set, layers in layer_sets.items():
        if layer_set == ODAM_SET:  # the folder rows are Grad-CAM's
            continue
        for batch_size in batch_sizes:

            def explain(
                images: Sequence[Any], layers: dict[str, Any] = layers, size: int = batch_size
            ) -> None:
                for start in range(0, len(images), size):
                    batch = images[start : start + size]
                    explain_batch(
                        adapter, batch, layers=layers, target=target, methods=[CAM_METHODS["gradcam"]]
                    )

            explain(folder[:batch_size])
            seconds, peak = timed(partial(explain, folder), repeat=1, warmup=False)
            records.add_folder(
                layer_set, f"kit-gradcam-folder-batch{batch_size}", count, detections, seconds, peak
            )
            rate = count / seconds
            print(
                f"  {model} {layer_set} folder of {count} at batch {batch_size}: {rate:.2f} images/s",
                flush=True,
            )


def measure_drise(
    records: Records, *, adapter: Any, image: Any, masks: int, detections: int = 10, batch: int = 16
) -> None:
    """D-RISE's seconds for one image at ``masks`` masks (``batch`` masked images per forward),
    explaining ``detections`` detections, beside plain inference of the same image.

    Timed once without warm-up (the plain forwards before it warm the model up): at 1000 masks it
    is the slow row. Its cost is the masked forwards (preprocess, forward, NMS) and hardly depends
    on the number of detections; the per-mask cost is printed for extrapolating to other counts.
    """
    import torch

    from kit.methods.drise import DRise, DRiseSettings

    adapter.max_det = detections
    inputs, _ = adapter.preprocess([image])
    with torch.no_grad():
        plain, _ = timed(lambda: adapter.detect(adapter.forward(inputs)), repeat=3)
        n = len(adapter.detect(adapter.forward(inputs)))
    drise = DRise(DRiseSettings(masks=masks, batch=batch))
    seconds, peak = timed(lambda: drise.explain_batch(adapter, [image]), repeat=1, warmup=False)
    records.add("image", n, f"kit-drise-{masks}", seconds, peak, plain)
    print(f"  {records.model} D-RISE: {seconds / masks * 1000:.1f} ms per mask", flush=True)


def timed(fn: Callable[[], Any], *, repeat: int, warmup: bool = True) -> tuple[float, float]:
    """Median seconds over ``repeat`` runs (after one warm-up run) and peak RSS in MB."""
    if warmup:
        fn()
    rss = PeakRSS()
    times = []
    with rss.measure():
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), rss.peak


class Records:
    """A worker's records, all with the same schema; each is printed as it is added.

    They are handed to the driver once, by :meth:`emit`; a worker also registers ``emit`` with
    ``atexit`` so that if it dies of an exception, an hour of measurements is not lost to the last.
    """

    def __init__(self, *, upstream: str, model: str, img_size: int, weights: str = RANDOM_WEIGHTS) -> None:
        self.items: list[dict[str, Any]] = []
        self._common = {"upstream": upstream, "model": model, "weights": weights, "img_size": img_size}
        self._emitted = False

    @property
    def model(self) -> str:
        return str(self._common["model"])

    def add(self, layers: str, n: int, method: str, seconds: float, peak: float, plain: float) -> None:
        """One method's time at a layer set and number of detections, beside plain inference."""
        self.items.append(
            {
                **self._common,
                "layers": layers,
                "detections": n,
                "method": method,
                "seconds": round(seconds, 4),
                "ratio_to_plain": round(seconds / plain, 2),
                "peak_mb": round(peak, 1),
            }
        )
        model = self._common["model"]
        print(
            f"  {model} {layers:4} n={n:<3} {method:16} {seconds:8.3f}s  x{seconds / plain:7.1f}", flush=True
        )

    def add_folder(
        self, layer_set: str, method: str, images: int, detections: int, seconds: float, peak: float
    ) -> None:
        """Throughput of explaining a folder of ``images`` images at a layer set."""
        self.items.append(
            {
                **self._common,
                "layers": layer_set,
                "detections": detections,
                "method": method,
                "images": images,
                "seconds": round(seconds, 4),
                "images_per_second": round(images / seconds, 2),
                "peak_mb": round(peak, 1),
            }
        )

    def emit(self) -> None:
        """The line the driver reads: ``RECORDS <json>`` (once)."""
        if not self._emitted:
            self._emitted = True
            print("RECORDS " + json.dumps(self.items), flush=True)
