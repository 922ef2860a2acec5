"""The randomization check by module order: which modules a toy net re-initializes, and that the
trained model is never touched."""

from __future__ import annotations

import torch
from torch import nn

from kit.evaluation.randomization import (
    cascade_starts,
    module_names,
    module_order,
    randomize,
    randomized_copy,
)


class Toy(nn.Module):
    """Defined in one order, run in another: the order is the forward's, not the definition's."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(4, 2, 1)
        self.neck = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.stem(x)))


def trained_toy() -> Toy:
    torch.manual_seed(1)
    toy = Toy()
    with torch.no_grad():
        for p in toy.parameters():
            p.add_(3.0)  # far from any initialization
        toy.neck[1].running_mean.fill_(5.0)
    return toy.eval()


def test_module_order_follows_the_forward() -> None:
    toy = trained_toy()
    order = module_order(toy, lambda: toy(torch.zeros(1, 3, 8, 8)))
    assert order.parameterized == ["stem", "neck.0", "neck.1", "head"]
    assert "unused" not in order.finished
    assert order.finished["neck"] > order.finished["neck.2"]  # a container finishes after its parts
    assert not any(m._forward_hooks for m in toy.modules())


def test_bottom_up_takes_the_layer_and_all_before_it_top_down_the_rest() -> None:
    toy = trained_toy()
    order = module_order(toy, lambda: toy(torch.zeros(1, 3, 8, 8)))
    (neck,) = module_names(toy, [toy.neck])
    assert order.bottom_up([neck]) == ["stem", "neck.0", "neck.1"]
    assert order.bottom_up(["stem"]) == ["stem"]
    starts = cascade_starts(order, head_after=[neck], fractions=(0.5, 0.0))
    assert starts == {"head": 3, "50%": 2, "0%": 0}
    assert order.top_down(starts["head"]) == ["head"]
    assert order.top_down(starts["50%"]) == ["neck.1", "head"]


def test_randomized_copy_resets_only_the_named_modules_and_leaves_the_trained_model() -> None:
    toy = trained_toy()
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    copied, model, kept = randomized_copy(toy, toy, ["stem", "neck.1"], seed=0)
    assert copied is model and model is not toy and kept == []
    for key, value in toy.state_dict().items():
        assert torch.equal(value, before[key]), key
    after = model.state_dict()
    assert not torch.equal(after["stem.weight"], before["stem.weight"])
    assert torch.equal(after["neck.1.running_mean"], torch.zeros(4))
    assert torch.equal(after["neck.1.weight"], torch.ones(4))
    assert torch.equal(after["neck.0.weight"], before["neck.0.weight"])
    assert torch.equal(after["head.weight"], before["head.weight"])


def test_randomize_is_seeded_and_reports_what_it_cannot_reset() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))

    first, second = trained_toy(), trained_toy()
    first.add_module("scale", Scale())
    assert randomize(first, ["stem", "scale"], seed=3) == ["scale"]
    randomize(second, ["stem"], seed=3)
    assert torch.equal(first.stem.weight, second.stem.weight)


def test_randomized_copy_of_an_adapter_finds_its_model() -> None:
    class Holder:
        def __init__(self, model: nn.Module) -> None:
            self.model = model

    toy = trained_toy()
    holder = Holder(toy)
    copied, model, _ = randomized_copy(holder, toy, ["head"], seed=0)
    assert copied.model is model and holder.model is toy
    assert not torch.equal(model.head.weight, toy.head.weight)
