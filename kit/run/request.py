"""One run's settings: :class:`ExplainRequest`, declared once and checked once.

The Python API (:meth:`kit.api.Explainer.explain` and ``run``) builds a request from its keywords
(:meth:`ExplainRequest.from_keywords`), the entry points from their flags (:mod:`kit.cli.flags`);
either way every value is checked here, when the request is made, before anything is loaded or
read, and an error names the setting as that caller spelled it (``max_image_pixels``... as a
keyword, ``--max-image-pixels`` as a flag: ``names``). What needs the loaded model (that a layer
exists, that the detector has an objectness or lists its candidates) is checked when the request
meets the model (:meth:`kit.api.Explainer.explain`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from kit.core.contract import DEFAULT_METHOD
from kit.core.errors import ArgumentError
from kit.core.images import ImageLimits
from kit.core.options import check_positive
from kit.core.targets import CLASS_TARGETS, get_target
from kit.evaluation.evaluate import DEFAULT_CURVES, DEFAULT_STEPS
from kit.evaluation.missed import check_request as check_missed_request
from kit.methods import drise as _drise
from kit.methods.base import Method, Request
from kit.methods.drise import DRiseSettings
from kit.methods.registry import get_method
from kit.run.distributed import DEFAULT_WAIT_MINUTES, check_wait

PathLike = Union[str, Path]
Layers = Union[str, Sequence[Union[str, int]], None]

# How the Python API spells a setting where its keyword alone would read badly in an error; every
# other setting is spelled as its keyword. A nested setting is ``<field>.<its field>``.
PYTHON_NAMES: dict[str, str] = {
    "labels": "the labels",
    "fuse": "fuse=True",
    **{f"drise.{f}": name for f, name in _drise.API_NAMES.items()},
    "image_limits.pixels": "ImageLimits.pixels",
    "image_limits.bytes": "ImageLimits.bytes",
}
# The keywords Explainer.explain takes; run takes RUN_KEYWORDS (every field but ``names`` and
# ``exist_ok``: run writes into the folder it is given).
EXPLAIN_KEYWORDS = (
    "method",
    "target",
    "target_class",
    "layers",
    "fuse",
    "batch_size",
    "drise",
    "image_limits",
)


@dataclass(frozen=True)
class ExplainRequest:
    """Every setting of one explanation run, checked when made (an :class:`ArgumentError` naming
    the bad one as ``names`` spells it).

    method: a CAM method (``kit.methods.cam.METHODS``: gradcam, gradcampp, layercam, ...), or
        ``"drise"``: D-RISE (:mod:`kit.methods.drise`), black-box, by random masks; its one layer is
        ``"image"``, and ``target``, ``target_class``, ``layers`` and ``fuse`` do not apply. None
        (the default): the detector's own default (:meth:`resolved`): the method docs/evaluation.md's
        rule chose for its family (:attr:`kit.api.Explainer.default_method`), Grad-CAM when ``layers`` are
        named; checked as Grad-CAM until the detector is known.
    target: the score each map explains: ``class-logit``, ``class-prob``, ``score`` (the
        detection's class); ``box-x1``, ``box-y1``, ``box-x2``, ``box-y2`` (a coordinate of its
        decoded box, input pixels) or ``box`` (the four maps, each normalized, element-wise max);
        ``objectness`` (YOLO only).
    target_class: with a class target, that class (a name or an id) is read at each detection's
        row or proposal instead of the detected class: "why this and not that".
    layers: layer indices or module names (a list, or ``"102,103,104"``); default (empty): the
        layers feeding the head. Held as a tuple of names.
    fuse: also give each detection its layers fused into one map, under ``"fused"``.
    batch_size: images per forward pass.
    drise: with ``method="drise"``, its settings (:class:`DRiseSettings`); default ``DRiseSettings()``.
    image_limits: the largest image read (:class:`ImageLimits`); held as one, default ``ImageLimits()``.
    labels: the images' ground truth (a folder of YOLO ``<stem>.txt`` or a COCO ``.json``): PG,
        EBPG and deletion/insertion into ``eval.json``, ``eval_curves`` curves of ``eval_steps`` steps.
    explain_missed: with ``labels``, explain each ground-truth object no detection matched.
    resume: go on with the run in the folder; overwrite: replace the run in it (not both).
    audit: after the run (and the evaluation), ``audit.json`` and its table, before ``index.html``.
    exist_ok: the run writes into the folder as named (the command line's ``--exist-ok``; Python
        always does).
    dist_timeout: under torchrun, the minutes to wait for every process to join.
    names: how the caller spells each setting in errors (field name, or ``drise.masks``...
        for a nested one -> spelling); unnamed ones as :data:`PYTHON_NAMES` or the field's name.
    """

    method: str | None = None
    target: str = "class-logit"
    target_class: str | int | None = None
    layers: Layers = ()
    fuse: bool = False
    batch_size: int = 1
    drise: DRiseSettings | None = None
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    labels: PathLike | None = None
    eval_curves: int = DEFAULT_CURVES
    eval_steps: int = DEFAULT_STEPS
    explain_missed: bool = False
    resume: bool = False
    overwrite: bool = False
    audit: bool = False
    exist_ok: bool = True
    dist_timeout: float = DEFAULT_WAIT_MINUTES
    names: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self._layer_names()))
        object.__setattr__(self, "image_limits", self._checked_limits())
        self._check_choices()
        self._check_run()
        if self.drise is not None:
            self.drise.checked(self._nested("drise", DRiseSettings))
        self.configured_method().check_request(
            Request(
                layers=self.layer_list,
                fuse=self.fuse,
                target=self.target,
                target_class=self.target_class,
                names={k: self.spelled(k) for k in ("layers", "fuse", "target", "target_class")},
            )
        )

    @classmethod
    def from_keywords(
        cls, keywords: Mapping[str, Any], *, allowed: Sequence[str] | None = None
    ) -> ExplainRequest:
        """The request of the Python API's keywords (``allowed``: those the caller takes, default
        :data:`RUN_KEYWORDS`); an unknown keyword is a TypeError naming it and the known ones, as Python's."""
        known = allowed if allowed is not None else RUN_KEYWORDS
        unknown = sorted(set(keywords) - set(known))
        if unknown:
            raise TypeError(
                f"unexpected keyword argument(s) {', '.join(unknown)}; the settings are {', '.join(known)}"
            )
        drise = keywords.get("drise")
        method = DEFAULT_METHOD if keywords.get("method") is None else keywords["method"]
        if drise is not None and get_method(method).settings_type is not type(drise):
            raise ArgumentError(
                f"drise= holds D-RISE's settings; it goes with method='drise', not {method!r}"
            )
        return cls(**keywords)

    def configured_method(self) -> Method:
        """The method with its settings (``drise``: D-RISE's, for the method that takes them; the
        command line always has them, from its flags' defaults)."""
        method = get_method(self._method_or_default)
        return method.configured(self.drise if method.settings_type is not None else None)

    @property
    def _method_or_default(self) -> str:
        """The method named, or Grad-CAM's name to check the others against until the detector's
        own default is known (:meth:`resolved`)."""
        return DEFAULT_METHOD if self.method is None else self.method

    def resolved(self, default_method: str) -> ExplainRequest:
        """This request with its method named: as given, else the detector's ``default_method``
        when no layers are named (its family's choice: docs/evaluation.md), else Grad-CAM (named
        layers are a CAM's; a family's default such as ODAM picks its own)."""
        if self.method is not None:
            return self
        return replace(self, method=DEFAULT_METHOD if self.layers else default_method)

    @property
    def layer_list(self) -> list[str]:
        """The layers asked for, as names; empty: the adapter's default."""
        return [str(layer) for layer in self.layers or ()]

    @property
    def eval_key(self) -> dict[str, Any] | None:
        """What an image's measurement depends on, compared on resume; None without labels."""
        if self.labels is None:
            return None
        return {"labels": str(self.labels), "curves": self.eval_curves, "steps": self.eval_steps}

    def spelled(self, name: str) -> str:
        """How the caller spells the setting ``name`` (a field, or ``drise.masks``...)."""
        return self.names.get(name) or PYTHON_NAMES.get(name, name)

    def _nested(self, prefix: str, kind: type) -> dict[str, str]:
        return {f.name: self.spelled(f"{prefix}.{f.name}") for f in fields(kind)}

    def _layer_names(self) -> list[str]:
        layers = self.layers
        if layers is None:
            return []
        if isinstance(layers, str):
            return parse_layers(layers, flag=self.spelled("layers"))
        chosen = [str(layer) for layer in layers]
        if len(set(chosen)) != len(chosen):
            raise ArgumentError(
                f"{self.spelled('layers')} {chosen} name a layer more than once; give each layer once"
            )
        return chosen

    def _checked_limits(self) -> ImageLimits:
        limits: object = self.image_limits
        if limits is None:  # the keyword's default, as explain and run document it
            limits = ImageLimits()
        if not isinstance(limits, ImageLimits):
            raise ArgumentError(
                f"{self.spelled('image_limits')} must be a kit.core.images.ImageLimits(pixels=..., "
                f"bytes=...), got {type(limits).__name__}"
            )
        return limits.checked(self._nested("image_limits", ImageLimits))

    def _check_choices(self) -> None:
        """The method, the target and the class: names the kit knows, in a combination that works."""
        get_method(self._method_or_default)
        get_target(self.target)
        check_positive(self.spelled("batch_size"), self.batch_size, what="images")
        if self.target_class is not None and self.target not in CLASS_TARGETS:
            raise ArgumentError(
                f"{self.spelled('target_class')} goes with a class target ({', '.join(CLASS_TARGETS)}), "
                f"not {self.spelled('target')} {self.target}"
            )

    def _check_run(self) -> None:
        """The run folder's and the evaluation's settings."""
        if self.eval_curves < 0:
            raise ArgumentError(
                f"{self.spelled('eval_curves')} must be 0 (no deletion/insertion curves) or more, "
                f"got {self.eval_curves}"
            )
        check_positive(self.spelled("eval_steps"), self.eval_steps, what="steps")
        if self.overwrite and (self.resume or not self.exist_ok):
            overwrite, exist_ok, resume = (self.spelled(k) for k in ("overwrite", "exist_ok", "resume"))
            if "exist_ok" not in self.names:  # the Python API always writes into out_dir as named
                raise ArgumentError(
                    f"{overwrite} replaces the run in out_dir and {resume} goes on with it: pass one of them"
                )
            raise ArgumentError(
                f"{overwrite} replaces the run in the folder {exist_ok} writes into: pass it with "
                f"{exist_ok}, and without {resume} (which goes on with that run instead)"
            )
        check_wait(self.dist_timeout, flag=self.spelled("dist_timeout"))
        if self.explain_missed:
            check_missed_request(
                labels=self.labels,
                target_class=self.target_class,
                method=get_method(self._method_or_default),
                names={k: self.spelled(k) for k in ("explain_missed", "labels", "target_class", "method")},
            )


def parse_layers(value: str, *, flag: str = "--target-layers") -> list[str]:
    """'102, 103,104' -> ['102', '103', '104']; empty or blank -> [] (the adapter's default).

    Refused with the fix, naming ``flag``: an empty entry ('102,,103', ','), a layer given twice,
    and a negative index (Python's -1 would be the head itself, not a layer feeding it).
    """
    if not value.strip():
        return []
    parts = [part.strip() for part in value.split(",")]
    example = "give comma-separated layer indices or module names such as 102,103,104"
    if not all(parts):
        raise ArgumentError(
            f"{flag} {value!r} has an empty entry; {example}, or leave the "
            f"{'flag' if flag.startswith('--') else 'keyword'} out for the default"
        )
    for part in parts:
        if part.startswith("-") and part[1:].isdigit():
            raise ArgumentError(
                f"{flag}: layer {part} is negative; indices count from 0 (a negative index "
                f"would count back from the head, -1 being the head itself); {example}"
            )
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        raise ArgumentError(f"{flag} {value!r} names {', '.join(repeated)} more than once; {example}")
    return parts


RUN_KEYWORDS = tuple(f.name for f in fields(ExplainRequest) if f.name not in ("names", "exist_ok"))
