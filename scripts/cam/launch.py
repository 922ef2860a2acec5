"""`make cam`: run an upstream's main_gradcam.py with the project's defaults.

Defaults per upstream (released weights, sample images, how the entry point spells its flags)
are data in the upstream's spec (``kit.upstreams.registry``). Weights are downloaded once, to
``weights/<upstream>/`` (or ``$KIT_WEIGHTS_DIR``), through ``kit.upstreams.download`` (progress
bar, ``.part`` file renamed when complete, sha256 recorded beside it).
``KIT_<NAME>_WEIGHTS_URL`` points the download at a mirror.

Offline, with no weights given, yolov7 and ultralytics fall back to their demo detectors kept in the
repository (``kit/upstreams/demo``, trained by `make demo`) on a few synthetic evaluation images, and say so,
instead of stopping: `make cam` shows what the kit does on any machine.

The exit code is the entry point's (README, "Exit codes"): 0 all explained, 1 some images failed,
2 refused arguments or input, 3 an internal error, 130 interrupted (a child killed by signal N:
128 + N). The driver's own errors follow the same codes.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from kit.cli.paths import CALLER_CWD_ENV
from kit.core.display import shown
from kit.core.errors import DownloadError, KitError
from kit.upstreams.demo import DEMO_NAME
from kit.upstreams.registry import SPECS, CamDefaults
from scripts.upstream.config import REPO_ROOT, checkout_path, load_project, url_env_var
from scripts.upstream.errors import CheckoutError, ConfigError, KitSetupError

WEIGHTS_DIR_ENV = "KIT_WEIGHTS_DIR"
# make cam's defaults per upstream: its spec's (kit.upstreams.registry); the sample images are spec.images.
CAM_DEFAULTS: dict[str, CamDefaults] = {name: spec.cam for name, spec in SPECS.items()}
# Upstreams whose entry point takes `--weights demo` (kit/upstreams/demo): the offline fallback of make cam.
DEMO_FALLBACK = tuple(name for name, spec in SPECS.items() if spec.demo_fallback)
DEMO_SAMPLE_IMAGES = 8
# After Ctrl-C, how long the child may take to finish its manifest before it is sent SIGINT itself
# (it gets the terminal's Ctrl-C too, unless the signal was sent to the driver alone).
INTERRUPT_GRACE_SECONDS = 10.0
EXIT_REFUSED, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 130
PROCESSES_PER_CORE = 4  # NPROC's bound: a few per core for GPUs and oversubscription, not thousands


def weights_url(name: str, environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    override = env.get(url_env_var(name).replace("_URL", "_WEIGHTS_URL"))
    return override or CAM_DEFAULTS[name].weights_url


def weights_dir(name: str) -> Path:
    base = os.environ.get(WEIGHTS_DIR_ENV)
    return (Path(base) if base else REPO_ROOT / "weights") / name


def default_weights(name: str) -> Path:
    """The released weights of `name`, downloaded once; a clear error without network."""
    from kit.upstreams.download import download  # the kit is installed by setup

    url = weights_url(name)
    dest = weights_dir(name) / url.rsplit("/", 1)[-1]
    return download(url, dest)


def how_to_get_weights(name: str) -> str:
    """What to do when ``name``'s released weights cannot be downloaded and it has no demo detector."""
    url = weights_url(name)
    var = url_env_var(name).replace("_URL", "_WEIGHTS_URL")
    dest = weights_dir(name) / url.rsplit("/", 1)[-1]
    return (
        f"{name} has no demo detector to run offline. To get its weights: download {url} on a machine with "
        f"network and copy it to {dest} (make cam then finds it), or pass your own checkpoint with "
        f"WEIGHTS=path/to/file, or point {var} at a mirror of the file."
    )


def zoo_weights_url(checkout: Path, config: str) -> str:
    """The model-zoo checkpoint of a detectron2 config, read from the checkout's model_zoo.py table."""
    table = checkout / "detectron2" / "model_zoo" / "model_zoo.py"
    key = Path(config).as_posix().split("configs/", 1)[-1].removesuffix(".yaml")
    text = table.read_text(encoding="utf-8") if table.is_file() else ""
    prefix = re.search(r'S3_PREFIX = "([^"]+)"', text)
    suffix = re.search(rf'"{re.escape(key)}": "([^"]+)"', text)
    if prefix is None or suffix is None:
        raise ConfigError(
            f"no model-zoo checkpoint for config {config!r} in {table}; pass the weights with WEIGHTS=PATH"
        )
    return f"{prefix.group(1)}{key}/{suffix.group(1)}"


