"""Shared CLI pieces: --half is refused off CUDA with the fix, and converts the model on CUDA."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kit.cli import half_precision
from kit.errors import KitError


def test_half_is_refused_on_the_cpu_with_the_fix() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(KitError, match=r"--half needs a CUDA device.*on cpu.*Drop --half"):
        half_precision(model, torch.device("cpu"))
    assert model.weight.dtype == torch.float32  # nothing changed


def test_half_converts_the_model_on_cuda() -> None:
    model = half_precision(nn.Linear(2, 2), SimpleNamespace(type="cuda"))
    assert model.weight.dtype == torch.float16
