"""detectron2: the model built from its config with detectron2's own ``build_model``, its weights
read by ``DetectionCheckpointer`` through the kit's safe loader, explained with the kit's
detectron2 adapter (Faster R-CNN C4/FPN, RetinaNet)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kit.core.errors import CheckpointError, CheckpointNotFoundError, ConfigFileError, KitError
from kit.core.options import ArgumentError, check_fraction, check_max_det
from kit.upstreams import demo as kit_demo
from kit.upstreams.checkpoints import checkpoint_loader, describe, short_repr
from kit.upstreams.loaders import Loaded, family_default
from kit.upstreams.loaders.detectron2_config import literal_problem, read_config
from kit.upstreams.registry import DETECTRON2_CONFIG, Family

LOG = logging.getLogger("kit")

# The modules whose classes a checkpoint may rebuild: none. Model-zoo .pkl files are dicts of numpy
# arrays and .pth files (DetectionCheckpointer.save) dicts of tensors and plain values.
ALLOWED_MODULES: tuple[str, ...] = ()
DEFAULT_CONFIG = DETECTRON2_CONFIG
DEFAULT_CONF_THRES = 0.5  # demo.py's --confidence-threshold


def config_path(config_file: str | Path, checkout: Path) -> Path:
    """The config file as given when it exists, else relative to the checkout.

    A URL (detectron2 would download it), a LazyConfig ``.py`` file (Python: its code would run)
    and a file that does not exist are refused here, before anything is read.
    """
    text = str(config_file)
    if "://" in text:
        raise ArgumentError(
            f"--config-file {text} is a URL: configs are read from local files only, never fetched; "
            "download it and pass its path"
        )
    given = Path(config_file)
    path = given if given.is_file() or given.is_absolute() else checkout / given
    if path.suffix.lower() == ".py":
        raise ArgumentError(
            f"--config-file {text} is a Python file (a LazyConfig): its code would run, and the kit "
            "builds detectron2 models from yacs YAML configs only; pass a .yaml config such as "
            f"{DEFAULT_CONFIG}"
        )
    if not path.is_file():
        raise KitError(
            f"config file not found: {config_file}; pass --config-file with a path such as "
            f"{DEFAULT_CONFIG} (relative to the checkout)"
        )
    return path


def merge_config(cfg: Any, data: dict[str, Any], filename: str) -> None:
    """detectron2's ``CfgNode.merge_from_file`` after its loading step: ``data`` (the file and its
    bases, read by :func:`kit.upstreams.loaders.detectron2_config.read_config`) merged into ``cfg``, an old
    VERSION upgraded as detectron2 upgrades it (detectron2/config/config.py)."""
    from detectron2.config import CfgNode
    from detectron2.config.compat import downgrade_config, guess_version, upgrade_config

    loaded = CfgNode(data)
    version = loaded.get("VERSION", None)
    if version is None:
        version = guess_version(loaded, filename)
    if type(version) is not int or not 0 <= version <= cfg.VERSION:
        raise ConfigFileError(
            f"{filename}: VERSION {version!r} is not a config version of this detectron2 "
            f"(0 to {cfg.VERSION}); drop the key or write {cfg.VERSION}"
        )
    if version == cfg.VERSION:
        cfg.merge_from_other_cfg(loaded)
        return
    LOG.warning("config %s is v%d: upgraded to v%d as detectron2 does", filename, version, cfg.VERSION)
    old = downgrade_config(cfg, to_version=version)
    old.merge_from_other_cfg(loaded)
    new = upgrade_config(old)
    cfg.clear()
    cfg.update(new)


def check_opts(opts: Sequence[str]) -> None:
    """``KEY VALUE`` pairs whose values yacs can read (it runs ``ast.literal_eval`` on each)."""
    if isinstance(opts, str):
        raise ArgumentError(f"opts is a list of KEY VALUE items, e.g. ['MODEL.DEVICE', 'cpu'], not {opts!r}")
    if len(opts) % 2:
        raise ArgumentError(f"--opts takes KEY VALUE pairs, got an odd number of items: {list(opts)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        if not isinstance(key, str) or not key:
            raise ArgumentError(f"--opts: the key {key!r} is not a config key such as MODEL.DEVICE")
        problem = literal_problem(value) if isinstance(value, str) else None
        if problem:
            raise ArgumentError(f"--opts {key}: {problem}; pass plain text or a short Python literal")


def setup_cfg(
    config_file: str | Path, opts: Sequence[str], conf_thres: float, *, checkout: Path, device: str | None
) -> Any:
    """demo.py's setup_cfg: the config file, then ``opts``, then the confidence threshold.

    The file is read as data (:mod:`kit.upstreams.loaders.detectron2_config`), never with detectron2's
    ``merge_from_file``, which falls back to unsafe YAML and fetches URL bases.
    """
    import torch
    from detectron2.config import get_cfg

    config = config_path(config_file, checkout)
    data = read_config(config, checkout=checkout)
    check_opts(opts)
    cfg = get_cfg()
    # yacs says "Non-existent config key", a type mismatch, a bad value with these exceptions.
    refused = (KeyError, ValueError, TypeError, AssertionError)
    try:
        merge_config(cfg, data, str(config))
    except ConfigFileError:
        raise
    except refused as error:
        raise ConfigFileError(f"--config-file {config_file}: {error}") from None
    try:
        cfg.merge_from_list(list(opts))
    except refused as error:
        raise ArgumentError(f"--opts {' '.join(map(str, opts))}: {error}") from None
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = conf_thres
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = conf_thres
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = conf_thres
    if device is not None:
        cfg.MODEL.DEVICE = device
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        LOG.info("no CUDA device: running on the CPU (pass --opts MODEL.DEVICE cpu to say so)")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def check_checkpoint(data: Any, path: Path) -> None:
    """What DetectionCheckpointer reads: a dict of weights, or one under 'model' ('blobs' in a .pkl,
    'model_state' in a pycls .pyth).

    Anything else (a lone module, a list, a dict of settings without weights) is named for what it
    is, instead of an AttributeError deep in fvcore.
    """
    import numpy as np
    import torch

    fix = (
        "pass a detectron2 checkpoint: a model-zoo .pkl or a .pth written by its trainer "
        "(a dict with 'model')"
    )
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds {describe(data)}, not a checkpoint dict; {fix}")
    key = next((k for k in ("model", "blobs", "model_state") if k in data), None)  # model_state: pycls
    weights = data if key is None else data[key]
    where = f"{path}" if key is None else f"{path}: its {key!r}"
    if not isinstance(weights, dict):
        raise CheckpointError(f"{where} holds {describe(weights)}, not a dict of weights; {fix}")
    if not any(isinstance(v, (torch.Tensor, np.ndarray)) for v in weights.values()):
        what = describe(weights)
        raise CheckpointError(f"{where} holds {what} and no weights (tensors or arrays); {fix}")
    # The checkpointer matches weights by name (str methods) and converts arrays with
    # torch.from_numpy: anything else stopped the run with a ValueError or TypeError (exit 3).
    for name, value in weights.items():
        numeric = isinstance(value, torch.Tensor) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "biufc"
        )
        if type(name) is not str or not numeric:
            key = short_repr(name) if isinstance(name, (str, int, float)) else describe(name)
            raise CheckpointError(
                f"{where} holds {describe(value)} under {key}; a detectron2 checkpoint maps weight "
                f"names to tensors or numeric arrays; {fix}"
            )


def safe_checkpointer(model: Any, *, trust: bool) -> Any:
    """DetectionCheckpointer reading every file (.pkl, .pth, pycls .pyth) with the kit's safe loader."""

    from detectron2.checkpoint import DetectionCheckpointer

    load = checkpoint_loader(allowed_modules=ALLOWED_MODULES, trust=trust, validate=check_checkpoint)

    class SafeCheckpointer(DetectionCheckpointer):
        def _load_file(self, filename: str) -> Any:
            if filename.endswith(".pyth"):  # pycls: upstream reads it with a bare torch.load
                data = load(filename, "cpu")  # checked: a dict of weights under 'model_state'
                state = {
                    k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")
                }
                return {"model": state, "__author__": "pycls", "matching_heuristics": True}
            if not filename.endswith(".pkl"):
                return super()._load_file(filename)  # .pth via _torch_load below
            data = load(filename, "cpu")
            # The rest is DetectionCheckpointer._load_file's handling of .pkl files, unchanged.
            if "model" in data and "__author__" in data:
                return data
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

        def _torch_load(self, f: str) -> Any:
            return load(f, "cpu")

    return SafeCheckpointer(model)


