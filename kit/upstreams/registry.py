"""What an upstream is, once: one frozen spec per upstream detector repo.

The loaders, the entry points (:mod:`kit.cli.entry`), ``make cam``'s defaults
(``scripts/cam/launch.py``), the bench (``scripts/bench``) and the tests read these specs; what
differs between upstreams is data here, not a branch on the upstream's name. The pins (commit,
patch series, requirements, the entry point file) stay in ``upstreams.yaml``, the setup engine's
file, under the same names.

Adding an upstream: a spec here, a patch series, an entry point from the template and, only for
a new detector family, an adapter (CONTRIBUTING.md, "Adding an upstream").
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from kit.core.errors import KitError
from kit.upstreams.demo import DETECTRON2_STEM, STEM, ULTRALYTICS_STEM, YOLOV3_STEM, YOLOV5_STEM


class Family(enum.Enum):
    """A detector family: what the kit's adapters explain (one adapter per family)."""

    YOLO = "yolo (anchor-based)"
    FASTER_RCNN = "faster-rcnn"
    RETINANET = "retinanet"
    ANCHOR_FREE = "yolo (anchor-free, DFL)"  # ultralytics' YOLOv8, YOLO11
    END_TO_END = "yolo (end-to-end, one-to-one)"  # ultralytics' YOLO26, YOLOv10
    RT_DETR = "rt-detr"


@dataclass(frozen=True)
class YoloCode:
    """Where a YOLO repo keeps what the loader imports, and how its pinned version behaves."""

    letterbox_module: (
        str  # the module of its letterbox (yolov7 utils.datasets, ultralytics utils.augmentations)
    )
    nms_caps: bool  # its non_max_suppression takes max_det (ultralytics); else the adapter cuts
    one_checkpoint: bool  # attempt_load reads one file (an ensemble has no single Detect head to explain)
    device_keyword: str  # attempt_load's device argument: "map_location" (reads there) or "device" (moves)
    load_under_no_grad: bool  # attempt_load must run under no_grad (yolov7: IDetect.fuse updates in place)
    detection_only: bool  # its checkpoints of other tasks (segmentation, classification) are refused
    img_size: int = 640  # the default image size (the demo detector has its own, 256)


@dataclass(frozen=True)
class EntryFlags:
    """The repo's own detection script's flags that its ``main_gradcam.py`` keeps (beside the kit's)."""

    title: str  # the repo as its docstring names it
    script: str  # the script whose flags these are
    weights_help: str
    size_flags: tuple[str, ...]  # the image-size flag and its aliases; the first is the one errors name
    size_default: tuple[int, ...] | None  # None: the loader's default (and the demo detector's own)
    size_help: str
    max_det_help: str
    conf_help: str
    iou_help: str
    data_flag: bool = False  # --data dataset.yaml (yolov5 v7.0's detect.py; a .pt carries its names)
    predict_style: bool = False  # `yolo predict`'s key=value arguments (the ultralytics package)

    @property
    def size_flag(self) -> str:
        """The image-size flag as errors name it (``--img-size``, ``--imgsz``)."""
        return self.size_flags[0]

    size_hw: bool = False  # the size flag takes one or two sizes (h w), as ultralytics' detect.py's

    @property
    def size_nargs(self) -> bool:
        """Whether the size flag takes one or two sizes (h w), as ultralytics' detect.py's does."""
        return self.size_hw


@dataclass(frozen=True)
class CamDefaults:
    """How ``make cam`` runs the upstream's entry point."""

    weights_url: str  # the released checkpoint of the pinned version (never "latest")
    args: tuple[str, ...]  # entry-point flags; {weights} {source} {project} {name} {out} {config} filled in
    config: str | None = None  # default model config, relative to the checkout (detectron2)


@dataclass(frozen=True)
class BenchModel:
    """A model ``make bench`` measures with random weights built from a cfg of the checkout."""

    cfg: str
    deep: str  # the deep layer set, comma-separated (beside the head's layers)
    image: str  # an image of the checkout


