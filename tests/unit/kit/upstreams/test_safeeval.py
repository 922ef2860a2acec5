"""kit.upstreams.safeeval: the arithmetic of detectron2's ``!!python/object/apply:eval`` configs gives what
``eval`` gives, and nothing beyond arithmetic is evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.upstreams.safeeval import MAX_STEPS, ExpressionError, evaluate

# detectron2's configs/Base-RetinaNet.yaml and a project config of the same checkout.
GENUINE = [
    "[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]",
    "[int(x * 0.1 * 640) for x in range(5, 16)]",
    "[(a, b) for a in range(3) for b in [0.5, -1.5e-3]]",
    "(800 // 3, 800 % 7, -2 ** 0.5, abs(-3), round(2.675, 2), min([3, 1]), max(2, 5.0), float(7))",
    "  [1, 2]",
]


@pytest.mark.parametrize("text", GENUINE)
def test_arithmetic_gives_what_eval_gives(text: str) -> None:
    expected = eval(text.strip())  # the texts above, to compare with
    value = evaluate(text)
    assert value == expected and type(value) is type(expected)
    assert repr(value) == repr(expected)  # the same floats, bit for bit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("__import__('os').system('touch {marker}')", "is not plain arithmetic"),
        ("open('{marker}', 'w')", "is not plain arithmetic"),
        ("[c for c in ().__class__.__base__.__subclasses__()]", "is not plain arithmetic"),
        ("(lambda: 1)()", "is not plain arithmetic"),
        ("'text'", "is not plain arithmetic"),
        ("True", "is not plain arithmetic"),
        ("[1, 2][0]", "is not plain arithmetic"),
        ("x", "is not plain arithmetic"),
        ("[x for x in [1] if x]", "only 'for NAME in ...' comprehensions"),
        ("[a for a, b in [(1, 2)]]", "only 'for NAME in ...' comprehensions"),
        ("round(2.5, ndigits=1)", "only positional arguments"),
        ("[0] * 10**9", "arithmetic is on numbers only, got list"),
        ("[1] + [2]", "arithmetic is on numbers only, got list"),
        ("9**9**9", "integer arithmetic beyond 2**256"),
        ("2**200 * 2**100", "integer arithmetic beyond 2**256"),
        ("(-8) ** (1/3)", "arithmetic is on numbers only, got complex"),
        ("10.0 ** 400", "OverflowError"),
        ("1 / 0", "ZeroDivisionError"),
        ("max([])", "ValueError"),
        ("range(10**9)", f"has more than {MAX_STEPS} items"),
        ("range(3)", "gives a range, not numbers"),
        ("[[y for y in range(1000)] for x in range(1000)]", f"more than {MAX_STEPS} steps"),
        ("-" * 1990 + "1", "nested too deeply"),
        ("(" * 300 + "1" + ")" * 300, "not a Python expression"),
        ("1 +", "not a Python expression"),
        ("1" * 2001, "at most 2000 are read"),
    ],
)
def test_anything_else_is_refused_and_nothing_runs(tmp_path: Path, text: str, expected: str) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ExpressionError) as info:
        evaluate(text.replace("{marker}", str(marker)))
    assert expected in str(info.value), str(info.value)
    assert len(str(info.value)) < 400  # a long expression is shown cut short
    assert not marker.exists()
