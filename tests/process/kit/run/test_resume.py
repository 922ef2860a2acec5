"""Many images: torchrun, --resume and their refusals, on the toy detector (no upstream).

One reference run (one process, ``--eval``) is compared with a 2-process torchrun run and with
runs killed by SIGKILL (one process, and one rank of two) and resumed: the same images,
detections, order, maps within float16 rounding, and the same evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit.api import Explainer
from kit.cli import main as cli
from kit.core.errors import OutputError
from kit.rundir import journal, reader
from kit.rundir.schema import LOCK_NAME
from kit.rundir.writer import ResumeError
from kit.upstreams.loaders import Loaded
from tests.children import child, child_env
from tests.conftest import ToyAdapter

REPO_ROOT = Path(__file__).resolve().parents[4]
TOY = str(REPO_ROOT / "tests" / "toy_main.py")
NAMES = ["A.png", "a.jpg", "b c.png", "notes.txt", "Über.png", "d.png", "e.png", "f.png", "g.png"]
EVAL = ("--eval-curves", "3", "--eval-steps", "2")


def toy(*args: str, nproc: int = 1, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """tests/toy_main.py as a user runs an entry point: plainly, or under torchrun on a free port."""
    launcher = (
        [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    )
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *launcher, TOY, *args], env=environ, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Nine sources (odd names, a file that is no image) and their labels (every image's content)."""
    root = tmp_path_factory.mktemp("toy")
    src, labels = root / "src", root / "labels"
    src.mkdir()
    labels.mkdir()
    for k, name in enumerate(NAMES):
        path = src / name
        if name.endswith(".txt"):
            path.write_text("not an image")
            continue
        image = np.random.default_rng(k).integers(0, 255, (20 + 3 * k, 40 - k, 3), dtype=np.uint8)
        path.write_bytes(cv2.imencode(path.suffix, image)[1].tobytes())
        (labels / f"{path.stem}.txt").write_text("0 0.5 0.5 1 1\n")
    return src, labels


@pytest.fixture(scope="module")
def reference(images: tuple[Path, Path]) -> Path:
    """One plain process, uninterrupted."""
    src, labels = images
    out = src.parent / "runs" / "one"
    result = toy(
        "--source", str(src), "--project", str(out.parent), "--name", "one", "--eval", str(labels), *EVAL
    )
    assert result.returncode == 1, result.stderr  # notes.txt failed, the rest explained
    return out


def args(images: tuple[Path, Path], out: Path, *more: str) -> list[str]:
    src, labels = images
    return [
        "--source",
        str(src),
        "--project",
        str(out.parent),
        "--name",
        out.name,
        "--eval",
        str(labels),
        *EVAL,
        *more,
    ]


