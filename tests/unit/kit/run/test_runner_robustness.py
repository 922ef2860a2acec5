"""The run loop against hostile and careless input: one image never stops a run.

Bad files, failing forwards, extreme sizes, hostile names, a full disk (a file-size limit in a
subprocess), Ctrl-C (SIGINT to a subprocess) and two runs on one folder (two processes). The
detector is the toy adapter of ``conftest.py``; its letterbox fails on a 10 x 10000 image as
yolov7's does.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit.core.detection import Detection
from kit.core.errors import OutputError
from kit.core.results import DetectionResult
from kit.core.targets import get_target
from kit.methods.registry import get_method
from kit.run.runner import LoopSettings, run
from kit.rundir import journal, reader
from kit.rundir.naming import MAX_NAME_BYTES, safe_stem
from kit.rundir.schema import LOCK_NAME
from kit.rundir.writer import RunSettings, RunWriter
from tests.conftest import ToyAdapter

PNG_BYTES = cv2.imencode(".png", np.full((24, 32, 3), 120, np.uint8))[1].tobytes()


def _png(path: Path | bytes, shape: tuple[int, int] = (24, 32), *, seed: int = 0) -> Path:
    image = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    data = cv2.imencode(".png", image)[1].tobytes()
    with open(path, "wb") as f:
        f.write(data)
    return Path(os.fsdecode(path))


def _writer(out: Path, **kwargs: Any) -> RunWriter:
    settings = RunSettings(
        upstream="toy", weights="none", method="gradcam", target="class-logit", layers=["feat"]
    )
    return RunWriter(settings, out_dir=out, **kwargs)


GRADCAM = LoopSettings(layers=["feat"], target=get_target("class-logit"), method=get_method("gradcam"))


def _run(adapter: ToyAdapter, sources: list[Path], out: Path, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    writer = _writer(out)
    settings = dataclasses.replace(GRADCAM, **kwargs)
    failed = run(adapter, sources=sources, writer=writer, settings=settings)
    manifest = json.loads(writer.finish().read_bytes().decode("utf-8"))  # strict UTF-8
    return failed, manifest


def _by_name(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(entry["file"]).name: entry for entry in manifest["images"]}


def _assert_inside_and_clean(out: Path, *, parts: bool = False) -> None:
    """Every file is under ``out``, every name bounded and not hidden; no lock, no temporary file
    (``parts``: but the part files an interrupted run keeps for --resume)."""
    root = out.resolve()
    for path in out.rglob("*"):
        if parts and journal.PARTS_DIR in path.relative_to(out).parts:
            continue
        assert path.resolve().is_relative_to(root), path
        assert len(path.name.encode("utf-8")) <= MAX_NAME_BYTES + len("_summary.jpg") + 4, path.name
        assert not path.name.startswith("."), path  # no .tmp, no .kit.lock, no ".." stem
        path.name.encode("utf-8")  # valid UTF-8: no undecodable byte went into a name


def _files_of(out: Path, entry: dict[str, Any]) -> list[Path]:
    paths = [entry["summary"], entry["maps_file"]]
    paths += [m["overlay"] for d in entry["detections"] for m in d["maps"].values()]
    return [out / p for p in paths if p]


# ---- one image never stops a run -------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3])
def test_each_kind_of_failure_is_recorded_and_the_run_goes_on(tmp_path: Path, batch_size: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ok1, ok2 = _png(src / "ok1.png"), _png(src / "ok2.png", seed=1)
    notes = src / "notes.txt"
    notes.write_text("not an image")
    wide = _png(src / "wide.png", (10, 10000))  # the letterbox resizes it to 0 rows: cv2.error
    poison = _png(src / "poison.png", (13, 17))  # the toy forward raises on this size
    adapter = ToyAdapter(poison=lambda image: image.shape[:2] == (13, 17))
    out = tmp_path / "run"
    failed, manifest = _run(adapter, [ok1, notes, wide, poison, ok2], out, batch_size=batch_size)

    assert failed == 3
    entries = _by_name(manifest)
    assert sorted(entries) == ["notes.txt", "ok1.png", "ok2.png", "poison.png", "wide.png"]
    for name in ("ok1.png", "ok2.png"):
        assert entries[name]["error"] is None and len(entries[name]["detections"]) == 1
        assert all(p.is_file() for p in _files_of(out, entries[name]))
    assert entries["notes.txt"]["error"].startswith(f"cannot read image '{notes}'")
    assert entries["wide.png"]["error"].startswith(
        f"could not explain '{wide}' (width 10000, height 10): cv2.error: "
    )
    assert entries["poison.png"]["error"] == (
        f"could not explain '{poison}' (width 17, height 13): RuntimeError: toy forward: a poisoned image "
        "in the batch"
    )
    for name in ("notes.txt", "wide.png", "poison.png"):
        assert entries[name]["detections"] == [] and entries[name]["summary"] is None
    if batch_size == 3:
        # [ok1, wide, poison] fails in preprocess (no forward), then one at a time: ok1, poison
        # (raises); then [ok2]. Only the bad images are recorded.
        assert adapter.forwards == [1, 1, 1]
    _assert_inside_and_clean(out)


def test_a_failing_forward_of_a_batch_is_retried_one_image_at_a_time(tmp_path: Path) -> None:
    sources = [_png(tmp_path / "a.png"), _png(tmp_path / "bad.png", (13, 17)), _png(tmp_path / "c.png")]
    adapter = ToyAdapter(poison=lambda image: image.shape[:2] == (13, 17))
    failed, manifest = _run(adapter, sources, tmp_path / "run", batch_size=3)
    assert failed == 1
    assert adapter.forwards == [3, 1, 1, 1]  # the batch, then a, bad (raises), c
    assert [e["error"] is None for e in manifest["images"]] == [True, False, True]
    assert [Path(e["file"]).name for e in manifest["images"]] == ["a.png", "bad.png", "c.png"]


def test_extreme_aspect_ratios_are_explained_when_the_letterbox_allows(tmp_path: Path) -> None:
    """10000 x 10 and 10 x 10000: maps (and overlays) at their bounded size, 2048 x 2 (the longer side
    capped at kit.core.geometry.MAP_MAX_SIDE), summary tiles bounded, JPEGs readable; boxes in original
    pixels."""
    tall, wide = _png(tmp_path / "tall.png", (10000, 10)), _png(tmp_path / "wide.png", (10, 10000), seed=1)
    out = tmp_path / "run"
    failed, manifest = _run(ToyAdapter(img_size=2000), [tall, wide], out, batch_size=2)
    assert failed == 0
    entries = _by_name(manifest)
    for name, (h, w) in (("tall.png", (10000, 10)), ("wide.png", (10, 10000))):
        entry = entries[name]
        (det,) = entry["detections"]
        assert det["box_xyxy"] == [0.0, 0.0, float(w), float(h)]
        assert det["maps"]["feat"]["energy_in_box"] == 1.0  # the box is the whole image
        bounded = (2048, 2) if h > w else (2, 2048)
        assert cv2.imread(str(out / det["maps"]["feat"]["overlay"])).shape == (*bounded, 3)
        sheet = cv2.imread(str(out / entry["summary"]))
        assert sheet is not None and sheet.shape[0] <= 2 * 480 and sheet.shape[1] <= 2 * 480 + 4
        with np.load(out / entry["maps_file"]) as data:
            assert data["det0_feat"].shape == bounded


def test_write_failure_removes_the_images_partial_files(tmp_path: Path, monkeypatch: Any) -> None:
    """ENOSPC while writing the raw maps: overlays and summary of that image go, the next is written."""
    real = np.lib.format.write_array
    calls = []

    def disk_full(file: Any, array: Any, **options: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            file.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(file, array, **options)

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)  # each map of the npz, as it is written
    sources = [_png(tmp_path / "full.png"), _png(tmp_path / "later.png", seed=1)]
    out = tmp_path / "run"
    failed, manifest = _run(ToyAdapter(), sources, out)
    assert failed == 1
    entries = _by_name(manifest)
    assert entries["full.png"]["error"] == (
        f"could not write the results of '{sources[0]}': "
        f"OSError: [Errno {errno.ENOSPC}] No space left on device: 'maps/full.npz'"
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "later",
        "later/det0_feat.jpg",
        "later_summary.jpg",
        "manifest.json",
        "maps",
        "maps/later.npz",
    ]


def test_a_failed_record_is_written_after_the_next_image(tmp_path: Path, monkeypatch: Any) -> None:
    writer = _writer(tmp_path / "run")
    part = writer._part
    real = part._flush
    failures = iter([True, False, False])

    def flaky() -> None:
        if next(failures, False):
            raise OSError(errno.ENOSPC, "No space left on device")
        real()

    monkeypatch.setattr(part, "_flush", flaky)
    sources = [_png(tmp_path / "a.png"), _png(tmp_path / "b.png")]
    failed = run(ToyAdapter(), sources=sources, writer=writer, settings=GRADCAM)
    assert failed == 0
    on_disk = reader.read_manifest(tmp_path / "run")  # a's record caught up with b's
    assert [Path(e["file"]).name for e in on_disk["images"]] == ["a.png", "b.png"]

    monkeypatch.setattr(
        writer, "_write_manifest", lambda m: (_ for _ in ()).throw(OSError(errno.EFBIG, "big"))
    )
    with pytest.raises(OutputError, match=r"cannot write the manifest .*manifest\.json: big; .* 2 images"):
        writer.finish()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert len(reader.read_manifest(tmp_path / "run")["images"]) == 2  # the parts stay for --resume


# ---- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("bus", "bus"),
        ("Bild_ä_画像", "Bild_ä_画像"),
        ("a..b", "a..b"),
        ("..", "image-"),
        (".", "image-"),
        ("", "image-"),
        (".hidden", "hidden-"),
        ("a\\b", "a_b-"),
        ("con:x*y?", "con_x_y_-"),
        ("tab\there", "tab_here-"),
        (os.fsdecode(b"e_\xff\xfe"), "e___-"),
        ("x" * 240, "x" * (MAX_NAME_BYTES - 9) + "-"),
    ],
)
def test_safe_stem(stem: str, expected: str) -> None:
    got = safe_stem(stem)
    if expected.endswith("-"):
        assert re.fullmatch(re.escape(expected) + "[0-9a-f]{8}", got), got
    else:
        assert got == expected
    assert len(got.encode("utf-8")) <= MAX_NAME_BYTES


def test_safe_stem_cuts_multibyte_names_at_a_character_and_keeps_them_apart() -> None:
    a, b = safe_stem("画" * 100 + "a"), safe_stem("画" * 100 + "b")
    assert a != b and a[:30] == "画" * 30
    assert len(a.encode("utf-8")) <= MAX_NAME_BYTES and a.encode("utf-8").decode("utf-8") == a


HOSTILE = [
    "...png",  # stem ".."
    ".",
    "..",
    "a\\b.png",
    "x" * 240 + ".png",
    os.fsdecode(b"\xff\xfe.jpg"),
    "a.png",
    "A.png",
    "a.jpg",
    "maps.png",
    "MAPS.jpg",
    "manifest.json.png",
    "a_summary.jpg.png",  # its folder would be a.png's summary file
    "x/../../escape.png",
]


def test_hostile_names_stay_inside_the_run_folder_and_unique(tmp_path: Path) -> None:
    out = tmp_path / "run"
    writer = _writer(out)
    image = np.full((20, 30, 3), 90, np.uint8)
    cam = np.zeros((20, 30), np.float32)
    cam[5:10, 5:10] = 1.0
    det = [
        DetectionResult(
            id=0,
            detection=Detection(image_index=0, box_xyxy=(0, 0, 10, 10), class_id=0, score=0.5, row=0),
            class_name="0",
            maps={"feat": cam},
        )
    ]
    records = [writer.write_image(source=name, image_bgr=image, detections=det) for name in HOSTILE]
    writer.finish()
    folders = [r.summary.removesuffix("_summary.jpg") for r in records]  # type: ignore[union-attr]
    assert len({f.casefold() for f in folders}) == len(HOSTILE)
    assert folders[6:9] == ["a", "A_2", "a_3"]
    assert folders[9:11] == ["maps_2", "MAPS_3"]
    assert folders[11] == "manifest.json_2"
    assert folders[12] == "a_summary.jpg_2"  # "a_summary.jpg" is a.png's summary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written beside the run
    _assert_inside_and_clean(out)
    manifest = json.loads((out / "manifest.json").read_bytes().decode("utf-8"))
    assert manifest["images"][5]["file"] == "\\xff\\xfe.jpg"  # backslashreplace, valid UTF-8
    for entry in manifest["images"]:
        assert all(p.is_file() for p in _files_of(out, entry))


def test_hostile_file_names_on_disk_are_read_and_explained(tmp_path: Path) -> None:
    """The names that stopped a run: 240 characters, not UTF-8, stem '..', a backslash."""
    src = tmp_path / "src"
    src.mkdir()
    sources = [
        _png(src / ("y" * 240 + ".png")),
        _png(os.fsencode(src) + b"/e_\xff\xfe.png"),
        _png(src / "...png"),
        _png(src / "a\\b.png"),
    ]
    out = tmp_path / "run"
    failed, manifest = _run(ToyAdapter(), sources, out, batch_size=2)
    assert failed == 0 and len(manifest["images"]) == 4
    assert manifest["images"][1]["file"] == f"{src}/e_\\xff\\xfe.png"
    assert manifest["images"][2]["summary"].startswith("image-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "src"]
    _assert_inside_and_clean(out)


def test_temporary_names_carry_pid_and_a_random_token_and_go_on_failure(
    tmp_path: Path, monkeypatch: Any
) -> None:
    one, two = _writer(tmp_path / "one"), _writer(tmp_path / "two")
    seen: list[str] = []

    def refuse(src: Any, dst: Any) -> None:
        seen.append(Path(src).name)
        assert Path(src).is_file()
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="File too large"):
        one.write_image(source="a.png", image_bgr=np.zeros((8, 8, 3), np.uint8), detections=[])
    one.add_error("b.png", "boom")  # recorded in its part (appended, not replaced)
    monkeypatch.undo()
    assert re.fullmatch(rf"\.a_summary\.jpg\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", seen[0])
    assert one._token != two._token and str(os.getpid()) in two._token
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        journal.PARTS_DIR,
        LOCK_NAME,
        "manifest.json",
    ]
    assert [e["file"] for e in json.loads(one.finish().read_text())["images"]] == ["b.png"]


# ---- subprocesses: a full disk, Ctrl-C, two runs on one folder ----------------------------------


def test_a_keyboard_interrupt_inside_the_run_is_recorded_and_raised(tmp_path: Path) -> None:
    sources = [_png(tmp_path / f"i{k}.png", seed=k) for k in range(4)]
    adapter = ToyAdapter()
    calls = []

    def stop(path: Path, image: Any, result: Any) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    writer = _writer(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run(adapter, sources=sources, writer=writer, settings=GRADCAM, on_image=stop)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["interrupted"] is True and len(manifest["images"]) == 2
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with pytest.raises(OutputError, match=r"holds a run that did not finish .*resume it with --resume"):
        _writer(tmp_path / "run")  # a new run would bury the interrupted one's records
    _writer(tmp_path / "run", resume=True).close()  # the folder is free again, to resume


def test_a_lock_of_another_host_is_never_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": "then"}))
    with pytest.raises(OutputError, match=r"pid 999999 on host elsewhere, started then.*If no such run"):
        _writer(out)


def test_the_writer_releases_its_lock_as_a_context_manager_on_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="boom"), _writer(out):
        assert (out / LOCK_NAME).is_file()
        raise ValueError("boom")
    assert not (out / LOCK_NAME).exists()
    with pytest.raises(KeyboardInterrupt), _writer(out):
        raise KeyboardInterrupt
    assert json.loads((out / "manifest.json").read_text())["interrupted"] is True
    assert not (out / LOCK_NAME).exists()
