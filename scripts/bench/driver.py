"""`make bench`: the kit's speed beside plain inference, the seeds' algorithm and pytorch-grad-cam.

For every upstream that is set up, one worker process per model (``WORKERS``: the YOLO
upstreams' ``scripts/bench/yolo_worker.py``, detectron2's ``scripts/bench/detectron2_worker.py``)
measures the methods on the same model, image and detections, with random weights built from the
upstream's cfg (no downloads). The table goes to stdout and the records to ``runs/bench/latest.json``.
Figures are measurements, not test assertions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kit.upstreams.registry import SPECS
from scripts.bench.common import worker_arguments
from scripts.upstream.config import REPO_ROOT, Project, checkout_path, load_project

# The worker module of each loader (all take scripts.bench.common's flags), and so of each upstream.
LOADER_WORKERS = {
    "yolo": "scripts.bench.yolo_worker",
    "detectron2": "scripts.bench.detectron2_worker",
    "ultralytics": "scripts.bench.ultralytics_worker",
}
WORKERS: dict[str, str] = {name: LOADER_WORKERS[spec.loader] for name, spec in SPECS.items() if spec.bench}

# (upstream, cfg, deep layer set, image of the checkout): the models each upstream is measured on,
# from its spec (kit.upstreams.registry).
MODELS: list[tuple[str, str, str, str]] = [
    (name, model.cfg, model.deep, model.image) for name, spec in SPECS.items() for model in spec.bench
]


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "python": platform.python_version(),
    }


def table(records: Sequence[dict[str, Any]]) -> str:
    w = max([16] + [len(r["model"]) for r in records])
    lines = [
        f"{'model':{w}} {'layers':6} {'dets':>4} {'method':18} {'seconds':>9} {'x plain':>8} {'peak MB':>8}",
    ]
    for r in records:
        if "images_per_second" in r or r.get("method") == "eval":
            continue
        lines.append(
            f"{r['model']:{w}} {r['layers']:6} {r['detections']:>4} {r['method']:18} "
            f"{r['seconds']:>9.3f} {r['ratio_to_plain']:>8.1f} {r['peak_mb']:>8.0f}"
        )
    for r in records:
        if "images_per_second" in r and r.get("method") != "scale":
            lines.append(
                f"{r['model']:{w}} {r['layers']:6} folder of {r['images']}, {r['method']}: "
                f"{r['images_per_second']:.2f} images/s"
            )
    for r in records:
        if r.get("method") == "eval":
            lines.append(
                f"eval, {r['model']}, {r['images']} images ({r['detections']} detections): median "
                f"{r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} CPU s, of {r['runs']} whole runs "
                "(goal < 30 s)"
            )
    scale = {r["processes"]: r for r in records if r.get("method") == "scale"}
    if 1 in scale and 2 in scale:
        one, two = scale[1]["images_per_second"], scale[2]["images_per_second"]
        lines.append(
            f"scale, {scale[1]['model']}, {scale[1]['images']} images: 1 process {one:.2f} images/s, "
            f"torchrun 2 processes {two:.2f} images/s (one thread each): {two / one:.2f}x (goal >= 1.7x)"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The driver's flags; `worker_arguments` hands them on to each model's worker."""
    parser = argparse.ArgumentParser(prog="python -m scripts bench", description=__doc__)
    parser.add_argument("--models", default="", help="comma-separated cfg stems (default: all)")
    parser.add_argument("--detections", default="1,10,50")
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layer-sets", default="head,deep,odam")
    parser.add_argument("--baselines", default="seed,pytorch-grad-cam", help="empty: the kit only")
    parser.add_argument("--folder-images", type=int, default=16, help="0: skip the folder throughput")
    parser.add_argument(
        "--drise-masks",
        type=int,
        default=1000,
        help="D-RISE's masks per image (the paper's 1000); one image, 10 detections; 0 skips it",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per worker (OMP_NUM_THREADS); 0: torch's default. 1 keeps figures steady "
        "on a machine shared with other jobs",
    )
    parser.add_argument(
        "--scale-images",
        type=int,
        default=32,
        help="images of the scale row (one process vs torchrun --nproc-per-node 2, one thread each; "
        "needs the yolov7 checkout); 0 skips it",
    )
    parser.add_argument(
        "--eval-runs",
        type=int,
        default=3,
        help="runs of the eval row (main_gradcam.py --eval on the demo's 8 sample images, a whole process "
        "each, in the yolov7 checkout; issue 25's goal: under 30 s); 0 skips it",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench" / "latest.json")
    parser.add_argument(
        "--large-image",
        action="store_true",
        help="measure instead the peak memory of one run of one large image (scripts/bench/large_image.py, "
        "the yolov7 checkout's demo detector), each case in a child process",
    )
    parser.add_argument(
        "--max-rss-gb", type=float, default=12.0, help="--large-image: kill a child above this"
    )
    return parser


def measure_scale(checkout: Path, count: int, folder: Path) -> list[dict[str, Any]]:
    """The scale row: images/s of the demo detector over the same ``count`` images in one process
    (one thread) and in a torchrun group of 2 (one thread each), each into a fresh run folder."""
    from scripts.demo import shapes

    images = shapes.write_split(folder / "data", count=count, split="eval")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    records: list[dict[str, Any]] = []
    for nproc in (1, 2):
        launcher = (
            [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        )
        command = [sys.executable, *launcher, str(REPO_ROOT / "scripts" / "bench" / "scale_worker.py")]
        command += [
            "--checkout",
            str(checkout),
            "--images",
            str(images),
            "--out",
            str(folder / f"run{nproc}"),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("SCALE ")]
        if done.returncode != 0 or not lines:
            print(f"scale row, {nproc} processes: failed (exit {done.returncode})\n{done.stderr[-2000:]}")
            return records
        record = {
            "model": "yolov7-tiny (demo)",
            "layers": "head",
            "method": "scale",
            **json.loads(lines[-1][6:]),
        }
        print(f"scale: {nproc} process(es): {record['images_per_second']:.2f} images/s", flush=True)
        records.append(record)
    return records


BASELINES = ("seed", "pytorch-grad-cam")


def check_baselines(names: Sequence[str]) -> str | None:
    """What is wrong with ``--baselines``, or None: unknown names, or grad-cam not installed."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        return f"--baselines: unknown {unknown}; choose from {list(BASELINES)} (empty: the kit only)"
    if "pytorch-grad-cam" in names and importlib.util.find_spec("pytorch_grad_cam") is None:
        return (
            "--baselines pytorch-grad-cam needs the grad-cam package, which is not installed in "
            f"{sys.executable}: run `make bench` (it installs the bench extra) or "
            "`pip install -e '.[bench]'`, or pass --baselines seed"
        )
    return None


def run_worker(command: list[str], env: dict[str, str] | None) -> tuple[int, list[dict[str, Any]]]:
    """Run one worker, echoing its lines as they come; its exit code and records."""
    records: list[dict[str, Any]] = []
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("RECORDS "):
                records += json.loads(line[8:])
            else:
                print(line, end="", flush=True)
    return process.returncode, records


def measure_models(
    args: argparse.Namespace, project: Project, wanted: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One worker per model of MODELS that is set up (and ``wanted``): their records, and the
    models whose worker failed (the others are still measured)."""
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    for upstream, cfg, deep, image in MODELS:
        if wanted and Path(cfg).stem not in wanted:
            continue
        checkout = checkout_path(project, upstream)
        if not (checkout / cfg).is_file():
            print(
                f"{upstream}: not set up ({checkout}); run `make setup-{upstream}` to include it", flush=True
            )
            continue
        print(f"{upstream} {cfg} (random weights built from the cfg, {args.img_size} px):", flush=True)
        command = [sys.executable, "-u", "-m", WORKERS[upstream]] + worker_arguments(
            checkout=checkout, upstream=upstream, cfg=cfg, deep=deep, image=image, options=args
        )
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads > 0 else None
        code, found = run_worker(command, env)
        records += found
        if code != 0:  # the other models are still measured; the run exits non-zero at the end
            print(f"{upstream} {cfg}: worker failed with exit code {code}", file=sys.stderr, flush=True)
            failed.append(f"{upstream} {cfg}")
    return records, failed


def scale_row(
    args: argparse.Namespace, project: Project, wanted: set[str]
) -> tuple[list[dict[str, Any]], bool]:
    """The scale row's records (the demo detector in the yolov7 checkout, when set up), and
    whether it failed."""
    yolov7 = checkout_path(project, "yolov7")
    if args.scale_images <= 0 or (wanted and "yolov7-tiny" not in wanted):
        return [], False
    if not (yolov7 / "cfg/training/yolov7-tiny.yaml").is_file():
        print(f"scale row: yolov7 not set up ({yolov7}); run `make setup-yolov7` to include it", flush=True)
        return [], False
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kit-bench-scale-") as folder:
        found = measure_scale(yolov7, args.scale_images, Path(folder))
    return found, len(found) < 2


def eval_row(
    args: argparse.Namespace, project: Project, wanted: set[str]
) -> tuple[list[dict[str, Any]], bool]:
    """The eval row: ``--eval-runs`` whole runs of ``main_gradcam.py --weights demo --eval`` on the
    demo's 8 sample images in the yolov7 checkout, their median wall and CPU seconds (the child's
    user + system), and whether a run failed."""
    yolov7 = checkout_path(project, "yolov7")
    if args.eval_runs <= 0 or (wanted and "yolov7-tiny" not in wanted):
        return [], False
    if not (yolov7 / "main_gradcam.py").is_file():
        print(f"eval row: yolov7 not set up ({yolov7}); run `make setup-yolov7` to include it", flush=True)
        return [], False
    import statistics
    import tempfile

    from scripts.demo import shapes

    sample = REPO_ROOT / "data" / "demo" / "sample"
    shapes.write_split(sample, count=8, split="eval")  # what make cam's offline fallback draws
    walls, cpus, detections = [], [], 0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads > 0 else None
    with tempfile.TemporaryDirectory(prefix="kit-bench-eval-") as folder:
        for run in range(args.eval_runs):
            command = [
                sys.executable,
                "main_gradcam.py",
                "--weights",
                "demo",
                "--source",
                str(sample / "images"),
            ]
            command += ["--eval", str(sample / "labels"), "--project", folder, "--name", f"run{run}"]
            before, started = os.times(), time.perf_counter()
            done = subprocess.run(command, cwd=yolov7, capture_output=True, text=True, env=env, check=False)
            wall, after = time.perf_counter() - started, os.times()
            if done.returncode != 0:
                print(
                    f"eval row: run {run} failed (exit {done.returncode})\n{done.stderr[-2000:]}", flush=True
                )
                return [], True
            walls.append(wall)
            cpus.append(
                after.children_user + after.children_system - before.children_user - before.children_system
            )
            scores = json.loads((Path(folder) / f"run{run}" / "eval.json").read_text())
            detections = len(scores["detections"])
            print(f"eval row: run {run}: {wall:.1f} s wall, {cpus[-1]:.1f} CPU s", flush=True)
    record = {
        "model": "yolov7-tiny (demo)",
        "layers": "head",
        "method": "eval",
        "images": 8,
        "detections": detections,
        "runs": args.eval_runs,
        "seconds": round(statistics.median(walls), 2),
        "cpu_seconds": round(statistics.median(cpus), 2),
        "seconds_each": [round(w, 2) for w in walls],
    }
    return [record], False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.large_image:
        from scripts.bench import large_image

        return large_image.main(["--max-rss-gb", str(args.max_rss_gb), "--out", str(args.out)])
    problem = check_baselines([b for b in args.baselines.split(",") if b])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    project = load_project()
    wanted = {m for m in args.models.split(",") if m}
    known = {Path(cfg).stem for _, cfg, _, _ in MODELS}
    if wanted - known:
        print(f"--models: unknown {sorted(wanted - known)}; choose from {sorted(known)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    records, failed = measure_models(args, project, wanted)
    found, scale_failed = scale_row(args, project, wanted)
    records += found
    failed += ["scale row"] if scale_failed else []
    found, eval_failed = eval_row(args, project, wanted)
    records += found
    failed += ["eval row"] if eval_failed else []
    if not records:
        print("nothing measured: set up an upstream first (make setup-yolov7)", file=sys.stderr)
        return 1
    report = {
        "machine": {**machine(), **({"threads": args.threads} if args.threads > 0 else {})},
        "seconds_total": round(time.perf_counter() - started, 1),
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(records))
    print(f"\nmachine: {report['machine']}\nrecords: {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)} (their records are missing)", file=sys.stderr)
        return 1
    return 0