def assert_same_run(out: Path, reference: Path) -> None:
    """The same images, detections and order; maps within float16 rounding; the same evaluation."""
    mine, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert mine["finished"] is True and mine["interrupted"] is False
    assert [i["file"] for i in mine["images"]] == [i["file"] for i in theirs["images"]]
    for a, b in zip(mine["images"], theirs["images"]):
        assert {k: a[k] for k in ("width", "height", "summary", "maps_file", "error")} == {
            k: b[k] for k in ("width", "height", "summary", "maps_file", "error")
        }
        assert len(a["detections"]) == len(b["detections"])
        for da, db in zip(a["detections"], b["detections"]):
            assert (da["id"], da["class_id"], da["box_xyxy"], da["level"]) == (
                db["id"], db["class_id"], db["box_xyxy"], db["level"]
            )  # fmt: skip
            assert da["score"] == pytest.approx(db["score"], abs=1e-5)
            for layer, m in da["maps"].items():
                assert (m["overlay"], m["no_gradient"]) == (
                    db["maps"][layer]["overlay"],
                    db["maps"][layer]["no_gradient"],
                )
                if m["energy_in_box"] is not None:
                    assert m["energy_in_box"] == pytest.approx(db["maps"][layer]["energy_in_box"], abs=1e-3)
        if a["maps_file"]:
            npz_a, npz_b = np.load(out / a["maps_file"]), np.load(reference / b["maps_file"])
            assert sorted(npz_a) == sorted(npz_b)
            for key in npz_a:
                np.testing.assert_allclose(npz_a[key], npz_b[key], atol=2e-3)  # float16: 1e-3 near 1
    eval_a, eval_b = (json.loads((d / "eval.json").read_text()) for d in (out, reference))
    assert eval_a["images"] == eval_b["images"] and eval_a["unmatched"] == eval_b["unmatched"]
    assert [(r["file"], r["id"]) for r in eval_a["detections"]] == [
        (r["file"], r["id"]) for r in eval_b["detections"]
    ]
    curves = [sorted(r["maps"]["feat"]) for r in eval_a["detections"] if "feat" in r["maps"]]
    assert curves == [sorted(r["maps"]["feat"]) for r in eval_b["detections"] if "feat" in r["maps"]]
    assert sum("deletion_auc" in r["maps"].get("fused", {}) for r in eval_a["detections"]) == 3  # the first 3
    for key in ("ground_truth", "detections", "matched", "recall", "precision"):
        assert eval_a["summary"][key] == eval_b["summary"][key]
    assert eval_a["summary"]["ebpg"] == pytest.approx(eval_b["summary"]["ebpg"], abs=1e-3)
    assert not (out / journal.PARTS_DIR).exists() and not (out / LOCK_NAME).exists()
    assert not [p for p in out.rglob(".*")]  # no temporary file of a killed process left


def test_two_processes_write_what_one_writes(images: tuple[Path, Path], reference: Path) -> None:
    out = reference.parent / "two"
    result = toy(*args(images, out), nproc=2)
    assert result.returncode == 1, result.stderr  # every rank exits 1: an image failed
    assert_same_run(out, reference)
    assert result.stderr.count("explained 8 of 9 images") == 0  # one display, counting both ranks:
    assert result.stderr.count("explained 9 of 9 images (2 processes) (all ranks done)") == 1
    assert result.stderr.count("cannot read image") == 1  # the failed image, named once, by its rank
    assert result.stdout.count("eval: 8 images") == 1  # one summary for the whole run, from rank 0
    assert result.stderr.count("explained 9 images: ") == 1  # one summary line, rank 0's, of every image
    assert "1 failed; run folder " + str(out) in result.stderr


@pytest.mark.parametrize("kill_at", [2, 10])
def test_a_run_killed_at_any_moment_resumes_to_the_same_result(
    images: tuple[Path, Path], reference: Path, kill_at: int
) -> None:
    out = reference.parent / f"killed{kill_at}"
    killed = toy(*args(images, out), env={"TOY_KILL_AT": str(kill_at)})
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no handler ran
    before = reader.read_manifest(out)  # the parts hold what it finished
    assert len(before["images"]) < len(NAMES) and before["finished"] is False
    resumed = toy(*args(images, out, "--resume"))
    assert resumed.returncode == 1, resumed.stderr
    done = len([i for i in before["images"] if not i["error"]])
    assert f"{done} of 9 images are done, {9 - done} to explain" in resumed.stderr
    assert_same_run(out, reference)


def test_a_rank_killed_under_torchrun_then_resumed(images: tuple[Path, Path], reference: Path) -> None:
    out = reference.parent / "rank1killed"
    killed = toy(
        *args(images, out), nproc=2, env={"TOY_KILL_AT": "3", "TOY_KILL_RANK": "1", "TOY_DELAY": "0.2"}
    )
    assert killed.returncode != 0
    assert "interrupted: partial results in" in killed.stderr  # rank 0, stopped by torchrun, indexed its part
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] is True and not (out / LOCK_NAME).exists()
    resumed = toy(*args(images, out, "--resume"), nproc=2)
    assert resumed.returncode == 1, resumed.stderr
    assert_same_run(out, reference)