@dataclass(frozen=True)
class UpstreamSpec:
    """One upstream detector repo: what the kit loads from it and how its tools run it."""

    name: str  # as in upstreams.yaml and `make setup-<name>`
    families: tuple[Family, ...]
    loader: str  # the module of kit.upstreams.loaders that loads it
    options: tuple[str, ...]  # what kit.load takes for it besides weights, device and trust_checkpoint
    markers: tuple[str, ...]  # files only a checkout of it has
    packages: tuple[str, ...]  # the top-level packages its code lives in (one checkout per process)
    device_style: str  # how a rank's local device is spelled: "index" (detect.py's) or "torch"
    images: str  # its sample images, relative to the checkout: detect.py's --source, make cam's default
    default_weights: str | None  # --weights default; None: the config's MODEL.WEIGHTS
    default_max_det: int | None  # --max-det default, as its detection script's; None: no cap
    cam: CamDefaults
    bench: tuple[BenchModel, ...]
    yolo: YoloCode | None = None  # the YOLO loader's settings (loader "yolo")
    entry: EntryFlags | None = None  # the YOLO entry point's flags (detectron2's entry point is its own)
    demo: str | None = None  # its demo detector's stem in kit/upstreams/demo (``--weights demo``)
    # The method explained when none is named, per family where docs/evaluation.md's rule (written
    # before its numbers; `make eval` on the family's demo at the defaults) chose other than Grad-CAM.
    default_methods: Mapping[Family, str] = dataclasses.field(default_factory=dict)

    @property
    def demo_fallback(self) -> bool:
        """Whether ``--weights demo`` (and ``make cam`` offline) runs the kit's demo detector."""
        return self.demo is not None


DETECTRON2_CONFIG = "configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"  # demo.py's --config-file default
YOLO_OPTIONS = ("img_size", "conf_thres", "iou_thres", "max_det", "classes", "agnostic_nms", "half")
YOLO_PACKAGES = ("models", "utils")
YOLO_CAM_ARGS = (
    "--weights",
    "{weights}",
    "--source",
    "{source}",
    "--project",
    "{project}",
    "--name",
    "{name}",
)
ULTRALYTICS_ENTRY = EntryFlags(
    title="ultralytics/yolov3 v9.6.0",
    script="v9.6.0's detect.py",
    weights_help="model.pt path, or 'demo': the kit's yolov3-tiny trained on synthetic shapes "
    "(make demo UPSTREAM=yolov3)",
    size_flags=("--imgsz", "--img", "--img-size"),
    size_default=None,  # the loader's 640, as detect.py's; the demo detector's own 256
    size_hw=True,
    size_help="inference size (default 640; --weights demo: the demo's 256); h,w is accepted as in "
    "detect.py and the larger is used as a square",
    max_det_help="maximum detections per image",
    conf_help="confidence threshold",
    iou_help="NMS IoU threshold",
)
ULTRALYTICS_CODE = YoloCode(
    letterbox_module="utils.augmentations",
    nms_caps=True,
    one_checkpoint=True,
    device_keyword="map_location",
    load_under_no_grad=False,
    detection_only=False,
)

