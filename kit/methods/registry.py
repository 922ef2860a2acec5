"""Every explanation method by its ``--method`` name: the CAM family, ODAM and D-RISE, one plain dict."""

from __future__ import annotations

from kit.methods.base import Method, look_up
from kit.methods.cam import CAM_METHODS
from kit.methods.drise import DRise
from kit.methods.odam import Odam

METHODS: dict[str, Method] = {**CAM_METHODS, Odam.name: Odam(), DRise.name: DRise()}


def get_method(name: str) -> Method:
    """The method registered as ``name`` (with its default settings: :meth:`Method.configured`);
    an unknown name raises with the valid ones."""
    return look_up(METHODS, name, what="method")
