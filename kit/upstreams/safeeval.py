"""Arithmetic of a config's ``!!python/object/apply:eval`` value, computed without ``eval``.

detectron2's own ``configs/Base-RetinaNet.yaml`` writes its anchor sizes as a Python expression
behind a tag that PyYAML's unsafe loader hands to ``eval``::

    SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, ...]]"]

That tag runs any code, so :mod:`kit.upstreams.safeyaml` refuses it, except where the expression is plain
arithmetic: numbers, ``+ - * / // % **``, list and tuple displays, comprehensions over those, and
``range``, ``int``, ``float``, ``abs``, ``round``, ``min``, ``max``. It is parsed with :mod:`ast` and
walked here, operator by operator, so the result is the one ``eval`` gives (the same Python
operations on the same numbers), and nothing else can be named: no attribute, no import, no
other call. Every step is counted and integers are kept small, so no expression of the allowed
kind can take long or much memory.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from kit.core.errors import KitError

MAX_CHARS = 2000  # the expression's text
MAX_STEPS = 100_000  # nodes evaluated, comprehension iterations included
MAX_INT_BITS = 256  # integers stay below 2**256 (a power or product is checked before it is computed)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "range": range,
    "int": int,
    "float": float,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}


class ExpressionError(KitError, ValueError):
    """An expression that is not plain arithmetic, or whose arithmetic is refused (too big, x/0)."""


def evaluate(text: str) -> Any:
    """The value of ``text`` as Python's ``eval`` computes it, for arithmetic only (see the module)."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected the expression as text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"the expression is {len(text)} characters long; at most {MAX_CHARS} are read")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as error:
        raise ExpressionError(f"not a Python expression: {error}") from None
    try:
        return _plain(_Evaluator().value(tree.body, {}))
    except (ArithmeticError, TypeError, ValueError) as error:
        if isinstance(error, ExpressionError):
            raise
        raise ExpressionError(f"{_shown(text)} fails: {type(error).__name__}: {error}") from None
    except RecursionError:
        raise ExpressionError(f"{_shown(text)} is nested too deeply") from None


class _Evaluator:
    def __init__(self) -> None:
        self.steps = 0

    def value(self, node: ast.expr, names: dict[str, Any]) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise ExpressionError(f"the expression takes more than {MAX_STEPS} steps; write the values out")
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, (ast.List, ast.Tuple)) and not any(isinstance(e, ast.Starred) for e in node.elts):
            items = [self.value(element, names) for element in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = _number(self.value(node.left, names)), _number(self.value(node.right, names))
            _check_size(node.op, left, right)
            return _number(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](_number(self.value(node.operand, names)))
        if isinstance(node, ast.ListComp):
            return self.comprehension(node, node.generators, names)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
            return self.call(node, node.func.id, names)
        raise ExpressionError(
            f"{_shown(node)} is not plain arithmetic: only numbers, + - * / // % **, lists, "
            f"tuples, list comprehensions and {', '.join(_FUNCTIONS)} are computed; write the value out"
        )

    def comprehension(
        self, node: ast.ListComp, generators: list[ast.comprehension], names: dict[str, Any]
    ) -> list[Any]:
        first, rest = generators[0], generators[1:]
        if first.ifs or first.is_async or not isinstance(first.target, ast.Name):
            raise ExpressionError(f"{_shown(node)}: only 'for NAME in ...' comprehensions are computed")
        out: list[Any] = []
        for item in _iterable(self.value(first.iter, names)):
            scope = {**names, first.target.id: item}
            self.steps += 1
            if rest:
                out += self.comprehension(node, rest, scope)
            else:
                out.append(self.value(node.elt, scope))
        return out

    def call(self, node: ast.Call, function: str, names: dict[str, Any]) -> Any:
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"{_shown(node)}: only positional arguments are computed")
        args = [self.value(arg, names) for arg in node.args]
        if not all(isinstance(a, (int, float, list, tuple, range)) for a in args):
            raise ExpressionError(f"{_shown(node)}: arguments must be numbers or lists")
        if function == "range" and len(range(*args)) > MAX_STEPS:
            raise ExpressionError(f"{_shown(node)} has more than {MAX_STEPS} items")
        result = _FUNCTIONS[function](*args)
        return result if function == "range" else _number(result)


def _shown(node: ast.expr | str) -> str:
    text = node if isinstance(node, str) else ast.unparse(node)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _plain(value: Any) -> Any:
    """The value as a config holds it: numbers, and lists and tuples of them (a range is only
    something to iterate over)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _plain(item)
    elif type(value) not in (int, float):
        raise ExpressionError(f"the expression gives a {type(value).__name__}, not numbers or lists of them")
    return value


def _iterable(value: Any) -> list[Any] | tuple[Any, ...] | range:
    if not isinstance(value, (list, tuple, range)):
        raise ExpressionError(f"a comprehension runs over a list, tuple or range, not {type(value).__name__}")
    return value


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse an integer power or product whose result would exceed MAX_INT_BITS, before computing it."""
    if not (type(left) is int and type(right) is int):
        return
    if isinstance(op, ast.Pow) and right > 0:
        bits = max(left.bit_length() - 1, 0) * right if abs(left) > 1 else 0
    elif isinstance(op, ast.Mult):
        bits = left.bit_length() + right.bit_length()
    else:
        return
    if bits > MAX_INT_BITS:
        raise ExpressionError(f"integer arithmetic beyond 2**{MAX_INT_BITS} is refused")


def _number(value: Any) -> int | float:
    """An int or float within bounds: lists are never repeated or joined by an operator (``[0] *
    10**9``), and a complex result (a fractional power of a negative number) is no config value."""
    if type(value) not in (int, float):
        raise ExpressionError(f"arithmetic is on numbers only, got {type(value).__name__}")
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"integer arithmetic beyond 2**{MAX_INT_BITS} is refused")
    return value