def demo_sample(root: Path | None = None, count: int = DEMO_SAMPLE_IMAGES) -> Path:
    """The first ``count`` images of the demo evaluation set, drawn once into data/demo/sample."""
    from scripts.demo import shapes

    folder = (REPO_ROOT if root is None else root) / "data" / "demo" / "sample"
    if len(list((folder / "images").glob("*.png"))) < count:
        shapes.write_split(folder, count=count, split="eval")
    return folder / "images"


def build_command(
    name: str,
    *,
    python: str,
    weights: Path | str,
    source: Path,
    out: Path,
    extra: Sequence[str] = (),
    config: Path | str | None = None,
    nproc: int = 1,
) -> list[str]:
    """The entry-point command line for `name` (pure: testable without running anything); with
    ``nproc`` > 1, under torchrun (``python -m torch.distributed.run``, the same interpreter)."""
    values = {
        "weights": str(weights),
        "source": str(source),
        "project": str(out.parent),
        "name": out.name,
        "out": str(out),
        "config": str(config if config is not None else CAM_DEFAULTS[name].config),
    }
    args = [a.format(**values) for a in CAM_DEFAULTS[name].args]
    # --standalone: this machine alone, on a free port (two runs at once do not clash on 29500).
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    launcher = launcher if nproc > 1 else []
    return [python, *launcher, "main_gradcam.py", *args, *extra]


def check_request(name: str, *, config: str | None, nproc: int) -> None:
    """make cam's own arguments, checked before anything is read or downloaded."""
    if nproc < 1:
        raise ConfigError(f"NPROC must be a number of processes, 1 or more; got {nproc}")
    if nproc > max_nproc():
        raise ConfigError(
            f"NPROC={nproc} is more than {max_nproc()} processes ({PROCESSES_PER_CORE} per CPU core this "
            f"machine lets us use): each process loads the model; pass NPROC={usable_cores()} or less"
        )
    if name not in CAM_DEFAULTS:
        raise ConfigError(f"make cam knows no upstream {name!r}; choose one of: {', '.join(CAM_DEFAULTS)}")
    if config and CAM_DEFAULTS[name].config is None:
        raise ConfigError(f"CONFIG is for upstreams that take a config file (detectron2), not {name}")


def installed_checkout(name: str) -> Path:
    """The checkout of ``name``, refused unless the kit's current entry point is installed in it."""
    project = load_project()
    checkout = checkout_path(project, name)
    installed = checkout / "main_gradcam.py"
    if not installed.is_file():
        raise CheckoutError(f"{checkout} is not set up (no main_gradcam.py); run `make setup-{name}` first")
    entry_point = project.upstream(name).entry_point
    current = project.root / entry_point
    if current.is_file() and installed.read_bytes() != current.read_bytes():
        raise CheckoutError(
            f"{installed} is not the kit's current entry point ({entry_point}): the kit "
            f"changed since `make setup-{name}`, or the file was edited. Run `make setup-{name}` to install "
            "the current one (the old one is kept beside it as main_gradcam.py.<hash>.orig)."
        )
    return checkout


def chosen_weights(
    name: str, *, weights: str | None, config: str | None, checkout: Path
) -> Path | str | None:
    """The weights to run: ``demo``, the file given, the config's model-zoo checkpoint or the
    released one (downloaded once). None: no weights given and the download failed where the
    upstream has the demo detector to fall back to (the error is printed)."""
    cwd = Path.cwd()
    if weights == DEMO_NAME and not (cwd / weights).is_file():  # a file named demo wins, a folder does not
        if name not in DEMO_FALLBACK:
            raise ConfigError(
                f"WEIGHTS=demo is the demo detector of {', '.join(DEMO_FALLBACK)} (kit/upstreams/demo); "
                f"{name} has none: pass a checkpoint with WEIGHTS=PATH"
            )
        return DEMO_NAME
    if weights:
        return (cwd / weights).resolve()
    if config:  # that config's model-zoo checkpoint, not the default one
        from kit.upstreams.download import download

        url = zoo_weights_url(checkout, config)
        return download(url, weights_dir(name) / url.rsplit("/", 1)[-1])
    try:
        return default_weights(name)
    except DownloadError as error:
        if name not in DEMO_FALLBACK:
            raise DownloadError(f"{error}\n{how_to_get_weights(name)}") from error
        print(f"warning: {shown(str(error))}", file=sys.stderr)
        return None


