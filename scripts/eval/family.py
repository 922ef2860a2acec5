"""The detector `make eval` measures, for any upstream: loaded as ``kit.load`` loads it.

``--upstream`` names the family and ``--weights`` (default ``demo``) its checkpoint; ``demo``
resolves through the upstream spec's demo stem (kit/upstreams/registry.py), as ``make cam``'s
``--weights demo`` does. The images are the shapes demo's held-out split (drawn when missing), the
same for every family, so every family's demo is measured on the same pictures.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kit.core.contract import Adapter
from kit.upstreams.registry import SPECS
from scripts.demo import shapes
from scripts.upstream.config import REPO_ROOT


def standard_errors(text: str) -> float:
    """An argparse type: a significance floor, 0 or a finite number of standard errors above it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected standard errors, e.g. 4, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (no floor) or a finite number above it, got {text!r}")
    return value


def count(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least`` (anything else: argparse's usage
    error, exit 2, naming the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {least} or more, got {value}")
        return value

    return parse


def add_family_flags(parser: argparse.ArgumentParser, *, images: int) -> None:
    """The flags that say which detector and which images: shared by `make eval` and the D-RISE
    convergence study."""
    parser.add_argument("--upstream", choices=tuple(SPECS), default="yolov7", help="the detector family")
    parser.add_argument(
        "--weights", default="demo", help="checkpoint (default demo: the family's demo detector)"
    )
    parser.add_argument(
        "--checkout", type=Path, help="the upstream's checkout (default: the kit's upstreams/<name>)"
    )
    parser.add_argument("--config-file", help="detectron2: the config (default: the demo's or the spec's)")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument(
        "--images", type=count(1), default=images, help="evaluation images (drawn if missing)"
    )
    parser.add_argument("--conf-thres", type=float, help="score threshold (default: the upstream's)")
    parser.add_argument("--threads", type=count(1), default=2)


def load_adapter(args: argparse.Namespace) -> Adapter:
    """The family's adapter on the CPU, loaded by :func:`kit.load` (a bad name, file or checkpoint
    raises a KitError that says what to pass)."""
    import kit

    torch.set_num_threads(args.threads)
    options: dict[str, Any] = {}
    if args.conf_thres is not None:
        options["conf_thres"] = args.conf_thres
    if args.config_file is not None:
        options["config_file"] = args.config_file
    explainer = kit.load(args.upstream, args.weights, checkout=args.checkout, device="cpu", **options)
    adapter: Adapter = explainer.adapter
    return adapter


def eval_paths(data_dir: Path, count: int) -> list[Path]:
    """The first ``count`` images of the held-out shapes split, drawn where fewer are there."""
    if len(list((data_dir / "images").glob("eval_*.png"))) < count:
        shapes.write_split(data_dir, count=count, split="eval")
    return sorted((data_dir / "images").glob("eval_*.png"))[:count]
