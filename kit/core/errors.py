"""Exception types of the kit.

Every error a user can cause has its own type, derived from :class:`KitError`, so entry points can
catch ``KitError`` and print the message without a traceback. Where a builtin type fits the meaning
(a missing file, a bad value) the error derives from it too, so ``except FileNotFoundError`` and
``except ValueError`` keep working. Messages name the bad value and say what to do.
"""

from __future__ import annotations

from pathlib import Path


class KitError(Exception):
    """Base class of every error raised on purpose by the kit."""


class ArgumentError(KitError, ValueError):
    """A setting refused before anything is loaded (a flag, a keyword, an option of :func:`kit.load`);
    the message names it as the caller spelled it, and the fix."""


class MethodNotFoundError(KitError, ValueError):
    """A method name that is not in ``kit.methods.registry.METHODS`` (or a CAM method name not in
    ``kit.methods.cam.CAM_METHODS``)."""


class ShapeError(KitError, ValueError):
    """An array or tensor whose shape does not fit the operation."""


class GeometryError(KitError, ValueError):
    """Letterbox or box geometry that cannot describe an image (e.g. content outside the input)."""


class SourceNotFoundError(KitError, FileNotFoundError):
    """An image source (file, folder or glob pattern) that matches no file."""


class ImageReadError(KitError):
    """An image file that is missing, empty, or not decodable by OpenCV."""


class CheckpointNotFoundError(KitError, FileNotFoundError):
    """A checkpoint path that does not exist."""


class CheckpointError(KitError):
    """A checkpoint file that exists but cannot be read as a checkpoint."""


class UnsafeCheckpointError(KitError):
    """A checkpoint that needs Python globals outside the allowlist to load."""


class DownloadError(KitError):
    """A file that could not be downloaded (network, HTTP status, interrupted transfer)."""


class ChecksumError(DownloadError):
    """A downloaded file whose SHA-256 differs from the expected one."""


class OutputError(KitError, ValueError):
    """A run-folder request that cannot be written as asked (e.g. a clashing manifest key)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``out_dir`` holds the manifest of the images done so far."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(str(out_dir))
        self.out_dir = out_dir


class ConfigFileError(KitError, ValueError):
    """A config file refused: not plain YAML data (a tag that builds objects or runs code, an alias,
    too big or too deep), or a detectron2 ``_BASE_`` that is not a local file."""