def run_cam(
    name: str,
    *,
    weights: str | None,
    source: str | None,
    out: str | None,
    extra: Sequence[str],
    config: str | None = None,
    nproc: int = 1,
) -> int:
    """Run ``name``'s installed entry point with make cam's defaults for what is not given."""
    check_request(name, config=config, nproc=nproc)
    checkout = installed_checkout(name)
    cwd = Path.cwd()
    source_path = (cwd / source).resolve() if source else checkout / SPECS[name].images
    weights_path = chosen_weights(name, weights=weights, config=config, checkout=checkout)
    if weights_path is None:
        weights_path = DEMO_NAME
        if not source:
            source_path = demo_sample()
        print(
            "no weights given and the released ones cannot be downloaded: running the demo "
            f"detector ({SPECS[name].demo}, kept in kit/upstreams/demo, trained on synthetic shapes) on "
            f"{shown(str(source_path))} instead. Pass WEIGHTS=... SOURCE=... to explain your own.",
            file=sys.stderr,
        )
    out_path = (cwd / out).resolve() if out else REPO_ROOT / "runs" / "cam" / name / "exp"
    command = build_command(
        name,
        python=sys.executable,
        weights=weights_path,
        source=source_path,
        out=out_path,
        extra=[*extra, "--exist-ok"] if out else extra,
        config=(cwd / config).resolve() if config else None,
        nproc=nproc,
    )
    print("+ " + " ".join(shown(part) for part in command), file=sys.stderr, flush=True)
    # Paths in ARGS are read from where make was typed, as SOURCE and WEIGHTS are (kit.cli.paths).
    return run_child(command, cwd=checkout, env={**os.environ, CALLER_CWD_ENV: str(cwd)})


def run_child(command: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run the entry point; return its exit code as a shell reports it (killed by signal N: 128 + N).

    Ctrl-C in a terminal reaches the child too (one process group): it finishes its manifest and
    exits 130, so the driver waits for it rather than killing it (as ``subprocess.call`` would).
    A Ctrl-C sent to the driver alone is passed on after INTERRUPT_GRACE_SECONDS.
    """
    child = subprocess.Popen(list(command), cwd=cwd, env=env)
    timeout: float | None = None
    while True:
        try:
            code = child.wait(timeout=timeout)
            break
        except KeyboardInterrupt:
            timeout = INTERRUPT_GRACE_SECONDS
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
            timeout = None
    return 128 - code if code < 0 else code


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The driver's flags, and the flags after ``--`` that go to main_gradcam.py as they are.

    An empty value is the same as none (make passes ``--weights=`` when WEIGHTS is not set).
    """
    parser = argparse.ArgumentParser(prog="python -m scripts cam", description=__doc__)
    parser.add_argument("name", help="upstream: " + ", ".join(CAM_DEFAULTS))
    parser.add_argument("--weights", help="checkpoint (default: the upstream's released weights)")
    parser.add_argument("--source", help="image file, folder or glob (default: the checkout's samples)")
    parser.add_argument("--out", help="run folder (default: runs/cam/<name>/exp, incremented)")
    parser.add_argument("--config", help="model config file (detectron2; default: Faster R-CNN R50-FPN 3x)")
    parser.add_argument(
        "--nproc",
        default="",
        help="processes on this machine (torchrun --nproc-per-node; default 1: no torchrun)",
    )
    parser.epilog = "Flags after -- go to main_gradcam.py as they are."
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def max_nproc() -> int:
    """The most processes NPROC may start: each loads the model, so many more than cores is a typo."""
    return PROCESSES_PER_CORE * usable_cores()


def parse_nproc(value: str) -> int:
    """NPROC as make passes it: empty for one process, else ASCII digits (no sign, no spaces inside)."""
    text = value.strip()
    if not text:
        return 1
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ConfigError(f"NPROC must be a number of processes, got {shown(value)!r}; e.g. NPROC=2")
    return int(text)


def main(argv: Sequence[str]) -> int:
    args, extra = parse_args(argv)
    try:
        nproc = parse_nproc(args.nproc)
        return run_cam(
            args.name,
            weights=args.weights or None,
            source=args.source or None,
            out=args.out or None,
            extra=extra,
            config=args.config or None,
            nproc=nproc,
        )
    except (KitSetupError, KitError) as error:
        print(f"error: {shown(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("interrupted before main_gradcam.py started; nothing was explained", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(
            f"internal error (exit {EXIT_INTERNAL}) in make cam: this is a bug, not a problem with your "
            "input; please report it with the command line and the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