YOLOV7 = UpstreamSpec(
    name="yolov7",
    images="inference/images",
    families=(Family.YOLO,),
    loader="yolo",
    options=YOLO_OPTIONS,
    markers=("models/yolo.py", "utils/datasets.py", "cfg/training/yolov7.yaml"),
    packages=YOLO_PACKAGES,
    device_style="index",
    demo=STEM,
    default_weights="yolov7.pt",
    default_max_det=300,
    cam=CamDefaults(
        weights_url="https://github.com/WongKinYiu/yolov7/releases/download/v0.1/yolov7.pt",
        args=YOLO_CAM_ARGS,
    ),
    bench=(
        BenchModel("cfg/deploy/yolov7-tiny.yaml", "14,21,28", "inference/images/horses.jpg"),
        BenchModel("cfg/deploy/yolov7.yaml", "37,50,63", "inference/images/horses.jpg"),
    ),
    yolo=YoloCode(
        letterbox_module="utils.datasets",
        nms_caps=False,
        one_checkpoint=False,
        device_keyword="map_location",
        load_under_no_grad=True,
        detection_only=False,
    ),
    entry=EntryFlags(
        title="yolov7",
        script="yolov7's detect.py",
        weights_help=(
            "model.pt path(s), or 'demo': the kit's yolov7-tiny trained on synthetic shapes (make demo)"
        ),
        size_flags=("--img-size",),
        size_default=None,
        size_help="inference size (pixels); default 640, demo weights 256",
        max_det_help="maximum detections explained per image",
        conf_help="object confidence threshold",
        iou_help="IOU threshold for NMS",
    ),
)
YOLOV3 = UpstreamSpec(
    name="yolov3",
    images="data/images",
    families=(Family.YOLO,),
    default_methods={Family.YOLO: "gradcampp"},  # on yolov3-tiny: best deletion and insertion that pass
    loader="yolo",
    options=YOLO_OPTIONS,
    markers=("models/yolo.py", "utils/augmentations.py", "models/yolov3.yaml"),
    packages=YOLO_PACKAGES,
    device_style="index",
    demo=YOLOV3_STEM,
    default_weights="yolov3.pt",
    default_max_det=1000,
    cam=CamDefaults(
        weights_url="https://github.com/ultralytics/yolov3/releases/download/v9.6.0/yolov3.pt",
        args=YOLO_CAM_ARGS,
    ),
    bench=(
        BenchModel("models/yolov3-tiny.yaml", "6,8,10", "data/images/zidane.jpg"),
        BenchModel("models/yolov3.yaml", "6,8,10", "data/images/zidane.jpg"),
    ),
    yolo=ULTRALYTICS_CODE,
    entry=ULTRALYTICS_ENTRY,
)
# ultralytics/yolov3 v9.6.0 runs on the code base of yolov5 (v6.0): v7.0 has the same flags and functions.
YOLOV5 = dataclasses.replace(
    YOLOV3,
    name="yolov5",
    markers=("models/yolo.py", "utils/dataloaders.py", "models/yolov5s.yaml"),
    demo=YOLOV5_STEM,
    default_methods={},  # yolov5n: Grad-CAM by the rule (yolov3-tiny's choice is its own)
    default_weights="yolov5s.pt",
    cam=CamDefaults(
        weights_url="https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5s.pt",
        args=YOLO_CAM_ARGS,
    ),
    bench=(
        # the backbone's C3 at strides 8 and 16 and its SPPF at 32, below the neck the head reads
        BenchModel("models/yolov5n.yaml", "4,6,9", "data/images/zidane.jpg"),
        BenchModel("models/yolov5s.yaml", "4,6,9", "data/images/zidane.jpg"),
    ),
    # v7.0's attempt_load reads to the CPU and moves the model to `device`
    yolo=dataclasses.replace(ULTRALYTICS_CODE, device_keyword="device", detection_only=True),
    entry=dataclasses.replace(
        ULTRALYTICS_ENTRY,
        title="ultralytics/yolov5 v7.0",
        script="v7.0's detect.py",
        weights_help="model.pt path, or 'demo': the kit's yolov5n trained on synthetic shapes "
        "(make demo UPSTREAM=yolov5)",
        data_flag=True,
    ),
)
DETECTRON2 = UpstreamSpec(
    name="detectron2",
    images="docs/tutorials/lazyconfig.jpg",
    families=(Family.FASTER_RCNN, Family.RETINANET),
    default_methods={Family.RETINANET: "odam"},  # PG 0.99, EBPG 0.66, passes bottom-up (0.37)
    loader="detectron2",
    options=("config_file", "opts", "conf_thres", "max_det"),
    markers=("detectron2/modeling/meta_arch/retinanet.py", "configs/Base-RCNN-FPN.yaml"),
    packages=("detectron2",),
    device_style="torch",
    demo=DETECTRON2_STEM,  # MODEL.WEIGHTS demo; demo-retinanet names the RetinaNet (kit.upstreams.demo)
    default_weights=None,
    default_max_det=None,
    # demo/demo.py's flags. The checkout's only image is a docs figure; pass SOURCE for photos.
    cam=CamDefaults(
        weights_url=(
            "https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/faster_rcnn_R_50_FPN_3x/"
            "137849458/model_final_280758.pkl"
        ),
        config=DETECTRON2_CONFIG,
        args=(
            *("--config-file", "{config}", "--input", "{source}", "--output", "{out}"),
            *("--opts", "MODEL.WEIGHTS", "{weights}"),
        ),
    ),
    bench=(
        BenchModel(
            "configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
            "backbone.bottom_up.res3,backbone.bottom_up.res4",
            "docs/tutorials/lazyconfig.jpg",  # the checkout's only image
        ),
        # RetinaNet: its default method, ODAM, must stay within 2x plain inference (the rule's cost)
        BenchModel(
            "configs/COCO-Detection/retinanet_R_50_FPN_3x.yaml",
            "backbone.bottom_up.res3,backbone.bottom_up.res4",
            "docs/tutorials/lazyconfig.jpg",
        ),
    ),
)
# The ultralytics package (sdist 8.4.190): its checkout is the unpacked sdist, the package at ultralytics/.
ULTRALYTICS = UpstreamSpec(
    name="ultralytics",
    images="ultralytics/assets",
    families=(Family.ANCHOR_FREE, Family.END_TO_END, Family.RT_DETR),
    loader="ultralytics",
    options=(*YOLO_OPTIONS, "nms"),
    markers=("ultralytics/nn/tasks.py", "ultralytics/utils/nms.py", "ultralytics/cfg/default.yaml"),
    packages=("ultralytics",),
    device_style="index",
    demo=ULTRALYTICS_STEM,
    default_weights="yolo11n.pt",
    default_max_det=300,
    cam=CamDefaults(
        # the assets release attempt_download_asset of 8.4.190 reads (v8.4.0)
        weights_url="https://github.com/ultralytics/assets/releases/download/v8.4.0/yolo11n.pt",
        args=("model={weights}", "source={source}", "project={project}", "name={name}"),
    ),
    bench=(
        # deep: the last C3k2/C2PSA blocks before the neck (yolo11.yaml, built at scale n), the
        # backbone and hybrid encoder's last stages (rtdetr-l.yaml)
        BenchModel("ultralytics/cfg/models/11/yolo11.yaml", "4,6,10", "ultralytics/assets/bus.jpg"),
        BenchModel("ultralytics/cfg/models/rt-detr/rtdetr-l.yaml", "9,12", "ultralytics/assets/bus.jpg"),
    ),
    entry=EntryFlags(
        title="ultralytics 8.4.190 (YOLOv8, YOLO11, YOLO26, YOLOv10, RT-DETR)",
        script="`yolo predict`",
        weights_help="model.pt path: a detection checkpoint written by the ultralytics trainer, or "
        "'demo': the kit's YOLO11n trained on synthetic shapes (make demo UPSTREAM=ultralytics)",
        size_flags=("--imgsz",),
        size_default=None,
        size_help="inference size (default 640; model=demo: the demo's 256); h,w is accepted and the "
        "larger is used as a square",
        max_det_help="maximum detections per image",
        conf_help="confidence threshold",
        iou_help="NMS IoU threshold (default 0.7, as yolo predict)",
        predict_style=True,
    ),
)

# Every upstream the kit loads, in the order the docs and make targets list them.
SPECS: dict[str, UpstreamSpec] = {s.name: s for s in (YOLOV3, YOLOV5, YOLOV7, DETECTRON2, ULTRALYTICS)}


class UnknownUpstreamError(KitError):
    """An upstream name the registry does not know."""


def get_spec(name: str) -> UpstreamSpec:
    """The spec of ``name``; an unknown name is refused listing the known ones."""
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownUpstreamError(f"unknown upstream {name!r}; the kit loads {', '.join(SPECS)}") from None


def yolo_specs() -> tuple[UpstreamSpec, ...]:
    """The upstreams the YOLO loader loads (the tests parametrize over them)."""
    return tuple(s for s in SPECS.values() if s.yolo is not None)
