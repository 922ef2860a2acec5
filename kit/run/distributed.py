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
Only the run layer (:mod:`kit.api`, :mod:`kit.cli.main`) uses this module; the core never does.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from kit.core.display import shown
from kit.core.errors import ArgumentError, KitError

LOG = logging.getLogger("kit")
T = TypeVar("T")
# A collective waits this long for the slowest rank (the end-of-run barrier waits for the rank
# with the slowest share of images): long, since torchrun stops the group when a rank dies.
# KIT_DIST_TIMEOUT_HOURS changes it.
TIMEOUT_HOURS = 12.0
# Joining the group is bounded apart (--dist-timeout): a process whose peers never come (WORLD_SIZE
# and RANK left in the environment, another launcher's variables) says what it waits for and stops.
DEFAULT_WAIT_MINUTES = 5.0
MAX_WAIT_MINUTES = 7 * 24 * 60.0
NOTICE_AFTER_SECONDS = 10.0  # under torchrun the wait is said only when the peers are this late
JOIN_SECONDS = 120.0  # creating the process group once every rank has reached the store
POLL_SECONDS = 0.1  # the wait returns to Python this often, so Ctrl-C and SIGTERM stop it at once
# What a torchrun worker's environment has beyond the variables any env:// launch sets.
TORCHRUN_MARKER = "TORCHELASTIC_RUN_ID"
MAX_WORLD = 2**20  # processes in a group (torch's store counts them in a C int)
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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
    if not 1 <= world <= MAX_WORLD or not 1 <= local_world <= MAX_WORLD:
        raise DistributedError(
            f"WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local_world}: a group has 1 to {MAX_WORLD} processes; "
            "start the run with torchrun, which sets them, or unset them to run as one process"
        )
    if not 0 <= rank < world or not 0 <= group.local_rank < local_world:
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


def check_wait(minutes: float, *, flag: str = "--dist-timeout") -> float:
    """How long joining the group may take, in minutes: more than 0, finite, at most a week
    (checked where the run's settings are, :class:`kit.run.request.ExplainRequest`)."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and 0 < minutes <= MAX_WAIT_MINUTES):
        raise ArgumentError(
            f"{flag} must be a number of minutes above 0 and at most {MAX_WAIT_MINUTES:g}, got {minutes!r}; "
            f"e.g. {flag} {DEFAULT_WAIT_MINUTES:g}"
        )
    return float(minutes)


def collective_timeout() -> datetime.timedelta:
    """How long a collective waits for the slowest rank: TIMEOUT_HOURS, or KIT_DIST_TIMEOUT_HOURS."""
    value = os.environ.get("KIT_DIST_TIMEOUT_HOURS", "")
    try:
        hours = float(value) if value.strip() else TIMEOUT_HOURS
    except ValueError:
        hours = math.nan
    if not (math.isfinite(hours) and 0 < hours <= 24 * 365):
        raise DistributedError(
            f"KIT_DIST_TIMEOUT_HOURS={shown(value)!r} is not a number of hours above 0 (at most a year); "
            "unset it for the default of 12"
        )
    return datetime.timedelta(hours=hours)


def join(*, cuda: Callable[[], bool], wait_minutes: float = DEFAULT_WAIT_MINUTES) -> Group:
    """Join the launch's process group (once per process) and return this process's place in it.

    ``cuda()``: whether the model runs on a CUDA device (backend nccl; that device is made current), else
    gloo with ``cores // local processes`` torch threads. Joining waits at most ``wait_minutes`` for
    the other processes (:class:`Rendezvous`: it says what it waits for, and stops with a
    DistributedError; the request checked the value, :func:`check_wait`); Ctrl-C stops the wait at
    once. SIGTERM, which torchrun sends the other ranks when one dies or is interrupted, becomes a
    KeyboardInterrupt, so that each rank keeps what it finished and rank 0 indexes it as an
    interrupted run. A plain process joins nothing.
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
    timeout = collective_timeout()
    on_cuda = cuda()
    backend = "nccl" if on_cuda else "gloo"
    if not on_cuda:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(group.local_world, 1)))
    signal.signal(signal.SIGTERM, _interrupt)
    if not dist.is_initialized():
        rendezvous = Rendezvous.of(group, minutes=wait_minutes)
        store = rendezvous.wait()
        try:  # every rank is there: creating the group takes seconds, not the collectives' hours
            store.set_timeout(datetime.timedelta(seconds=JOIN_SECONDS))
            dist.init_process_group(
                backend=backend,
                store=dist.PrefixStore("default_pg", store),
                rank=group.rank,
                world_size=group.world,
                timeout=timeout,
            )
            store.set_timeout(timeout)
        except (RuntimeError, ValueError) as error:
            raise DistributedError(f"cannot join the torchrun group (backend {backend}): {error}") from error
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


