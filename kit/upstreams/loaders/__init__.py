"""Loading each upstream's model with its own code, from its checkout: what :func:`kit.load` and
the entry points share.

These modules are the only part of the kit that imports an upstream's code: lazily, inside
functions, from the checkout put first on ``sys.path`` (:func:`use_checkout`), as the entry points
do from the folder they are installed in. Every checkpoint goes through the kit's safe loader
(:func:`kit.upstreams.checkpoints.checkpoint_loader`) with the modules each upstream allows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.core.contract import DEFAULT_METHOD, Adapter
from kit.core.errors import KitError
from kit.core.options import ArgumentError
from kit.upstreams.registry import Family, get_spec

UPSTREAMS_DIR_ENV = "KIT_UPSTREAMS_DIR"  # as scripts.upstream.config: another folder for all checkouts


class CheckoutError(KitError):
    """No checkout of the upstream where one was looked for, or another one's code already imported."""


@dataclass
class Loaded:
    """A model ready to explain: its adapter, the weights as the manifest names them, and the
    settings the manifest records beside the run's own (image size, thresholds, config)."""

    adapter: Adapter
    weights: str
    settings: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # the weights files read (their sha256 is recorded and compared on resume)
    checkout: Path | None = None  # the upstream checkout its code came from (its commit is recorded)
    default_method: str = DEFAULT_METHOD  # explained when no method is named (:func:`family_default`)


def upstreams_dir() -> Path:
    """Folder of the kit's checkouts: ``$KIT_UPSTREAMS_DIR``, else ``upstreams/`` beside ``kit/``."""
    env_dir = os.environ.get(UPSTREAMS_DIR_ENV)
    if env_dir:
        return Path(env_dir).expanduser().resolve()
    return Path(__file__).resolve().parents[3] / "upstreams"  # kit/upstreams/loaders/ -> the repository


def is_checkout(upstream: str, folder: Path) -> bool:
    """Whether ``folder`` holds a checkout of ``upstream`` (its marker files are there)."""
    return all((folder / marker).is_file() for marker in get_spec(upstream).markers)


def find_checkout(upstream: str, checkout: str | Path | None = None) -> Path:
    """The checkout to load ``upstream``'s code from: ``checkout`` if given, else the current
    folder when it is one, else the kit's ``upstreams/<name>``; refused with the fix otherwise."""
    setup = f"set one up with `make setup-{upstream}` (into {upstreams_dir() / upstream}; "
    setup += f"${UPSTREAMS_DIR_ENV} names another folder), or pass checkout= the folder of one"
    if checkout is not None:
        folder = Path(checkout).expanduser().resolve()
        if not is_checkout(upstream, folder):
            missing = [m for m in get_spec(upstream).markers if not (folder / m).is_file()]
            raise CheckoutError(
                f"{folder} is not a {upstream} checkout (it has no {', '.join(missing)}); {setup}"
            )
        return folder
    here = Path.cwd().resolve()
    if is_checkout(upstream, here):
        return here
    folder = upstreams_dir() / upstream
    if is_checkout(upstream, folder):
        return folder
    raise CheckoutError(
        f"no {upstream} checkout: neither the current folder {here} nor {folder} is one; {setup}"
    )


def use_checkout(upstream: str, folder: Path) -> None:
    """Put ``folder`` first on ``sys.path`` so that the upstream's packages import from it.

    Refused when one of those packages is already imported from elsewhere (yolov3 and yolov7
    both call theirs ``models`` and ``utils``): a process holds one checkout of them.
    """
    root = folder.resolve()
    for name in get_spec(upstream).packages:
        module = sys.modules.get(name)
        if module is None:
            continue
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
        if where is None or not Path(where).resolve().is_relative_to(root):
            raise CheckoutError(
                f"the package {name!r} is already imported from {where}, not from the {upstream} checkout "
                f"{root}; one Python process can load one checkout of it: start a new one (restart the "
                "notebook's kernel) to load this upstream"
            )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def upstream_device(select_device: Callable[[str], Any], device: str) -> Any:
    """The upstream's ``select_device(device)``; its AssertionError for a device this machine
    does not have (detect.py's way of saying so) is the user's argument refused, exit 2."""
    try:
        return select_device(device)
    except AssertionError as error:
        raise ArgumentError(f"--device {device}: {error}; pass --device cpu or the index of a GPU") from None


def half_precision(model: Any, device: Any) -> Any:
    """``model.half()`` for ``--half``, refused with the fix on a device that is not CUDA."""
    kind = getattr(device, "type", str(device))
    if kind != "cuda":
        raise KitError(
            f"--half needs a CUDA device (--device 0); this run is on {kind}, where float16 is slower "
            "and less exact than float32. Drop --half."
        )
    return model.half()


def family_default(upstream: str, family: Family) -> str:
    """The method explained when none is named, for a model of ``family`` from ``upstream``: the
    one its spec names (docs/evaluation.md's rule chose it on the family's demo), else Grad-CAM."""
    return get_spec(upstream).default_methods.get(family, DEFAULT_METHOD)