def named_weights(weights: str | Path | None, opts: Sequence[str]) -> str | None:
    """The weights asked for: ``weights``, else the last ``MODEL.WEIGHTS`` of ``opts`` (yacs merges
    the pairs in order), else None (the config's)."""
    if weights is not None:
        return str(weights)
    given = [value for key, value in zip(opts[0::2], opts[1::2]) if key == "MODEL.WEIGHTS"]
    return str(given[-1]) if given else None


def demo_request(
    weights: str | Path | None, opts: Sequence[str], config_file: str | Path, *, checkout: Path
) -> tuple[str | Path | None, str | Path, tuple[str, ...] | None]:
    """``weights``, ``config_file`` and the class names to load.

    Weights named as a demo (``demo``, ``demo-retinanet``: :data:`kit.upstreams.demo.DETECTRON2_DEMOS`;
    a file of that name in the working folder wins) are the kept demo's, built from its own config
    (the default config is replaced by it; another one is refused) and named with its record's
    classes. A config that is a kept demo's (``--config-file kit/upstreams/demo/<stem>.yaml``) gets
    that demo's class names. Anything else is returned as given, without names.
    """
    name = named_weights(weights, opts)
    if name in kit_demo.DETECTRON2_DEMOS and not Path(name).is_file():
        demo = kit_demo.demo_weights(stem=kit_demo.DETECTRON2_DEMOS[name])
        own = kit_demo.DEMO_DIR / demo.cfg
        default = str(config_file) == DEFAULT_CONFIG  # make cam's and the entry point's default
        if not default and config_path(config_file, checkout).resolve() not in (
            own.resolve(),
            (checkout / DEFAULT_CONFIG).resolve(),
        ):
            raise ArgumentError(
                f"--config-file {config_file}: the weights {name!r} are the kit's demo detector, built "
                f"from its own config {own}; drop --config-file (or pass that one)"
            )
        return demo.weights, own, demo.names
    config = config_path(config_file, checkout).resolve()
    for stem in kit_demo.DETECTRON2_DEMOS.values():
        record = kit_demo.DEMO_DIR / f"{stem}.json"
        if config == (kit_demo.DEMO_DIR / f"{stem}.yaml").resolve() and record.is_file():
            return weights, config_file, kit_demo.demo_weights(stem=stem).names
    return weights, config_file, None


