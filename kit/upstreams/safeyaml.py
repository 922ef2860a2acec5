"""Reading a YAML file as data, never as code: every YAML file the kit reads from a user's path.

``yaml.safe_load`` already refuses Python tags, but callers (detectron2's ``merge_from_file``) fall
back to ``yaml.unsafe_load`` when it does, and it leaves other risks open. :func:`read_yaml` is
the one reader, and it returns plain dicts, lists, strings, numbers, booleans and None only:

- the file must be a regular file (not a FIFO or a device) of at most ``max_bytes``, UTF-8 text;
- no tag beyond the plain ones (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!seq``,
  ``!!map``): ``!!python/...``, ``!!binary``, ``!!set``, local ``!tags`` and dates are refused,
  with the line, before anything is built (``expressions=True`` admits detectron2's one use of
  ``!!python/object/apply:eval``, computed as arithmetic by :mod:`kit.upstreams.safeeval`);
- no anchors or aliases (``&a``/``*a``: an alias bomb expands a few lines into billions of nodes);
- at most ``MAX_DEPTH`` levels of nesting (a 100,000-deep ``[[[...]]]`` is refused, not a crash);
- a key given twice in one mapping is refused (PyYAML would silently keep the last).

The parser is PyYAML's pure-Python one (libyaml's C composer recurses without a bound).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kit.core.errors import ConfigFileError
from kit.upstreams import safeeval

MAX_BYTES = 64 << 10  # detectron2's largest config is under 2 kB, upstreams.yaml under 5 kB; the
# pure-Python parser takes about 2 s and 30 MB for 64 kB of the costliest YAML (a long flow list)
MAX_DEPTH = 50
MAX_NUMBER_CHARS = 100  # YAML 1.1's base-60 ints ("1:0:0:...") cost quadratic time in their length
_CORE = "tag:yaml.org,2002:"
PLAIN_TAGS = frozenset(
    _CORE + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)
EVAL_TAG = _CORE + "python/object/apply:eval"
_NODE_KIND = {"seq": SequenceNode, "map": MappingNode}  # every other plain tag is a scalar's


def read_yaml(
    path: str | Path, *, max_bytes: int = MAX_BYTES, expressions: bool = False, name: str | None = None
) -> Any:
    """The data of the YAML file ``path`` (see the module for what is refused, as ConfigFileError);
    ``name``: the file as messages call it (default: ``path``)."""
    name = str(path) if name is None else name
    return load_yaml(read_text(path, max_bytes=max_bytes, name=name), name=name, expressions=expressions)


def read_text(path: str | Path, *, max_bytes: int = MAX_BYTES, name: str | None = None) -> str:
    """The UTF-8 text of the regular file ``path``; no more than ``max_bytes`` are ever read.

    Opened without blocking, then checked with fstat: a FIFO or a device (``/dev/zero``) is
    refused instead of hanging or filling memory.
    """
    name = str(path) if name is None else name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        why = error.strerror if isinstance(error, OSError) else str(error)
        raise ConfigFileError(f"cannot read {name!r}: {why}; pass the path of a YAML file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigFileError(f"{name} is not a regular file; pass the path of a YAML file")
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigFileError(
            f"{name} is larger than {max_bytes} bytes, more than any config; pass the YAML file itself"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigFileError(
            f"{name} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def load_yaml(text: str, *, name: str, expressions: bool = False) -> Any:
    """The data of the YAML document ``text``; ``name`` (the file) is in every message."""
    try:
        loader = (_ExpressionLoader if expressions else _DataLoader)(text)
    except yaml.reader.ReaderError as error:  # checked at once on the whole text
        char = error.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise ConfigFileError(
            f"{name}: the character {shown} (offset {error.position}) is not allowed in YAML; "
            "remove it, or write it as an escape (\\x..) in double quotes"
        ) from None
    loader.name = name  # PyYAML's marks then say 'in "<name>", line N'
    try:
        return loader.get_single_data()
    except ConfigFileError:
        raise
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{name} is not valid YAML: {error}") from None
    finally:
        loader.dispose()


def _where(name: str, node: Node) -> str:
    return f"{name}, line {node.start_mark.line + 1}"


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "sequence"
    return "mapping" if isinstance(node, MappingNode) else "scalar"


class _DataLoader(yaml.SafeLoader):
    """SafeLoader that refuses, with the file and line, what :mod:`kit.upstreams.safeyaml` says it refuses."""

    tags = PLAIN_TAGS

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            kind = "an alias" if isinstance(event, yaml.AliasEvent) else "an anchor"
            raise ConfigFileError(
                f"{self.name}, line {event.start_mark.line + 1}: {kind} (&{event.anchor} / *{event.anchor}): "
                "anchors and aliases are not read (they can expand a few lines into billions of "
                "values); write the values out"
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigFileError(
                    f"{self.name}, line {event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels "
                    "deep; a config is a few levels of mappings and lists"
                )
            node = cast(Node, super().compose_node(parent, index))  # a node event gives a node
        finally:
            self.depth -= 1
        self.check_tag(node)
        return node

    def check_tag(self, node: Node) -> None:
        shown = node.tag.replace(_CORE, "!!", 1)
        if node.tag in PLAIN_TAGS:
            kind = _NODE_KIND.get(node.tag.removeprefix(_CORE), ScalarNode)
            if not isinstance(node, kind):
                raise ConfigFileError(f"{_where(str(self.name), node)}: {shown} is given a {_kind(node)}")
            return
        if node.tag in self.tags:
            return
        if node.tag == _CORE + "timestamp":
            why = f"{node.value!r} reads as a date; quote it to give it as text"
        else:
            why = (
                f"the tag {shown} is not plain data (mappings, lists, text, numbers, true/false, null); "
                "the kit never builds objects or runs code from a YAML file: write the value itself"
            )
        raise ConfigFileError(f"{_where(str(self.name), node)}: {why}")

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """SafeLoader's, with a value its tag cannot read (``!!bool maybe``, ``!!int abc``) refused
        with the line instead of a bare KeyError or ValueError."""
        try:
            return super().construct_object(node, deep=deep)
        except ConfigFileError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as error:
            shown = node.tag.replace(_CORE, "!!", 1)
            what = repr(node.value)[:80] if isinstance(node, ScalarNode) else f"a {_kind(node)}"
            raise ConfigFileError(
                f"{_where(str(self.name), node)}: {what} is no {shown} ({type(error).__name__}: {error})"
            ) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _CORE + "merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:
                continue  # unhashable: SafeLoader refuses it below, with its own message
            if repeated:
                raise ConfigFileError(
                    f"{_where(str(self.name), key_node)}: the key {key!r} is given twice in one mapping; "
                    "keep one (YAML would silently use the last)"
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def construct_number(self, node: ScalarNode) -> int | float:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise ConfigFileError(
                f"{_where(str(self.name), node)}: a number written with {len(node.value)} characters "
                f"(at most {MAX_NUMBER_CHARS} are read); quote it if it is text"
            )
        number: int | float
        if node.tag == _CORE + "int":
            number = self.construct_yaml_int(node)
        else:
            number = self.construct_yaml_float(node)
        return number


_DataLoader.add_constructor(_CORE + "int", _DataLoader.construct_number)
_DataLoader.add_constructor(_CORE + "float", _DataLoader.construct_number)


class _ExpressionLoader(_DataLoader):
    """_DataLoader that computes ``!!python/object/apply:eval ["<arithmetic>"]`` (kit.upstreams.safeeval)."""

    tags = PLAIN_TAGS | {EVAL_TAG}

    def construct_expression(self, node: Node) -> Any:
        if not (
            isinstance(node, SequenceNode)
            and len(node.value) == 1
            and isinstance(node.value[0], ScalarNode)
            and node.value[0].tag == _CORE + "str"
        ):
            raise ConfigFileError(
                f"{_where(str(self.name), node)}: !!python/object/apply:eval takes one expression in "
                'quotes, as in !!python/object/apply:eval ["[x * 2 for x in [32, 64]]"]'
            )
        try:
            return safeeval.evaluate(node.value[0].value)
        except safeeval.ExpressionError as error:
            raise ConfigFileError(f"{_where(str(self.name), node)}: {error}") from None


_ExpressionLoader.add_constructor(EVAL_TAG, _ExpressionLoader.construct_expression)
