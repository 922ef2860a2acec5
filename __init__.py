"""Not the kit package (that is the ``kit/`` folder beside this file): the guard of a clone of this
repository that Python finds as ``kit``.

A working folder that holds a clone named ``kit`` hides the installed kit from ``import kit``: without
this file Python takes the clone for an empty namespace package and the README's snippet fails with
"module 'kit' has no attribute 'load'". With it, ``import kit`` there runs this file, which loads the
installed kit in its place and says which folder hid it; where no kit is installed, it says what to do.
It never runs when the kit is imported normally.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec, PathFinder

_HERE = os.path.dirname(os.path.abspath(__file__))


def _installed_spec() -> ModuleSpec | None:
    """The spec of a kit package elsewhere (installed, or on sys.path past this clone), or None."""
    parent = os.path.dirname(_HERE)
    for finder in sys.meta_path:
        if finder is PathFinder:
            path = [p for p in sys.path if os.path.abspath(p or os.curdir) != parent]
            spec = PathFinder.find_spec(__name__, path)
        else:
            find = getattr(finder, "find_spec", None)
            spec = find(__name__, None) if find is not None else None
        if spec is not None and spec.loader is not None and spec.origin not in (None, __file__):
            return spec
    return None


def _load_installed() -> None:
    spec = _installed_spec()
    if spec is None or spec.loader is None:
        raise ImportError(
            f"'import kit' found {_HERE}, a clone of the kit's repository (your working folder holds it "
            "under the name 'kit'), not the kit package, and no kit is installed: run Python inside the "
            f"clone (cd {_HERE}), or install it (make setup-yolov7 there, or pip install -e {_HERE})"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module  # the import statement returns what sys.modules holds
    spec.loader.exec_module(module)
    sys.stderr.write(
        f"kit: warning: the folder {_HERE} (a clone of the kit's repository named 'kit' in your working "
        f"folder) hides the installed kit; using the installed one, {spec.origin}. Run Python from "
        "another folder or rename the clone to silence this.\n"
    )


if __name__ == "kit":
    _load_installed()
