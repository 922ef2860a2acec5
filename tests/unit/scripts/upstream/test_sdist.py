"""The sdist source kind without git: the archive's hash, where a URL finds it, and hostile archives
refused before anything is written (scripts.upstream.sdist)."""

from __future__ import annotations

import os
import tarfile
import threading
from pathlib import Path

import pytest

from scripts.upstream import sdist
from scripts.upstream.config import Upstream
from scripts.upstream.errors import ArchiveError, FetchError
from tests.fixture_repos import (
    SDIST_NAME,
    SDIST_VERSION,
    make_sdist,
    sdist_files,
    sdist_members,
    tar_member,
    write_tar_gz,
)

TOP = f"{SDIST_NAME}-{SDIST_VERSION}"


def pin(sha256: str) -> Upstream:
    return Upstream(
        name="demo",
        url="",
        commit="",
        patches=(),
        exclude=(),
        requirements=(),
        entry_point="e.py",
        package=SDIST_NAME,
        version=SDIST_VERSION,
        sha256=sha256,
    )


def test_a_good_sdist_unpacks_below_its_top_folder_with_its_bytes_and_modes(tmp_path: Path) -> None:
    archive, sha = make_sdist(tmp_path)
    sdist.verify(archive, pin(sha), what="the archive")
    sdist.unpack(archive, tmp_path / "tree", upstream=pin(sha))
    got = {
        str(p.relative_to(tmp_path / "tree")): p.read_bytes()
        for p in (tmp_path / "tree").rglob("*")
        if p.is_file()
    }
    want = {rel: c.encode() if isinstance(c, str) else c for rel, c in sdist_files().items()}
    assert got == want
    assert os.stat(tmp_path / "tree" / "demo_pkg" / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "tree" / "README.md").st_mode & 0o777 == 0o644


def test_a_hash_mismatch_names_both_hashes_and_leaves_the_file(tmp_path: Path) -> None:
    archive, sha = make_sdist(tmp_path)
    before = archive.read_bytes()
    wrong = "0" * 64
    with pytest.raises(ArchiveError) as info:
        sdist.verify(archive, pin(wrong), what="the archive")
    assert sha in str(info.value) and wrong in str(info.value) and str(archive) in str(info.value)
    assert archive.read_bytes() == before


def test_a_fifo_or_folder_named_as_the_archive_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / f"{TOP}.tar.gz"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _capture(outcome, fifo))
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], ArchiveError) and "not a regular file" in str(outcome[0])
    with pytest.raises(ArchiveError, match="not a regular file"):
        sdist.sha256_of(tmp_path)


def _capture(outcome: list[BaseException], path: Path) -> None:
    try:
        sdist.sha256_of(path)
    except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
        outcome.append(e)


def test_an_archive_beyond_any_sdists_size_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, sha = make_sdist(tmp_path)
    monkeypatch.setattr(sdist, "MAX_ARCHIVE_BYTES", archive.stat().st_size - 1)
    with pytest.raises(ArchiveError, match="more than an sdist may"):
        sdist.verify(archive, pin(sha), what="the archive")


def test_a_local_url_names_the_file_or_a_folder_holding_it(tmp_path: Path) -> None:
    archive, sha = make_sdist(tmp_path / "mirror")
    assert sdist.local_archive(pin(sha), str(archive)) == archive
    assert sdist.local_archive(pin(sha), str(tmp_path / "mirror")) == archive
    assert sdist.local_archive(pin(sha), "https://example.com/simple") is None
    assert sdist.local_archive(pin(sha), f"file://{tmp_path}/simple") is None  # an index for pip
    assert sdist.local_archive(pin(sha), "") is None  # pip's configured index
    with pytest.raises(FetchError, match=f"holds no {TOP}.tar.gz"):
        sdist.local_archive(pin(sha), str(tmp_path))
    with pytest.raises(FetchError, match="does not exist"):
        sdist.local_archive(pin(sha), str(tmp_path / "absent.tar.gz"))


