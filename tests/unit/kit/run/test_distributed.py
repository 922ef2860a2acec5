"""kit.run.distributed: the shares, torchrun's environment, the device per rank (without a process group);
joining a group from a stray or hand-made launch environment (subprocesses)."""

from __future__ import annotations

import math

import pytest

from kit.core.options import ArgumentError
from kit.run import distributed
from kit.run.distributed import DistributedError, Group


@pytest.mark.parametrize(("items", "world"), [(10, 2), (10, 3), (7, 4), (2, 3), (0, 2), (5, 1)])
def test_shares_are_interleaved_disjoint_complete_and_balanced(items: int, world: int) -> None:
    images = [f"img{k:02d}.jpg" for k in range(items)]
    shares = [distributed.shard(images, Group(rank=r, world=world)) for r in range(world)]
    assert shares[0] == images[0::world]  # sorted[rank::world]: slow neighbours go to different ranks
    assert sorted(x for share in shares for x in share) == images  # every image once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    if items < world:  # more ranks than images: the last ranks get none (and only wait at the barrier)
        assert [len(s) for s in shares] == [1] * items + [0] * (world - items)


def test_torchruns_environment_describes_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    plain = distributed.launched()
    assert plain == Group() and not plain.active and plain.main and not distributed.restarted()
    assert distributed.broadcast("mine", plain) == "mine"  # collectives are no-ops in a plain process
    distributed.barrier(plain)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    group = distributed.launched()
    assert group == Group(rank=3, world=4, local_rank=1, local_world=2) and group.active and not group.main
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert distributed.restarted()
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError, match="RANK=4, WORLD_SIZE=4.*start the run with torchrun"):
        distributed.launched()
    monkeypatch.setenv("RANK", "0")
    for world in ("0", "99999999999999999999", str(2**20 + 1)):
        monkeypatch.setenv("WORLD_SIZE", world)
        with pytest.raises(DistributedError, match=rf"WORLD_SIZE={world}, .*a group has 1 to 1048576"):
            distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(10**30))
    with pytest.raises(DistributedError, match="LOCAL_WORLD_SIZE=1000000000000000000000000000000: a group"):
        distributed.launched()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DistributedError, match="RANK='x' is not a number"):
        distributed.launched()


def test_each_rank_takes_its_own_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.local_device("0,1") == "0,1"  # a plain process: as given
    assert distributed.local_device(None) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "cuda_present", lambda: False)
    assert distributed.local_device(None) == "cpu" and distributed.local_device("") == "cpu"
    assert distributed.local_device("CPU") == "cpu"
    monkeypatch.setattr(distributed, "cuda_present", lambda: True)
    assert distributed.local_device(None) == "1"  # LOCAL_RANK's GPU, as YOLO's --device spells it
    assert distributed.local_device(None, style="torch") == "cuda:1"  # as detectron2's MODEL.DEVICE
    assert distributed.local_device("2,3") == "3"  # the LOCAL_RANK-th of the GPUs given
    assert distributed.local_device("cuda:0", style="torch") == "cuda:0"


# ---- joining the group: bounded, said, interruptible (subprocesses of tests/toy_main.py) ---------


@pytest.mark.parametrize("minutes", [0, -1, math.nan, math.inf, 1e9])
def test_the_wait_must_be_a_sane_number_of_minutes(minutes: float) -> None:
    with pytest.raises(ArgumentError, match="--dist-timeout must be a number of minutes above 0"):
        distributed.check_wait(minutes)
    assert distributed.check_wait(0.05) == 0.05


def test_the_environment_must_say_where_to_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    group = Group(rank=1, world=2)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(DistributedError, match="MASTER_ADDR is not.*unset WORLD_SIZE and RANK"):
        distributed.Rendezvous.of(group, minutes=1)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for port in ("0", "65536", "http", "２９５００", "-1"):
        monkeypatch.setenv("MASTER_PORT", port)
        with pytest.raises(DistributedError, match="MASTER_PORT=.* is not a TCP port"):
            distributed.Rendezvous.of(group, minutes=1)
    for hours in ("x", "nan", "0", "-3", "1e400"):
        monkeypatch.setenv("KIT_DIST_TIMEOUT_HOURS", hours)
        with pytest.raises(DistributedError, match="KIT_DIST_TIMEOUT_HOURS="):
            distributed.collective_timeout()
    monkeypatch.setenv("KIT_DIST_TIMEOUT_HOURS", "0.5")
    assert distributed.collective_timeout().total_seconds() == 1800