def torchrun() -> bool:
    """Whether torchrun started this process (it sets TORCHELASTIC_RUN_ID for every worker); a
    group described by WORLD_SIZE and RANK alone may be variables left over from another launch."""
    return bool(os.environ.get(TORCHRUN_MARKER))


@dataclass(frozen=True)
class Rendezvous:
    """Meeting the group's other processes at ``MASTER_ADDR:MASTER_PORT`` (torch's env:// rule: rank
    0 hosts the TCPStore there, unless torchrun's agent does), waited for in Python, a short step at a
    time: never longer than ``minutes``, and Ctrl-C stops it at once (torch's own rendezvous blocks
    in C++, where neither reaches it)."""

    group: Group
    host: str
    port: int
    minutes: float
    agent_store: bool  # torchrun's agent hosts the store: every rank is its client

    @classmethod
    def of(cls, group: Group, *, minutes: float) -> Rendezvous:
        """The rendezvous the environment describes; DistributedError when it describes none."""
        env = os.environ
        host, port = env.get("MASTER_ADDR", "").strip(), env.get("MASTER_PORT", "").strip()
        unset = "unset WORLD_SIZE and RANK to run as one process, or start the run with torchrun"
        if not host or not port:
            missing = " and ".join(n for n, v in (("MASTER_ADDR", host), ("MASTER_PORT", port)) if not v)
            raise DistributedError(
                f"WORLD_SIZE={group.world} and RANK={group.rank} are set but {missing} is not, so there is "
                f"no address to meet the other processes at; {unset}"
            )
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise DistributedError(f"MASTER_PORT={shown(port)!r} is not a TCP port (1-65535); {unset}")
        agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        return cls(group=group, host=host, port=int(port), minutes=minutes, agent_store=agent)

    @property
    def hosts_store(self) -> bool:
        return self.group.rank == 0 and not self.agent_store

    def _where(self) -> str:
        return f"rank {self.group.rank} of {self.group.world} at {shown(self.host)}:{self.port}"

    def _cause(self) -> str:
        """Who asked for a group: torchrun, or variables that may be left over from another launch."""
        if torchrun():
            return ""
        given = " ".join(f"{n}={shown(os.environ[n])}" for n in LAUNCH_VARIABLES if n in os.environ)
        return f"; started by {given} in the environment: unset them to run as one process"

    def explanation(self) -> str:
        """What this process waits for, who asked for it, and for how long."""
        others = self.group.world - 1
        return (
            f"waiting for {others} other process{'es' if others != 1 else ''} of a torchrun group "
            f"({self._where()}){self._cause()}; giving up after {self.minutes:g} min (--dist-timeout)"
        )

    def wait(self) -> Any:
        """The store once every rank has reached it (torch.distributed.TCPStore)."""
        deadline = time.monotonic() + self.minutes * 60
        notice = time.monotonic() + (NOTICE_AFTER_SECONDS if torchrun() else 0.0)
        try:
            if not self.hosts_store:
                notice = self._reach(deadline, notice)
            store = self._store(deadline)
            self._meet(store, deadline, notice)
        except KeyboardInterrupt:
            LOG.warning("interrupted while %s", self.explanation())
            raise
        return store

    def _notice(self, at: float) -> float:
        """Say what this process waits for once ``at`` has passed; the next time to say it (never)."""
        if time.monotonic() >= at:
            LOG.warning("%s", self.explanation())
            return math.inf
        return at

    def _gave_up(self, why: str) -> DistributedError:
        return DistributedError(
            f"gave up after {self.minutes:g} min (--dist-timeout) waiting for the other processes of a "
            f"torchrun group ({self._where()}): {why}{self._cause()}"
        )

    def _reach(self, deadline: float, notice: float) -> float:
        """Wait until something listens at host:port (rank 0's store), with Python's sockets;
        return when to say what it waits for (as :meth:`_notice`)."""
        while True:
            notice = self._notice(notice)
            try:
                left = max(deadline - time.monotonic(), 0.01)
                with socket.create_connection((self.host, self.port), timeout=min(1.0, left)):
                    return notice
            except OSError as error:
                if time.monotonic() >= deadline:
                    who = "torchrun's agent" if self.agent_store else "rank 0"
                    raise self._gave_up(
                        f"nothing answered at {shown(self.host)}:{self.port}, where {who} would host the "
                        f"group's store ({shown(str(error.strerror or error))})"
                    ) from None
            time.sleep(POLL_SECONDS)

    def _store(self, deadline: float) -> Any:
        """torch's TCPStore at host:port (this rank's server, or a client of it). Made on a helper
        thread and waited for here: a client whose peer accepts the connection but never answers
        as a store (another service on MASTER_PORT) blocks in C++ with no timeout of its own."""
        import torch.distributed as dist

        left = datetime.timedelta(seconds=max(deadline - time.monotonic(), 1.0))
        made: dict[str, Any] = {}

        def make() -> None:
            try:
                made["store"] = dist.TCPStore(
                    self.host,
                    self.port,
                    self.group.world,
                    is_master=self.hosts_store,
                    timeout=min(left, datetime.timedelta(seconds=60)),
                    wait_for_workers=False,
                    multi_tenant=self.hosts_store,
                )
            except Exception as error:  # handed to the waiting thread, which says what it means
                made["error"] = error

        maker = threading.Thread(target=make, name="kit-rendezvous", daemon=True)
        maker.start()
        while maker.is_alive():  # joined a short step at a time: Ctrl-C and SIGTERM come through
            if time.monotonic() >= deadline:
                raise self._gave_up(
                    f"something at {shown(self.host)}:{self.port} accepted the connection but never "
                    "answered as torch's store (is MASTER_PORT another service's port?)"
                )
            maker.join(POLL_SECONDS)
        error = made.get("error")
        if isinstance(error, (RuntimeError, ValueError, TypeError)):
            why = " ".join(str(error).split())
            raise DistributedError(f"cannot open the group's store: {why}; {self.explanation()}") from error
        if error is not None:
            raise error
        return made["store"]

    def _absent(self, store: Any, prefix: str, *, joined: int) -> str:
        """Which ranks never joined (the first ten of them, found by asking the store one by one)."""
        absent: list[int] = []
        for rank in range(self.group.world):
            if not store.check([f"{prefix}rank{rank}"]):
                absent.append(rank)
                if len(absent) > 10:
                    break
        listed = ", ".join(map(str, absent[:10])) + (", ..." if len(absent) > 10 else "")
        missing = self.group.world - joined
        return f"{missing} rank{'s' if missing != 1 else ''} never joined ({listed})"

    def _meet(self, store: Any, deadline: float, notice: float) -> None:
        """Count this rank in; wait, a short step at a time, until every rank is."""
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        prefix = f"kit/{os.environ.get(TORCHRUN_MARKER, '')}/{restart}/"
        store.set(f"{prefix}rank{self.group.rank}", "1")
        joined = store.add(f"{prefix}joined", 1)
        while joined < self.group.world:
            notice = self._notice(notice)
            if time.monotonic() >= deadline:
                raise self._gave_up(self._absent(store, prefix, joined=joined))
            time.sleep(POLL_SECONDS)
            joined = store.add(f"{prefix}joined", 0)


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