def load(
    checkout: Path,
    weights: str | Path | None,
    *,
    device: str | None = None,
    trust_checkpoint: bool = False,
    config_file: str | Path = DEFAULT_CONFIG,
    opts: Sequence[str] = (),
    conf_thres: float = DEFAULT_CONF_THRES,
    max_det: int | None = None,
) -> Loaded:
    """A Faster R-CNN or RetinaNet from ``config_file`` (as given, else relative to ``checkout``),
    ``opts`` (``KEY VALUE`` pairs), then ``weights`` (None: the config's ``MODEL.WEIGHTS``)."""
    check_fraction("conf_thres", conf_thres)
    check_max_det(max_det, flag="max_det")
    check_opts(opts)
    weights, config_file, demo_names = demo_request(weights, opts, config_file, checkout=checkout)
    if weights is not None:
        opts = [*opts, "MODEL.WEIGHTS", str(weights)]
    cfg = setup_cfg(config_file, opts, conf_thres, checkout=checkout, device=device)
    path = str(cfg.MODEL.WEIGHTS)
    if not Path(path).is_file():
        raise CheckpointNotFoundError(
            f"weights file not found: {path or '(MODEL.WEIGHTS is empty)'}. Pass a local checkpoint with "
            "--opts MODEL.WEIGHTS PATH (or WEIGHTS=PATH with make cam)."
        )

    import detectron2.data.transforms as T
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model
    from detectron2.modeling.poolers import assign_boxes_to_levels

    from kit.adapters.detectron2 import Detectron2Adapter

    model = build_model(cfg).eval()
    safe_checkpointer(model, trust=trust_checkpoint).load(path)
    # DefaultPredictor's resize, from the same config keys.
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    names = (
        MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes") if cfg.DATASETS.TEST else demo_names
    )
    adapter = Detectron2Adapter(
        model,
        resize=lambda image: aug.get_transform(image).apply_image(image),
        input_format=cfg.INPUT.FORMAT,
        names=names,
        max_det=max_det,
        assign_levels=assign_boxes_to_levels,
    )
    family = Family.RETINANET if adapter.kind == "retinanet" else Family.FASTER_RCNN
    settings = {
        "config_file": str(config_file),
        "confidence_threshold": conf_thres,
        "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
        "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
    }
    return Loaded(
        adapter=adapter,
        weights=path,
        settings=settings,
        files=(path,),
        checkout=checkout,
        default_method=family_default("detectron2", family),
    )
