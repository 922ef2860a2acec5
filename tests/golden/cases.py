"""The cases whose outputs must not change: each runs the kit only through its outside interfaces
(``make cam``, ``make eval``, ``main_gradcam.py`` in an upstream checkout, torchrun through
``make cam NPROC=2``) and returns its normalized record (:mod:`tests.golden.normalize`).

Used by the recorder (``python -m tests.golden.record``), which writes the references, and by
``tests/integration/test_unchanged.py``, which runs the same cases with the code checked out and
compares. Nothing here imports the kit: its modules are moving.

Every command runs on one thread (``OMP_NUM_THREADS=1``; ``make eval --threads 1``): the same code
then gives the same bits run after run. The inputs are made here, each the same on every call:
the demo's synthetic shapes (``scripts.demo.shapes``, a function of the image index), random-weight
checkpoints built by ``tests/golden/weights.py`` inside the checkout (seed 0, no dates), the
upstreams' own sample images, and labels written below (some copied from a detection of the
recorded run, so that the random detectors have a matched detection to evaluate, some where no
detection is, so that --explain-missed has objects to explain).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.golden import normalize

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_SCRIPT = Path(__file__).resolve().with_name("weights.py")
REFERENCES = Path(__file__).resolve().with_name("references")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TAIL = 4000  # characters of a failed command's output shown


class CaseError(RuntimeError):
    """A command of a case failed; the message names it, its exit code and the end of its output."""


@dataclass(frozen=True)
class WeightsSpec:
    upstream: str
    cfg: str  # relative to the checkout
    file: str


WEIGHTS = {
    "yolov3-tiny": WeightsSpec("yolov3", "models/yolov3-tiny.yaml", "yolov3-tiny-random.pt"),
    "yolov5n": WeightsSpec("yolov5", "models/yolov5n.yaml", "yolov5n-random.pt"),
    "faster-rcnn": WeightsSpec(
        "detectron2", "configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "faster_rcnn_R_50_FPN.pth"
    ),
    "retinanet": WeightsSpec(
        "detectron2", "configs/COCO-Detection/retinanet_R_50_FPN_3x.yaml", "retinanet_R_50_FPN.pth"
    ),
}
SHAPES = 4  # synthetic images drawn once: eval_0000.png .. eval_0003.png and their labels


@dataclass
class Workspace:
    """Where the cases run: ``root`` (a fresh folder) holds inputs and run folders; ``checkout``
    gives an upstream's patched checkout by name (the tests' session fixtures, or the recorder's)."""

    root: Path
    checkout: Callable[[str], Path]
    _weights: dict[str, Path] = field(default_factory=dict)
    _checkouts: dict[str, Path] = field(default_factory=dict)

    def upstream(self, name: str) -> Path:
        if name not in self._checkouts:
            self._checkouts[name] = self.checkout(name)
        return self._checkouts[name]

    def env(self, checkout: Path) -> dict[str, str]:
        """The environment of every command: this repository's code first on the import path, the
        checkouts' folder for make cam, one thread."""
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "KIT_UPSTREAMS_DIR": str(checkout.parent), **ONE_THREAD}

    def run(self, command: Sequence[str], *, cwd: Path, checkout: Path) -> subprocess.CompletedProcess[str]:
        """Run ``command``; a CaseError unless it exits 0."""
        result = subprocess.run(
            list(command), cwd=cwd, env=self.env(checkout), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise CaseError(
                f"exit {result.returncode}: {' '.join(command)}\n--- stdout (end)\n{result.stdout[-TAIL:]}"
                f"\n--- stderr (end)\n{result.stderr[-TAIL:]}"
            )
        return result

    def folder(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def weights(self, key: str) -> Path:
        """The random-weight checkpoint ``key`` of WEIGHTS, built once per workspace."""
        if key not in self._weights:
            spec = WEIGHTS[key]
            checkout = self.upstream(spec.upstream)
            out = self.folder("weights") / spec.file
            command = [sys.executable, str(WEIGHTS_SCRIPT), spec.upstream, spec.cfg, str(out)]
            env_checkout = {"PYTHONPATH": str(checkout)}
            result = subprocess.run(
                command,
                cwd=checkout,
                env={**os.environ, **env_checkout, **ONE_THREAD},
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not out.is_file():
                raise CaseError(f"exit {result.returncode}: {' '.join(command)}\n{result.stderr[-TAIL:]}")
            self._weights[key] = out
        return self._weights[key]

    def shapes(self) -> Path:
        """The demo's first SHAPES synthetic evaluation images (``images/``) and labels (``labels/``)."""
        data = self.root / "shapes"
        if not (data / "labels").is_dir():
            from scripts.demo import shapes  # the generator make cam's offline fallback draws with

            shapes.write_split(data, count=SHAPES, split="eval")
        return data

    def shape_images(self, name: str, indices: Sequence[int]) -> Path:
        """A folder ``name`` holding copies of the synthetic images ``indices``."""
        folder = self.folder("sources", name)
        for i in indices:
            shutil.copyfile(self.shapes() / "images" / f"eval_{i:04d}.png", folder / f"eval_{i:04d}.png")
        return folder

    def copies(self, name: str, files: Sequence[Path]) -> Path:
        """A folder ``name`` holding copies of ``files`` (an upstream's sample images)."""
        folder = self.folder("sources", name)
        for file in files:
            shutil.copyfile(file, folder / file.name)
        return folder

    def labels(self, name: str, lines: Mapping[str, str]) -> Path:
        """A folder ``name`` of YOLO label files: ``{stem: text}``."""
        folder = self.folder("labels", name)
        for stem, text in lines.items():
            (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
        return folder

    def paths(self, *upstreams: str) -> dict[str, str]:
        """Path tokens for the normalizer: this workspace, the checkouts used, the repository."""
        folders = {"work": self.root, "repo": REPO_ROOT}
        folders.update({name: self.upstream(name) for name in upstreams})
        return normalize.tokens(folders)

    def head(self, upstream: str) -> str:
        checkout = self.upstream(upstream)
        result = self.run(["git", "rev-parse", "HEAD"], cwd=checkout, checkout=checkout)
        return result.stdout.strip()

    def record(self, out: Path, upstream: str, inputs: Sequence[Path]) -> dict[str, Any]:
        """A finished run folder's record, with the sha256 of its input files."""
        paths = self.paths(upstream)
        record = normalize.normalize_run(out, paths=paths, head=self.head(upstream))
        record["inputs"] = {
            normalize.replace_paths(str(file), paths): normalize.sha256(file.read_bytes())
            for folder in inputs
            for file in sorted(folder.iterdir() if folder.is_dir() else [folder])
        }
        return record

    def make_cam(
        self,
        upstream: str,
        *,
        weights: Path | str,
        source: Path,
        out: Path,
        args: Sequence[str],
        config: Path | None = None,
        nproc: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``make cam`` as a user runs it, from the repository's root."""
        checkout = self.upstream(upstream)
        command = [
            *("make", "--no-print-directory", "cam", f"PYTHON={sys.executable}", f"UPSTREAM={upstream}"),
            *(f"WEIGHTS={weights}", f"SOURCE={source}", f"OUT={out}", "ARGS=" + " ".join(args)),
            *([f"CONFIG={config}"] if config is not None else []),
            *([f"NPROC={nproc}"] if nproc is not None else []),
        ]
        return self.run(command, cwd=REPO_ROOT, checkout=checkout)


# Small sizes, as the integration tests use them; each case adds the flags it covers.
EVAL_FLAGS = ("--eval-curves", "2", "--eval-steps", "2")
YOLO_RANDOM = ("--conf-thres", "0.0001")
DETECTRON2_FAST = ("--confidence-threshold", "0.01", "--max-det", "3", "--opts", "INPUT.MIN_SIZE_TEST", "256")


def demo(ws: Workspace) -> dict[str, Any]:
    """`make cam` with the demo detector (WEIGHTS=demo, as make cam falls back to offline): Grad-CAM,
    --eval, --explain-missed (a threshold that leaves objects out) and --audit."""
    source = ws.shape_images("demo", [0, 1, 2])
    labels = ws.shapes() / "labels"
    out = ws.root / "runs" / "demo"
    args = ["--conf-thres", "0.975", "--eval", str(labels), "--explain-missed", *EVAL_FLAGS, "--audit"]
    ws.make_cam("yolov7", weights="demo", source=source, out=out, args=args)
    return ws.record(out, "yolov7", [source, labels])


def demo_drise(ws: Workspace) -> dict[str, Any]:
    """`make cam` with the demo detector and D-RISE (64 masks), whose maps a trained detector makes
    differ from one detection to the next (random weights give near-uniform ones), and --eval."""
    source = ws.shape_images("demo-drise", [0, 1])
    labels = ws.shapes() / "labels"
    out = ws.root / "runs" / "demo-drise"
    args = [
        *("--method", "drise", "--drise-masks", "64", "--drise-cell", "32", "--drise-seed", "1"),
        *("--eval", str(labels), *EVAL_FLAGS),
    ]
    ws.make_cam("yolov7", weights="demo", source=source, out=out, args=args)
    return ws.record(out, "yolov7", [source, labels])


YOLOV3_LABELS = {
    # 15: a detection of the recorded run (so one matches); 0: where the bus's door is, missed
    "bus": "15 0.698309 0.748139 0.351086 0.245981\n0 0.5 0.55 0.2 0.6\n",
    "zidane": "0 0.75 0.55 0.3 0.9\n",
}


def yolov3(ws: Workspace) -> dict[str, Any]:
    """yolov3-tiny with random weights on both sample images in one batch: Grad-CAM++, --eval,
    --explain-missed."""
    checkout = ws.upstream("yolov3")
    source = ws.copies("yolov3", [checkout / "data" / "images" / n for n in ("bus.jpg", "zidane.jpg")])
    labels = ws.labels("yolov3", YOLOV3_LABELS)
    out = ws.root / "runs" / "yolov3"
    args = [
        *("--imgsz", "320", *YOLO_RANDOM, "--max-det", "4", "--batch-size", "2", "--method", "gradcampp"),
        *("--eval", str(labels), "--explain-missed", *EVAL_FLAGS),
    ]
    ws.make_cam("yolov3", weights=ws.weights("yolov3-tiny"), source=source, out=out, args=args)
    return ws.record(out, "yolov3", [source, labels])


YOLOV5_LABELS = {"zidane": "27 0.314984 0.492507 0.576266 0.985014\n0 0.75 0.55 0.3 0.9\n"}


def yolov5(ws: Workspace) -> dict[str, Any]:
    """yolov5n with random weights: D-RISE (few masks) and --eval (D-RISE refuses --explain-missed)."""
    checkout = ws.upstream("yolov5")
    source = ws.copies("yolov5", [checkout / "data" / "images" / "zidane.jpg"])
    labels = ws.labels("yolov5", YOLOV5_LABELS)
    out = ws.root / "runs" / "yolov5"
    args = [
        *("--imgsz", "256", *YOLO_RANDOM, "--max-det", "3", "--method", "drise"),
        *("--drise-masks", "32", "--drise-cell", "32", "--drise-batch", "16"),
        *("--eval", str(labels), *EVAL_FLAGS),
    ]
    ws.make_cam("yolov5", weights=ws.weights("yolov5n"), source=source, out=out, args=args)
    return ws.record(out, "yolov5", [source, labels])


DETECTRON2_IMAGE = "docs/tutorials/lazyconfig.jpg"  # the checkout's only image (1300x340)
DETECTRON2_LABELS = {
    # 79: a detection of the recorded RetinaNet run (so one matches); 0 and 5: missed objects
    "lazyconfig": "79 0.957231 0.208588 0.018692 0.202235\n0 0.3 0.5 0.2 0.6\n5 0.8 0.3 0.1 0.3\n",
}


def detectron2(ws: Workspace, *, weights: str, args: Sequence[str]) -> dict[str, Any]:
    checkout = ws.upstream("detectron2")
    source = ws.copies("detectron2", [checkout / DETECTRON2_IMAGE])
    labels = ws.labels("detectron2", DETECTRON2_LABELS)
    out = ws.root / "runs" / weights
    config = checkout / WEIGHTS[weights].cfg
    flags = [*args, "--eval", str(labels), "--explain-missed", *EVAL_FLAGS, *DETECTRON2_FAST]
    ws.make_cam("detectron2", weights=ws.weights(weights), source=source, out=out, args=flags, config=config)
    return ws.record(out, "detectron2", [source, labels])


def faster_rcnn(ws: Workspace) -> dict[str, Any]:
    """Faster R-CNN R50-FPN with random weights: the box target, --eval, --explain-missed."""
    return detectron2(ws, weights="faster-rcnn", args=["--target", "box"])


def retinanet(ws: Workspace) -> dict[str, Any]:
    """RetinaNet R50-FPN with random weights: HiResCAM, --eval, --explain-missed."""
    return detectron2(ws, weights="retinanet", args=["--method", "hirescam"])


def torchrun(ws: Workspace) -> dict[str, Any]:
    """`make cam NPROC=2` (torchrun, 2 CPU processes) with the demo detector on 4 images: LayerCAM,
    --eval, --explain-missed."""
    source = ws.shape_images("torchrun", [0, 1, 2, 3])
    labels = ws.shapes() / "labels"
    out = ws.root / "runs" / "torchrun"
    args = [
        *("--conf-thres", "0.975", "--method", "layercam"),
        *("--eval", str(labels), "--explain-missed", *EVAL_FLAGS),
    ]
    ws.make_cam("yolov7", weights="demo", source=source, out=out, args=args, nproc=2)
    return ws.record(out, "yolov7", [source, labels])


def resume(ws: Workspace) -> dict[str, Any]:
    """main_gradcam.py on 2 of 3 images, then the third added to the folder and the run resumed
    (--resume): XGrad-CAM, --fuse, 2 images a batch.

    The record holds the first run's, the resumed run's, and the files the resumed run left as
    they were (same inode and modification time: the images done before are not redone). Without
    --eval: at 618cbed a finished run resumed with --eval explains every image again (the
    measurements of a finished run are not kept for a resume), which would leave nothing to skip.
    """
    checkout = ws.upstream("yolov7")
    source = ws.shape_images("resume", [0, 1])
    out = ws.root / "runs" / "resume"
    args = [
        *("main_gradcam.py", "--weights", "demo", "--source", str(source)),
        *("--project", str(out.parent), "--name", out.name, "--conf-thres", "0.975", "--method", "xgradcam"),
        *("--fuse", "--batch-size", "2"),
    ]
    ws.run([sys.executable, *args], cwd=checkout, checkout=checkout)
    first = ws.record(out, "yolov7", [source])
    before = stat_files(out)
    ws.shape_images("resume", [2])
    ws.run([sys.executable, *args, "--resume"], cwd=checkout, checkout=checkout)
    after = stat_files(out)
    resumed = ws.record(out, "yolov7", [source])
    kept = sorted(name for name, stat in after.items() if before.get(name) == stat)
    return {"first": first, "resumed": resumed, "kept_by_resume": kept}


def stat_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file of ``folder`` (recursively) as its inode and modification time in nanoseconds."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


EVAL_ARGS = (
    # the fewest: 1 image, 1 method, 1 layer set, 1 curve of 1 step (its detection also carries the
    # bottom-up and top-down checks), D-RISE on 1 image with 8 masks (its reference floored at z >= 1:
    # at 8 masks nothing reaches make eval's 4), and the box target's rows
    *("--images", "1", "--methods", "gradcam", "--layer-sets", "74,75,76", "--curves", "1", "--steps", "1"),
    *("--drise-images", "1", "--drise-masks", "8", "--drise-floor", "1", "--threads", "1", "--box-target"),
)
TABLE_HEAD = "method "


def make_eval(ws: Workspace) -> str:
    """`make eval` with the smallest arguments that still print every table with numbers: its
    stdout from the table's header line on (the lines before are the upstream's own prints)."""
    checkout = ws.upstream("yolov7")
    data, out = ws.root / "eval" / "data", ws.root / "eval" / "exp"
    args = ["--checkout", str(checkout), "--data-dir", str(data), "--out", str(out), *EVAL_ARGS]
    command = ["make", "--no-print-directory", "eval", f"PYTHON={sys.executable}", "ARGS=" + " ".join(args)]
    stdout = ws.run(command, cwd=REPO_ROOT, checkout=checkout).stdout
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(TABLE_HEAD)), None)
    if start is None:
        raise CaseError(f"make eval printed no table (no line starts with {TABLE_HEAD!r}):\n{stdout[-TAIL:]}")
    return "\n".join(lines[start:]) + "\n"


# name -> (what it runs, the upstreams it needs). Each run case's reference is references/<name>.json.
RUN_CASES: dict[str, tuple[Callable[[Workspace], dict[str, Any]], tuple[str, ...]]] = {
    "demo": (demo, ("yolov7",)),
    "demo-drise": (demo_drise, ("yolov7",)),
    "yolov3": (yolov3, ("yolov3",)),
    "yolov5": (yolov5, ("yolov5",)),
    "faster-rcnn": (faster_rcnn, ("detectron2",)),
    "retinanet": (retinanet, ("detectron2",)),
    "torchrun": (torchrun, ("yolov7",)),
    "resume": (resume, ("yolov7",)),
}
EVAL_CASE = "make-eval"  # its reference is references/make-eval.txt, the table as printed
CASES = (*RUN_CASES, EVAL_CASE)


def upstreams_of(case: str) -> tuple[str, ...]:
    """The upstream checkouts ``case`` runs in."""
    return ("yolov7",) if case == EVAL_CASE else RUN_CASES[case][1]


def reference_path(case: str) -> Path:
    return REFERENCES / (f"{case}.txt" if case == EVAL_CASE else f"{case}.json")


def run_case(case: str, ws: Workspace) -> str:
    """Run ``case`` in ``ws``; its result in the stored form (the text a reference file holds)."""
    if case == EVAL_CASE:
        return make_eval(ws)
    if case not in RUN_CASES:
        raise ValueError(f"no golden case {case!r}; choose one of: {', '.join(CASES)}")
    return normalize.dumps(RUN_CASES[case][0](ws))
