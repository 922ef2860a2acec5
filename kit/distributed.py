"""Runs started by ``torchrun``: which share of the images this process explains, and the few
collective steps a run needs.

``torchrun --nproc-per-node N main_gradcam.py ...`` starts N copies of the entry point with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` set (several machines: one
``torchrun --nnodes M --node-rank K --rdzv-endpoint HOST:PORT`` per machine). Each process loads
the model once, on its ``LOCAL_RANK`` GPU where CUDA is present (backend nccl), else on the CPU
(backend gloo) with ``cores // local processes`` torch threads, and explains
``sorted_images[rank::world]``: interleaved, so slow and fast images mix. Rank 0 decides
what must be decided once (the run folder's name, what a resumed run still has to do) and
shares it with :func:`broadcast`; the run ends with a :func:`barrier` after which rank 0 merges
the ranks' records.

Everything here is a no-op in a plain process (``world == 1``), so the run loop has one path.
Only the run layer (:mod:`kit.api`, :mod:`kit.cli`) uses this module; the core never does.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from kit.errors import KitError

LOG = logging.getLogger("kit")
T = TypeVar("T")
# A collective waits this long for the slowest rank (the end-of-run barrier waits for the rank
# with the slowest share of images): long, since torchrun stops the group when a rank dies.
TIMEOUT = datetime.timedelta(hours=int(os.environ.get("KIT_DIST_TIMEOUT_HOURS", "12") or 12))


class DistributedError(KitError):
    """torch.distributed could not be set up from torchrun's environment."""


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun launch (rank 0 of 1 when started without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        """Whether other processes share the run (collectives then talk to them)."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that decides, merges and reports."""
        return self.rank == 0


def launched() -> Group:
    """The group torchrun's environment describes; a plain process is rank 0 of 1."""
    env = os.environ

    def number(name: str, default: int) -> int:
        value = env.get(name, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise DistributedError(f"{name}={value!r} is not a number; start the run with torchrun") from None

    world = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    local_world = number("LOCAL_WORLD_SIZE", 1 if world == 1 else world)
    group = Group(rank=rank, world=world, local_rank=number("LOCAL_RANK", 0), local_world=local_world)
    if world < 1 or not 0 <= rank < world or not 0 <= group.local_rank < max(local_world, 1):
        raise DistributedError(
            f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={group.local_rank} do not describe a process of a "
            "group; start the run with torchrun, which sets them"
        )
    return group


def restarted() -> bool:
    """Whether torchrun restarted this worker (``--max-restarts``): the run then resumes by itself."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    except ValueError:
        return False


def shard(items: Sequence[T], group: Group) -> list[T]:
    """This rank's share of ``items``: every ``world``-th item from position ``rank``.

    Interleaved rather than in blocks, so that a folder whose slow images sit together (large
    photos, crowded scenes) is still split evenly; every item goes to exactly one rank, and the
    shares differ in length by at most one.
    """
    return list(items[group.rank :: group.world])


def cuda_present() -> bool:
    """Whether a CUDA device is there, asked without initializing CUDA in this process (NVML), so
    that an upstream's ``select_device`` can still choose the visible device afterwards."""
    import torch

    previous = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        return bool(torch.cuda.is_available())
    finally:
        if previous is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = previous


def local_device(device: str | None, *, style: str = "index") -> str | None:
    """The device this rank loads its model on, from the device the user asked for.

    In a plain process ``device`` is returned as it is. Under torchrun: ``cpu`` stays the CPU; a
    list (``0,1``) gives this rank its ``LOCAL_RANK``-th entry; no device gives the ``LOCAL_RANK``-th
    GPU where CUDA is present, else the CPU. ``style`` is how the upstream spells a GPU: ``index``
    (YOLO's ``--device 1``) or ``torch`` (detectron2's ``cuda:1``).
    """
    group = launched()
    if not group.active:
        return device
    given = (device or "").strip()
    if given.lower() == "cpu":
        return "cpu"
    if given:
        choices = [part.strip() for part in given.split(",") if part.strip()]
        chosen = choices[group.local_rank % len(choices)]
    elif cuda_present():
        chosen = str(group.local_rank)
    else:
        return "cpu"
    if style == "torch" and chosen.isdigit():
        return f"cuda:{chosen}"
    return chosen


_joined: Group | None = None


def join(*, cuda: Callable[[], bool]) -> Group:
    """Join the launch's process group (once per process) and return this process's place in it.

    ``cuda()``: whether the model runs on a CUDA device (backend nccl; that device is made current), else
    gloo with ``cores // local processes`` torch threads. SIGTERM, which torchrun sends the other
    ranks when one dies or is interrupted, becomes a KeyboardInterrupt, so that each rank keeps
    what it finished and rank 0 indexes it as an interrupted run. A plain process joins nothing.
    """
    global _joined
    group = launched()
    if not group.active:
        return group
    if _joined is not None:
        return _joined
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run without torchrun")
    on_cuda = cuda()
    backend = "nccl" if on_cuda else "gloo"
    if not on_cuda:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(group.local_world, 1)))
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise DistributedError(f"cannot join the torchrun group (backend {backend}): {error}") from error
    signal.signal(signal.SIGTERM, _interrupt)
    LOG.debug(
        "rank %d of %d (local %d of %d), backend %s, %d torch threads",
        group.rank,
        group.world,
        group.local_rank,
        group.local_world,
        backend,
        torch.get_num_threads(),
    )
    _joined = group
    return group


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def broadcast(value: T, group: Group) -> T:
    """Rank 0's ``value`` on every rank (any picklable value)."""
    if not group.active:
        return value
    import torch.distributed as dist

    box: list[Any] = [value if group.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(group: Group) -> None:
    """Wait until every rank got here."""
    if group.active:
        import torch.distributed as dist

        dist.barrier()


def leave() -> None:
    """Leave the process group (at the end of an entry point's run); safe to call when not joined."""
    global _joined
    if _joined is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _joined = None