GOOD = sdist_members(sdist_files())


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (tar_member(f"{TOP}/link", kind=tarfile.SYMTYPE), "is a link"),
        (tar_member(f"{TOP}/hard", kind=tarfile.LNKTYPE), "is a link"),
        (tar_member(f"{TOP}/dev", kind=tarfile.CHRTYPE), "a device or FIFO"),
        (tar_member(f"{TOP}/fifo", kind=tarfile.FIFOTYPE), "a device or FIFO"),
        (tar_member(f"{TOP}/../../evil.txt", b"x"), "climbs out"),
        (tar_member("/tmp/evil.txt", b"x"), "absolute path"),
        (tar_member("other-1.0/evil.txt", b"x"), "outside the top folder"),
        (tar_member(f"{TOP}/.git/hooks/post-checkout", b"#!/bin/sh\n"), "git metadata"),
        (tar_member(f"{TOP}/demo_pkg/.GitAttributes", b"* filter=x\n"), "git metadata"),
        (tar_member(f"{TOP}/README.md", b"twice\n"), "appears twice"),
    ],
)
def test_hostile_members_are_refused_before_anything_is_written(
    tmp_path: Path, extra: tuple[tarfile.TarInfo, bytes], expected: str
) -> None:
    if extra[0].name == "/tmp/evil.txt":
        extra[0].name = str(tmp_path / "evil.txt")  # absolute, inside this test's folder
    if extra[0].issym() or extra[0].islnk():
        extra[0].linkname = "/etc/passwd"
    archive = tmp_path / "in" / f"{TOP}.tar.gz"
    sha = write_tar_gz(archive, [*GOOD[:3], extra, *GOOD[3:]])
    with pytest.raises(ArchiveError) as info:
        sdist.unpack(archive, tmp_path / "tree", upstream=pin(sha))
    assert expected in str(info.value) and archive.name in str(info.value)
    assert not (tmp_path / "tree").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing beside, nothing above


def test_more_members_than_the_bound_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdist, "MAX_MEMBERS", 64)
    many = [tar_member(f"{TOP}/f{i}.py", b"") for i in range(80)]
    archive = tmp_path / f"{TOP}.tar.gz"
    sha = write_tar_gz(archive, [GOOD[0], *many])
    with pytest.raises(ArchiveError, match="more than 64 members"):
        sdist.unpack(archive, tmp_path / "tree", upstream=pin(sha))
    assert not (tmp_path / "tree").exists()


def test_members_whose_sizes_add_up_beyond_the_bound_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdist, "MAX_UNPACKED_BYTES", 1000)
    archive = tmp_path / f"{TOP}.tar.gz"
    sha = write_tar_gz(archive, [GOOD[0], *(tar_member(f"{TOP}/f{i}", b"z" * 400) for i in range(3))])
    with pytest.raises(ArchiveError, match="unpacks to more than 1000 bytes"):
        sdist.unpack(archive, tmp_path / "tree", upstream=pin(sha))
    assert not (tmp_path / "tree").exists()


def test_a_file_that_is_no_tar_gz_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / f"{TOP}.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(ArchiveError, match="not a readable .tar.gz"):
        sdist.unpack(archive, tmp_path / "tree", upstream=pin("0" * 64))
    assert not (tmp_path / "tree").exists()


def test_the_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert sdist.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "kit" / "sdist"
    assert sdist.cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "kit" / "sdist"


def test_a_cached_archive_that_lost_its_hash_is_refused_saying_how_to_fetch_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive, sha = make_sdist(tmp_path / "mirror")
    cached = tmp_path / "cache" / "kit" / "sdist" / archive.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(archive.read_bytes()[:-1])  # truncated
    with pytest.raises(ArchiveError) as info:
        sdist.obtain_archive(pin(sha), str(archive), origin="env KIT_DEMO_URL", python="unused")
    assert f"the cached archive {cached}" in str(info.value) and f"rm '{cached}'" in str(info.value)
    assert cached.read_bytes() == archive.read_bytes()[:-1]  # refused, not replaced behind the user's back
    cached.unlink()
    assert sdist.obtain_archive(pin(sha), str(archive), origin="env KIT_DEMO_URL", python="unused") == cached
    assert cached.read_bytes() == archive.read_bytes()


def test_a_cache_that_cannot_be_written_is_an_error_naming_it_and_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive, sha = make_sdist(tmp_path / "mirror")
    with pytest.raises(FetchError, match=f"cannot keep {TOP}.tar.gz in {tmp_path / 'cache'}.*XDG_CACHE_HOME"):
        sdist.obtain_archive(pin(sha), str(archive), origin="env KIT_DEMO_URL", python="unused")
