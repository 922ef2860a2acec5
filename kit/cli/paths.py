"""Paths on the command line mean what the user typed, from where they typed it.

``make cam`` runs ``main_gradcam.py`` inside the upstream's checkout, so a relative path in
``ARGS`` (``--eval data/demo/sample/labels``) would be read from the checkout while ``SOURCE`` and
``WEIGHTS`` are read from where ``make`` was typed. The driver says where that was in
:data:`CALLER_CWD_ENV`; the entry point resolves every path flag the user gave against it
(:func:`resolve_typed`). Without it the process's own folder is the user's, and nothing changes.

:func:`check_sources` lists the images before the model loads, and a missing one names the folder
it was looked for in.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from kit.core.errors import ArgumentError, KitError, SourceNotFoundError
from kit.core.images import list_sources, printable

CALLER_CWD_ENV = "KIT_CALLER_CWD"  # set by `make cam` (scripts/cam/launch.py) for the entry point
DEMO_IMAGES = ("data", "demo", "images")  # written by `make demo` (its training set)
DEMO_SAMPLE = ("data", "demo", "sample", "images")  # written by `make cam`'s offline fallback


def caller_cwd(environ: Mapping[str, str] | None = None) -> Path:
    """The folder the user typed the command in: :data:`CALLER_CWD_ENV`, else this process's."""
    env = os.environ if environ is None else environ
    value = env.get(CALLER_CWD_ENV, "")
    if not value:
        return Path.cwd()
    path = Path(value)
    if not path.is_absolute() or not path.is_dir():
        raise ArgumentError(
            f"{CALLER_CWD_ENV}={printable(value)!r} is not an existing absolute folder; `make cam` sets "
            f"it to the folder it was typed in. Unset it (unset {CALLER_CWD_ENV}) to read paths from here"
        )
    return path


def resolved(value: str, base: Path) -> str:
    """``value`` read from ``base``: a relative path joined to it; absolute paths, ``~`` paths and
    URLs as they are."""
    if not value or "://" in value or value.startswith("~") or Path(value).is_absolute():
        return value
    return str(base / value)


def resolve_typed(
    opt: argparse.Namespace,
    parser: argparse.ArgumentParser,
    *,
    dests: Iterable[str],
    weights: str | None = None,
    base: Path | None = None,
) -> None:
    """Rewrite, in ``opt``, the path flags (``dests``) the user gave (values that are not the
    parser's default) as read from ``base`` (default :func:`caller_cwd`), when that is not this
    process's folder. ``weights`` names the weights flag: a bare name with no such file there
    (``demo``, a release name) is left to the loader."""
    base = caller_cwd() if base is None else base
    if base.resolve() == Path.cwd().resolve():
        return
    for dest in (*dests, *([weights] if weights else [])):
        value = getattr(opt, dest, None)
        if value is None or value == parser.get_default(dest):
            continue
        kept = _weights_kept(value, base) if dest == weights else set()
        if isinstance(value, list):
            new: object = [v if v in kept else resolved(v, base) for v in value]
        else:
            new = value if value in kept else resolved(value, base)
        setattr(opt, dest, new)


def _weights_kept(value: str | Sequence[str], base: Path) -> set[str]:
    """Weights values that are names, not paths: a bare file name with no such file under ``base``
    (``demo``, a release the upstream downloads by name); a path with a folder is always a path."""
    values = [value] if isinstance(value, str) else list(value)
    return {v for v in values if os.sep not in v and "/" not in v and not (base / v).is_file()}


def looked_in(item: str) -> str:
    """' (looked in <folder>)' for a relative path, the folder it was read from; '' otherwise."""
    return "" if Path(item).is_absolute() else f" (looked in {Path.cwd()})"


def check_sources(source: str | Sequence[str], *, flag: str) -> None:
    """List the images of ``source`` (as the run will) before the model loads: a missing one is
    refused (exit 2), naming the flag, the folder looked in and, for the demo's training images
    that only ``make demo`` writes, the sample images beside them."""
    for item in [source] if isinstance(source, str) else list(source):
        try:
            list_sources(item)
        except KitError as error:
            raise SourceNotFoundError(f"{flag}: {error}{looked_in(item)}{_demo_hint(item)}") from None
        except OSError as error:  # a name too long, a folder we may not list, a path through a file
            raise SourceNotFoundError(
                f"{flag}: image source {printable(item)!r} cannot be listed: {error.strerror or error}"
            ) from None


def check_labels(labels: str | None, *, flag: str = "--eval") -> None:
    """Refuse, before the model loads, ground truth that does not exist, naming where it was looked for."""
    if labels is not None and not os.path.lexists(labels):
        raise ArgumentError(
            f"{flag} {printable(labels)}: no such file or folder{looked_in(labels)}; pass a folder of YOLO "
            ".txt labels or a COCO .json"
        )


def _demo_hint(item: str) -> str:
    path = Path(item)
    if tuple(path.parts[-3:]) != DEMO_IMAGES or path.exists():
        return ""
    sample = Path(*path.parts[:-3], *DEMO_SAMPLE)
    made = "" if sample.is_dir() else " (`make cam` without network writes it)"
    return (
        f". {printable(item)} holds the demo detector's training images, made by `make demo` (20 to 30 "
        f"minutes); the README's sample images are {printable(str(sample))}{made}"
    )