def test_more_ranks_than_images_wait_and_exit_0(images: tuple[Path, Path], tmp_path: Path) -> None:
    src = tmp_path / "two"
    src.mkdir()
    for name in ("b.png", "a.png"):
        shutil.copy(images[0] / "d.png", src / name)
    result = toy("--source", str(src), "--project", str(tmp_path), "--name", "run", nproc=3)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [Path(i["file"]).name for i in manifest["images"]] == ["a.png", "b.png"]
    assert not (tmp_path / "run" / journal.PARTS_DIR).exists()


def test_two_runs_at_once_on_one_folder_the_second_is_refused(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = child("rundir", "hold-lock", str(out))
    holder = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        second = toy(
            "--source", str(images[0]), "--project", str(tmp_path), "--name", "run", "--exist-ok", nproc=2
        )
        assert second.returncode != 0
        assert (
            second.stderr.count(
                f"is in use by another kit run (pid {holder.pid} on host {socket.gethostname()}"
            )
            == 1
        )
        assert json.loads((out / "manifest.json").read_text())["images"] == []  # not written by the second
    finally:
        holder.communicate("", timeout=60)
    assert not (out / LOCK_NAME).exists()


# ---- refusals, in process ---------------------------------------------------------------------


def explainer(img_size: int = 32) -> Explainer:
    loaded = Loaded(adapter=ToyAdapter(img_size=img_size), weights="toy.pt", settings={"img_size": img_size})
    return Explainer(loaded, upstream="toy")


def test_resume_with_other_settings_is_refused_listing_each(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    explainer().run(images[0], out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ResumeError) as refused:
        explainer(img_size=64).run(images[0], out, method="gradcampp", resume=True)
    message = str(refused.value)
    assert '  method: the run has "gradcam", this run "gradcampp"' in message
    assert "  img_size: the run has 32, this run 64" in message and "target" not in message
    assert (out / "manifest.json").read_bytes() == before and not (out / LOCK_NAME).exists()


def test_resume_of_a_folder_that_is_not_a_run_changes_nothing(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(images[0], folder)
    listing = sorted(p.name for p in folder.iterdir())
    with pytest.raises(
        ResumeError, match=r"photos is not a kit run folder \(it has no manifest.json\); nothing"
    ):
        explainer().run(images[0], folder, resume=True)
    with pytest.raises(ResumeError, match=r"there is no run folder .*missing to resume"):
        explainer().run(images[0], tmp_path / "missing", resume=True)
    assert sorted(p.name for p in folder.iterdir()) == listing and not (tmp_path / "missing").exists()


def test_a_run_of_an_older_kit_resumes(
    images: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A manifest without the new fields (finished, fuse, weights_sha256, upstream_commit, batch_size):
    what it records is compared, what it lacks is named, its complete images are kept."""
    out = tmp_path / "run"
    explainer().run(images[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    old = {
        k: v
        for k, v in manifest.items()
        if k not in ("finished", "fuse", "weights_sha256", "upstream_commit", "batch_size")
    }
    old["images"] = old["images"][:4]  # it was stopped after four images
    (out / "manifest.json").write_text(json.dumps(old))
    with caplog.at_level("INFO", logger="kit"):
        result = explainer().run(images[0], out, resume=True)
    assert "does not record weights_sha256, upstream_commit, fuse (an older kit made it)" in caplog.text
    assert "4 of 9 images are done, 5 to explain" in caplog.text
    assert (result.images, result.failed) == (9, 1)
    assert json.loads((out / "manifest.json").read_text())["images"] == manifest["images"]


def test_a_new_run_into_an_unfinished_one_is_refused(images: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / journal.PARTS_DIR).mkdir(parents=True)
    (out / journal.PARTS_DIR / "0001-r0.jsonl").write_text('{"kit_part": 1}\n')
    with pytest.raises(Exception, match=r"holds a run that did not finish .*resume it with --resume"):
        explainer().run(images[0], out)
    assert (out / journal.PARTS_DIR / "0001-r0.jsonl").is_file()


# ---- a finished run is not replaced by accident; records read back are checked ---------------


def toy_run(*argv: str) -> int:
    """tests/toy_main.py in this process, through the entry points' guarded(): its exit code."""
    from tests import toy_main

    return cli.guarded(lambda: toy_main.main(list(argv)))


def test_exist_ok_into_a_finished_run_is_refused_unless_overwrite(
    images: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, labels = images
    three = tmp_path / "three"
    three.mkdir()
    for name in ("d.png", "e.png", "f.png"):
        shutil.copy(src / name, three / name)
    run = ("--project", str(tmp_path), "--name", "exp")
    assert toy_run("--source", str(src), *run, "--eval", str(labels), *EVAL, "--audit") == 1
    out = tmp_path / "exp"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"manifest.json", "eval.json", "audit.json", "index.html"} <= set(before)
    capsys.readouterr()
    assert toy_run("--source", str(three), *run, "--exist-ok") == 2
    err = capsys.readouterr().err
    assert "holds a finished run (9 images in its manifest.json)" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # untouched
    with pytest.raises(OutputError, match="holds a finished run"):  # the API refuses alike
        explainer().run(three, out)
    assert toy_run("--source", str(three), *run, "--overwrite") == 2  # needs --exist-ok
    assert toy_run("--source", str(three), *run, "--exist-ok", "--overwrite", "--resume") == 2
    assert "--overwrite replaces the run in the folder --exist-ok writes into" in capsys.readouterr().err
    with caplog.at_level("INFO", logger="kit"):
        assert toy_run("--source", str(src), *run, "--resume") == 1  # resuming a finished run stays allowed
    assert "8 of 9 images are done, 1 to explain" in caplog.text  # only notes.txt, which fails again
    assert json.loads((out / "manifest.json").read_text())["finished"] is True

    assert toy_run("--source", str(three), *run, "--exist-ok", "--overwrite") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(i["file"]).name for i in manifest["images"]] == ["d.png", "e.png", "f.png"]
    assert manifest["finished"] is True
    assert not (out / "eval.json").exists() and not (out / "audit.json").exists()  # the old run's
    assert (out / "index.html").read_bytes() != before["index.html"]  # written for the new run
    assert (out / "A_summary.jpg").is_file()  # the old run's pictures stay, unlisted


def test_exist_ok_into_a_folder_of_the_users_own_files_replaces_none_unless_overwrite(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--exist-ok into a folder that is not a kit run but holds files named as the run's (the user's
    index.html, a sheet named like an image's, a folder named like an image's stem): refused before
    any write, every file kept (they were replaced silently); --overwrite replaces them."""
    src = images[0]
    out = tmp_path / "mine"
    (out / "A").mkdir(parents=True)
    (out / "maps").mkdir()
    mine = {
        "index.html": b"my page",
        "d_summary.jpg": b"my sheet",
        "A/notes.txt": b"mine",
        "maps/e.npz": b"x",
    }
    for rel, data in mine.items():
        (out / rel).write_bytes(data)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    capsys.readouterr()
    assert toy_run("--source", str(src), "--project", str(tmp_path), "--name", "mine", "--exist-ok") == 2
    err = capsys.readouterr().err
    assert "is not a kit run folder" in err and "index.html, d_summary.jpg, maps/e.npz, A/" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # no lock, no manifest
    assert all((out / rel).read_bytes() == data for rel, data in mine.items())
    with pytest.raises(OutputError, match="is not a kit run folder"):  # the API refuses alike
        explainer().run(src, out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_bytes(b"unrelated")
    assert toy_run("--source", str(src), "--project", str(tmp_path), "--name", "other", "--exist-ok") == 1
    assert (other / "notes.txt").read_bytes() == b"unrelated" and (other / "manifest.json").is_file()
    assert (
        toy_run(
            "--source", str(src), "--project", str(tmp_path), "--name", "mine", "--exist-ok", "--overwrite"
        )
        == 1
    )
    assert (out / "d_summary.jpg").read_bytes() != b"my sheet"


def test_an_unfinished_runs_records_are_not_buried_by_a_new_run(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    """A manifest with images and no parts (an older kit's interrupted run) counts as a run too; an
    empty one that never got an image (a run refused at its start) does not."""
    out = tmp_path / "run"
    explainer().run(images[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "finished": False}))
    with pytest.raises(OutputError, match=r"holds a run that did not finish \(its manifest.json index"):
        explainer().run(images[0], out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "finished": False, "images": []}))
    explainer().run(images[0], out)  # nothing to lose


def tampered(out: Path, records: list[dict[str, Any]], tmp_path: Path) -> Path:
    """``out`` made a run killed after every image: the manifest holds no image, one part holds every
    record; the first four records are made hostile."""
    bad = [dict(r) for r in records]
    outside = tmp_path / "outside_summary.jpg"
    outside.write_bytes((out / bad[0]["summary"]).read_bytes())
    bad[0]["summary"] = "../outside_summary.jpg"  # a file outside that exists: "complete" to the old kit
    bad[2]["detections"] = "x"  # the wrong type: the old kit's exit 3, and its lock stayed
    bad[3] = {**bad[3], "file": "/etc/passwd"}  # not the image at its position
    lines = [json.dumps({"kit_part": 1, "attempt": "0001", "rank": 0, "world": 1})]
    for index, one in enumerate(bad):
        line = json.dumps({"index": index, "n": 0, "image": one})
        if index == 1:
            line = line.replace('"score": ', '"score": NaN, "_": ', 1)  # NaN, as Python's json writes it
        lines.append(line)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "finished": False, "images": []}))
    (out / journal.PARTS_DIR).mkdir()
    part = out / journal.PARTS_DIR / "0001-r0.jsonl"
    part.write_text("\n".join(lines) + "\n")
    return part


def test_a_resumed_run_redoes_every_record_it_cannot_trust(images: tuple[Path, Path], tmp_path: Path) -> None:
    clean, out = tmp_path / "clean", tmp_path / "tampered"
    assert toy(*("--source", str(images[0]), "--project", str(tmp_path), "--name", "clean")).returncode == 1
    shutil.copytree(clean, out)
    records = json.loads((clean / "manifest.json").read_text())["images"]
    part = tampered(out, records, tmp_path)
    resumed = toy("--source", str(images[0]), "--project", str(tmp_path), "--name", "tampered", "--resume")
    assert resumed.returncode == 1, resumed.stderr  # notes.txt; never 3
    assert "4 of 9 images are done, 5 to explain" in resumed.stderr  # the 4 tampered and notes.txt
    for line, why in [
        (2, "not a summary sheet the kit names"),
        (3, "'score': nan is not a finite number"),
        (4, "'detections': 'x' is not a list"),
        (5, "'/etc/passwd' is not the image at position 3"),
    ]:
        assert resumed.stderr.count(f"{part}: line {line} is not a record") == 1, resumed.stderr  # once
        assert why in resumed.stderr
    manifest = json.loads((out / "manifest.json").read_text(), parse_constant=lambda c: {}[c])  # NaN: refused
    assert manifest["images"] == records  # as the clean run wrote them
    assert "/etc/passwd" not in (out / "manifest.json").read_text()
    assert not (out / LOCK_NAME).exists() and not (out / journal.PARTS_DIR).exists()
    assert (tmp_path / "outside_summary.jpg").is_file()  # never removed, never listed


def test_every_way_out_of_a_run_start_releases_the_lock(
    images: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while deciding what is done (here a TypeError) still ends with the lock released."""
    from kit import api

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(api, "_start", broken)
    with pytest.raises(TypeError, match="a bug"):
        explainer().run(images[0], tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_NAME).exists()
