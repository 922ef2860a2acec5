"""detectron2's yacs config files, read as data: the file and its ``_BASE_`` chain, merged as
fvcore's ``CfgNode.load_yaml_with_base`` merges them, without detectron2 or torch.

detectron2's own ``merge_from_file`` falls back to ``yaml.unsafe_load`` (a config can run code)
and opens ``_BASE_`` through PathManager (a URL is downloaded). Here every file goes through
:func:`kit.upstreams.safeyaml.read_yaml`, and ``_BASE_`` names a local file only:

- relative to the folder of the config that names it (as detectron2 resolves it), else relative
  to the checkout's ``configs/`` (so a config of yours outside the checkout can name
  ``Base-RCNN-FPN.yaml``); an absolute path or ``~/...`` as detectron2 takes it;
- never a URL (``https://``, ``detectron2://``, ``file://``, ...);
- no cycle, at most ``MAX_BASE_DEPTH`` levels of bases and ``MAX_FILES`` files in all (a list of bases
  in each of ten levels would otherwise read a file billions of times).

yacs reads every text value of a config through ``ast.literal_eval``: :func:`literal_problem`
says which values it cannot read without a RecursionError or a blown-up parse, so those are
refused with the key instead of ending in a traceback.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from kit.core.errors import ConfigFileError
from kit.upstreams.safeyaml import read_yaml

BASE_KEY = "_BASE_"
MAX_BASE_DEPTH = 10  # levels of _BASE_ below the config named
MAX_FILES = 32  # genuine chains are 2 or 3 files
MAX_VALUE_CHARS = 10_000  # a text value yacs evaluates as a Python literal


def read_config(path: str | Path, *, checkout: Path) -> dict[str, Any]:
    """The config at ``path`` merged over its ``_BASE_`` files, as a plain dict (no ``_BASE_`` key).

    Raises ConfigFileError naming the file (and the chain that led to it) for anything refused.
    """
    reader = _ChainReader(checkout=checkout)
    data = reader.read(Path(path), chain=())
    check_values(data, name=str(path))
    return data


def merge_a_into_b(a: dict[str, Any], b: dict[str, Any], *, name: str) -> None:
    """fvcore's merge: values of ``a`` overwrite ``b``'s; a mapping merges into a mapping."""
    for key, value in a.items():
        if isinstance(value, dict) and key in b:
            if not isinstance(b[key], dict):
                raise ConfigFileError(
                    f"{name}: cannot inherit key {key!r} from base: the base gives it a "
                    f"{type(b[key]).__name__}, this file a mapping"
                )
            merge_a_into_b(value, b[key], name=name)
        else:
            b[key] = value


def literal_problem(value: str) -> str | None:
    """Why yacs cannot read ``value`` (it tries ``ast.literal_eval`` on it and keeps the text where
    that raises ValueError or SyntaxError), or None where it can."""
    if len(value) > MAX_VALUE_CHARS:
        return f"a text value of {len(value)} characters (at most {MAX_VALUE_CHARS})"
    try:
        ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None  # yacs keeps it as text
    except (RecursionError, MemoryError):
        return "a value nested too deeply to read as a Python literal"
    except TypeError as error:
        return f"a value yacs reads as a Python literal that fails: {error}"
    return None


def check_values(data: dict[str, Any], *, name: str, prefix: str = "") -> None:
    """Keys are text, and every text value is one yacs can read (see :func:`literal_problem`)."""
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigFileError(f"{name}: the key {key!r} under {prefix or 'the top'} is not text")
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            check_values(value, name=name, prefix=f"{full}.")
        elif isinstance(value, str):
            problem = literal_problem(value)
            if problem:
                raise ConfigFileError(f"{name}: {full}: {problem}; write the value as plain YAML")


class _ChainReader:
    """Reads one config and, depth first, the bases it names."""

    def __init__(self, *, checkout: Path) -> None:
        self.checkout = checkout
        self.files = 0

    def read(self, path: Path, *, chain: tuple[Path, ...]) -> dict[str, Any]:
        self.files += 1
        if self.files > MAX_FILES:
            raise ConfigFileError(
                f"{_trail(chain, path)}: more than {MAX_FILES} config files in one _BASE_ tree"
            )
        # expressions: detectron2's RetinaNet base computes its anchors with the eval tag
        data = read_yaml(path, expressions=True, name=_trail(chain, path))
        if not isinstance(data, dict):
            raise ConfigFileError(
                f"{_trail(chain, path)} holds {_kind(data)}, not a mapping of config keys such as "
                "'MODEL: {WEIGHTS: ...}'"
            )
        if BASE_KEY not in data:
            return data
        bases = data.pop(BASE_KEY)
        names = bases if isinstance(bases, list) else [bases]
        if not all(isinstance(base, str) and base for base in names):
            raise ConfigFileError(
                f"{_trail(chain, path)}: {BASE_KEY} must name a config file, or a list of them; got {bases!r}"
            )
        merged: dict[str, Any] = {}
        for base in names:
            merge_a_into_b(self.base(base, path, chain=(*chain, path)), merged, name=str(path))
        merge_a_into_b(data, merged, name=str(path))
        return merged

    def base(self, base: str, including: Path, *, chain: tuple[Path, ...]) -> dict[str, Any]:
        where = f"{_trail(chain[:-1], including)}: {BASE_KEY} {base!r}"
        if "://" in base:
            raise ConfigFileError(
                f"{where} is a URL: configs are read from local files only, never fetched; "
                "download the file and name it by its path"
            )
        path = self.resolve(base, including, where=where)
        resolved = path.resolve()
        if resolved in {p.resolve() for p in chain}:
            raise ConfigFileError(f"{where}: a cycle, {resolved} already includes this file")
        if len(chain) > MAX_BASE_DEPTH:  # chain: the config and the bases above this one
            raise ConfigFileError(f"{where}: _BASE_ files nested more than {MAX_BASE_DEPTH} deep")
        return self.read(path, chain=chain)

    def resolve(self, base: str, including: Path, *, where: str) -> Path:
        name = os.path.expanduser(base) if base.startswith("~") else base
        if os.path.isabs(name):
            candidates = [Path(name)]
        else:  # detectron2: relative to the including file's folder; then the checkout's configs/
            candidates = [Path(os.path.dirname(including)) / name, self.checkout / "configs" / name]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        looked = " or ".join(str(c) for c in candidates)
        raise ConfigFileError(f"{where}: no such file ({looked})")


def _trail(chain: tuple[Path, ...], path: Path) -> str:
    """'a.yaml' or 'a.yaml -> base.yaml -> ...': the config the user named, then the bases to ``path``."""
    return " -> ".join(str(p) for p in (*chain, path))


def _kind(data: Any) -> str:
    return "nothing (an empty file)" if data is None else f"a {type(data).__name__}"
