"""``python hostile_refusals.py LOADER SCRATCH PATH...`` in an upstream checkout: what the safe
loader with the entry point's list of admitted modules (``kit.upstreams.loaders.<LOADER>``) makes
of hostile files, in one process. Prints one JSON object:

- ``files``: each PATH's name and ``refused`` (an UnsafeCheckpointError) or ``loaded``;
- ``classes``, for LOADER ``yolo`` and ``ultralytics``: every nn.Module class of the admitted
  modules (and four of torch.nn) called through a REDUCE, at the top of the file and as a dict's
  value (written to SCRATCH): how many classes, how many files were refused, and the names of
  classes that loaded;
- ``side_effect_imported``: whether a module whose import starts a command (yolov7's
  utils/aws/resume.py) got imported on the way.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

SIDE_EFFECT_MODULE = "utils.aws.resume"


def every_class(allowed: tuple[str, ...], scratch: Path) -> dict[str, Any]:
    """Each admitted nn.Module class as the call of a REDUCE: none may be called."""
    from torch import nn

    from kit.core.errors import UnsafeCheckpointError
    from kit.upstreams.safeload import safe_load

    modules = [importlib.import_module(m) for m in allowed if m != "torch.nn"]
    classes = [c for m in modules for c in vars(m).values()
               if inspect.isclass(c) and issubclass(c, nn.Module) and c.__module__ == m.__name__]  # fmt: skip
    classes += [nn.Linear, nn.Conv2d, nn.Sequential, nn.Upsample]
    refused, loaded = 0, []
    for cls in classes:
        # GLOBAL module name, EMPTY_TUPLE, REDUCE: cls() as the file's call, then as a dict's value.
        body = f"c{cls.__module__}\n{cls.__qualname__}\n".encode()
        for data in (b"\x80\x02" + body + b")R.", b"\x80\x02}X\x01\x00\x00\x00k" + body + b")Rs."):
            scratch.write_bytes(data)
            try:
                safe_load(scratch, allowed_modules=allowed)
                loaded.append(cls.__qualname__)
            except UnsafeCheckpointError:
                refused += 1
    return {"count": len(classes), "refused": refused, "loaded": loaded}


def main(argv: list[str]) -> int:
    loader, scratch, *paths = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    from kit.core.errors import UnsafeCheckpointError
    from kit.upstreams.safeload import safe_load

    allowed: tuple[str, ...] = importlib.import_module(f"kit.upstreams.loaders.{loader}").ALLOWED_MODULES
    files = {}
    for path in paths:
        try:
            safe_load(path, allowed_modules=allowed)
            files[Path(path).name] = "loaded"
        except UnsafeCheckpointError:
            files[Path(path).name] = "refused"
    report = {
        "files": files,
        "classes": every_class(allowed, Path(scratch)) if loader in ("yolo", "ultralytics") else None,
        "side_effect_imported": SIDE_EFFECT_MODULE in sys.modules,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
