"""kit.evaluation.audit: per-class energy_in_box of a run folder written by the kit's own RunWriter, the
matched/unmatched split from a real --eval report, old and damaged manifests, locked folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kit.core.results import FUSED, DetectionResult
from kit.evaluation.audit import AuditError, audit_run, main, write_audit
from kit.rundir import reader
from kit.rundir.reader import RunFolderError
from kit.rundir.writer import RunSettings, RunWriter
from tests.runs import IMAGE, OLD_MANIFEST, H, W, det, energy_map, eval_run, write_run


def manifest_energies(run: Path, layer: str) -> dict[str, list[float]]:
    """energy_in_box per class name as the manifest holds it (the audit's numbers come from these)."""
    found: dict[str, list[float]] = {}
    for image in json.loads((run / "manifest.json").read_text())["images"]:
        for d in image["detections"]:
            value = d["maps"][layer]["energy_in_box"]
            if value is not None:
                found.setdefault(d["class_name"], []).append(value)
    return found


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


ENERGIES = {  # (image, id) -> (class, score, energy at the one layer)
    ("a.png", 0): (0, 0.9, 0.8),
    ("a.png", 1): (1, 0.8, 0.3),
    ("a.png", 2): (0, 0.7, 0.1),
    ("b.png", 0): (0, 0.95, 0.45),
    ("b.png", 1): (1, 0.6, 0.9),
    ("b.png", 2): (0, 0.5, 0.6),
    ("c.png", 0): (1, 0.4, 0.2),
}


def energies_run(out: Path) -> Path:
    """A run folder at ``out`` whose detections have the energies of ``ENERGIES``."""
    images: dict[str, list[DetectionResult]] = {}
    for (name, i), (cls, score, energy) in ENERGIES.items():
        images.setdefault(name, []).append(det(i, cls, score, {"74": energy_map(energy)}))
    return write_run(out, images)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return energies_run(tmp_path / "run")


def test_per_class_counts_median_p10_and_share_outside_are_numpys(run: Path) -> None:
    audit = audit_run(run)
    assert (audit.layer, audit.run["images"], audit.run["detections"]) == ("74", 3, 7)
    per_class = manifest_energies(run, "74")
    assert sorted(per_class) == ["cat", "dog"] and len(per_class["cat"]) == 4
    for stats in audit.overall.classes:
        values = np.array(per_class[stats.class_name])
        assert (stats.n, stats.measured, stats.no_gradient) == (len(values), len(values), 0)
        assert stats.median == pytest.approx(np.median(values), abs=0)
        assert stats.p10 == pytest.approx(np.percentile(values, 10), abs=0)
        assert stats.outside == int((values < 0.5).sum())
        assert stats.share_outside == pytest.approx((values < 0.5).mean())
    everything = np.concatenate([np.array(v) for v in per_class.values()])
    total = audit.overall.total
    assert (total.class_name, total.n, total.outside) == ("all", 7, 4)
    assert total.median == np.median(everything) and total.p10 == np.percentile(everything, 10)
    assert [(c.class_id, c.class_name) for c in audit.overall.classes] == [(0, "cat"), (1, "dog")]


def test_the_top_k_are_the_lowest_energies_with_ties_to_the_higher_score(tmp_path: Path) -> None:
    dets = [
        det(i, 0, s, {"74": energy_map(e)}) for i, (s, e) in enumerate([(0.5, 0.2), (0.9, 0.2), (0.7, 0.05)])
    ]
    out = write_run(tmp_path / "run", {"x.png": dets, "y.png": [det(0, 1, 0.3, {"74": energy_map(0.7)})]})
    audit = audit_run(out, top=3)
    assert [(t.file, t.id, t.energy_in_box) for t in audit.top] == [
        ("imgs/x.png", 2, 0.05),
        ("imgs/x.png", 1, 0.2),  # equal energy: the more confident detection first
        ("imgs/x.png", 0, 0.2),
    ]
    first = audit.top[0]
    assert (first.class_name, first.score, first.layer, first.overlay) == ("cat", 0.7, "74", "x/det2_74.jpg")
    assert (out / first.overlay).is_file()  # the picture to open
    assert audit_run(out, top=0).top == () and len(audit_run(out, top=99).top) == 4


def test_audit_json_is_written_atomically_and_nothing_else_changes(run: Path, capsys: Any) -> None:
    before = snapshot(run)
    assert main([str(run), "--top", "2"]) == 0
    out = capsys.readouterr().out
    after = snapshot(run)
    assert set(after) - set(before) == {"audit.json"} and {k: after[k] for k in before} == before
    data = json.loads((run / "audit.json").read_text(encoding="utf-8"), parse_constant=_no_nan)
    assert data == audit_run(run, top=2).to_json()
    assert data["map"]["layer"] == "74" and data["all"]["n"] == 7 and data["outside_below"] == 0.5
    assert [(t["file"], t["id"]) for t in data["top"]] == [("imgs/a.png", 2), ("imgs/c.png", 0)]
    assert data["eval"] is None and data["run"]["upstream"] == "yolov7"
    assert "cat (0)" in out and "map: 74 (the run's only layer)" in out and "x.png" not in out
    assert main([str(run), "--top", "2"]) == 0  # again: audit.json replaced, still the only new file
    assert set(snapshot(run)) - set(before) == {"audit.json"}


def _no_nan(name: str) -> None:
    raise AssertionError(f"audit.json holds {name}")


def test_a_detection_without_gradient_is_counted_apart_never_as_zero(tmp_path: Path) -> None:
    # A YOLO detection has gradient at its own head level only: None at the other layers.
    dets = [
        det(0, 0, 0.9, {"74": energy_map(0.8), "75": None}),
        det(1, 0, 0.8, {"74": None, "75": energy_map(0.1)}),
        det(2, 1, 0.7, {"74": None, "75": None}),
    ]
    out = write_run(tmp_path / "run", {"a.png": dets}, layers=("74", "75"))
    default = audit_run(out)
    assert default.layer == "reached" and "74, 75" in default.layer_rule
    total = default.overall.total
    assert (total.n, total.measured, total.no_gradient, total.median) == (3, 2, 1, pytest.approx(0.45))
    assert [t.layer for t in default.top] == ["75", "74"]
    at_74 = audit_run(out, layer="74").overall.total
    assert (at_74.n, at_74.measured, at_74.no_gradient, at_74.median, at_74.outside) == (3, 1, 2, 0.8, 0)
    assert [t.id for t in audit_run(out, layer="74").top] == [0]
    table = audit_run(out, layer="75").format_table()
    assert "no grad" in table and "map: 75 (--layer)" in table


def test_the_fused_map_is_the_default_and_any_layer_can_be_chosen(tmp_path: Path) -> None:
    dets = [det(0, 0, 0.9, {"74": energy_map(0.2), FUSED: energy_map(0.7)})]
    out = write_run(tmp_path / "run", {"a.png": dets})
    assert audit_run(out).layer == FUSED and audit_run(out).overall.total.median == 0.7
    assert audit_run(out, layer="74").overall.total.median == pytest.approx(0.2)
    assert audit_run(out, layer="reached").overall.total.median == pytest.approx(0.2)
    with pytest.raises(AuditError, match=r"no map '99'; its maps are 74, fused"):
        audit_run(out, layer="99")
    assert main([str(out), "--layer", "99"]) == 2 and not (out / "audit.json").exists()


def test_an_all_zero_map_is_empty_not_outside_and_a_map_wholly_outside_is_zero(tmp_path: Path) -> None:
    outside = energy_map(0.0)  # all its mass right of the box
    dets = [det(0, 0, 0.9, {"74": np.zeros((H, W), np.float32)}), det(1, 0, 0.8, {"74": outside})]
    out = write_run(tmp_path / "run", {"a.png": dets})
    audit = audit_run(out)
    total = audit.overall.total
    assert (total.n, total.measured, total.empty, total.median, total.outside) == (2, 1, 1, 0.0, 1)
    assert [t.id for t in audit.top] == [1]
    assert "empty" in audit.format_table()
    (out / "maps" / "a.npz").unlink()  # without the maps it cannot tell: both count as 0, with a note
    blind = audit_run(out)
    assert (blind.overall.total.measured, blind.overall.total.empty) == (2, 0)
    assert any("could not be read" in n for n in blind.notes)


def test_empty_run_and_failed_images(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run"
    with RunWriter(
        RunSettings(upstream="yolov7", weights="w", method="gradcam", target="t", layers=["74"]), out_dir=out
    ) as w:
        w.write_image(source="none.png", image_bgr=IMAGE, detections=[])
        w.add_error("broken.png", "cannot read image 'broken.png'")
        w.finish()
    assert main([str(out)]) == 0
    data = json.loads((out / "audit.json").read_text())
    assert (data["run"]["images"], data["run"]["failed_images"], data["all"]["n"]) == (2, 1, 0)
    assert data["all"]["median"] is None and data["classes"] == [] and data["top"] == []
    assert "2 images (1 failed), 0 detections" in capsys.readouterr().out


# ---- --eval: matched and unmatched ------------------------------------------------------------
def test_eval_json_lists_the_unmatched_detections(tmp_path: Path) -> None:
    report = json.loads((eval_run(tmp_path) / "eval.json").read_text())
    assert [(r["file"], r["id"]) for r in report["detections"]] == [("imgs/a.png", 0)]
    assert report["unmatched"] == [{"file": "imgs/a.png", "id": 1}, {"file": "imgs/b.png", "id": 0}]
    # and the ground-truth boxes no detection matched: b.png's dog (its detection is a cat)
    assert report["missed"] == [{"file": "imgs/b.png", "class_id": 1, "box_xyxy": [0.0, 0.0, 5.0, 10.0]}]


def test_the_split_into_matched_unmatched_and_not_evaluated(tmp_path: Path, capsys: Any) -> None:
    out = eval_run(tmp_path)
    audit = audit_run(out)
    assert list(audit.split) == ["matched", "unmatched", "not evaluated"]
    matched, unmatched, rest = (audit.split[k].total for k in audit.split)
    assert (matched.n, matched.median, matched.outside) == (1, pytest.approx(0.7), 0)
    assert (unmatched.n, unmatched.median, unmatched.outside) == (2, pytest.approx(0.2), 2)
    assert (rest.n, rest.measured, rest.no_gradient) == (2, 1, 1)
    assert [c.class_name for c in audit.split["not evaluated"].classes] == ["dog"]
    assert [(t.file, t.id, t.match) for t in audit.top[:2]] == [
        ("imgs/a.png", 1, "unmatched"),
        ("imgs/c.png", 0, "not evaluated"),
    ]
    assert main([str(out)]) == 0
    table = capsys.readouterr().out
    assert "matched vs unmatched (eval.json)" in table and "unmatched" in table
    data = json.loads((out / "audit.json").read_text())
    assert data["eval"]["groups"]["matched"]["all"]["n"] == 1


def test_an_eval_json_without_the_unmatched_list_is_read_by_its_counts(tmp_path: Path) -> None:
    out = eval_run(tmp_path)
    report = json.loads((out / "eval.json").read_text())
    del report["unmatched"]  # as eval.json was written before it listed them
    (out / "eval.json").write_text(json.dumps(report))
    audit = audit_run(out)  # 3 evaluated of 5: the rest cannot be told apart
    assert {k: b.total.n for k, b in audit.split.items()} == {"matched": 1, "not matched": 4}
    assert audit.split_rule is not None and "run --eval again" in audit.split_rule
    report["summary"]["detections"] = 5  # had it evaluated every detection, the rest are unmatched
    (out / "eval.json").write_text(json.dumps(report))
    assert {k: b.total.n for k, b in audit_run(out).split.items()} == {"matched": 1, "unmatched": 4}
    report["images"]["skipped"] = [{"file": "imgs/c.png", "reason": "size"}]
    report["summary"]["detections"] = 3
    (out / "eval.json").write_text(json.dumps(report))
    split = audit_run(out).split
    assert {k: b.total.n for k, b in split.items()} == {"matched": 1, "unmatched": 2, "not evaluated": 2}


def test_an_eval_json_that_is_not_a_run_report_is_noted_not_fatal(tmp_path: Path) -> None:
    out = eval_run(tmp_path)
    (out / "eval.json").write_text('{"rows": []}')  # make eval's shape
    audit = audit_run(out)
    assert audit.split == {} and audit.split_rule is None and "no matched/unmatched split" in audit.notes[0]
    (out / "eval.json").write_text('{"detections": [{"file": "elsewhere.png", "id": 0}], "unmatched": []}')
    audit = audit_run(out)
    assert audit.split == {} and "another run's" in audit.notes[0]
    rows = '[{"file": "elsewhere.png", "id": 0}, {"file": "imgs/a.png", "id": 0}]'
    (out / "eval.json").write_text(f'{{"detections": {rows}, "unmatched": []}}')
    audit = audit_run(out)  # one of two rows known: the split uses it, with a note
    assert audit.split["matched"].total.n == 1 and "1 detections of eval.json are not in" in audit.notes[0]
    (out / "eval.json").write_text('{"detections": [')
    assert "cut short" in audit_run(out).notes[0] and "no matched/unmatched split" in audit_run(out).notes[0]


# ---- refused folders and damaged manifests ------------------------------------------------
def test_a_folder_that_is_not_a_run_is_refused_with_what_to_pass(
    tmp_path: Path, run: Path, capsys: Any
) -> None:
    with pytest.raises(RunFolderError, match="does not exist"):
        audit_run(tmp_path / "nowhere")
    with pytest.raises(RunFolderError, match=r"has no manifest.json.*run folders in it: run"):
        audit_run(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a run folder"):
        audit_run(tmp_path / "notes.txt")
    made = tmp_path / "eval_exp"
    made.mkdir()
    (made / "eval.json").write_text("{}")
    (made / "table.txt").write_text("")
    with pytest.raises(RunFolderError, match="make eval's eval.json"):
        audit_run(made)
    assert audit_run(run / "manifest.json").run_dir == run  # the manifest stands for its folder
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "manifest.json" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"[1, 2]", "not a kit manifest"),
        (b'{"upstream": "yolov7"}', "no 'images' list"),
        (b'{"images": null}', "'images' is not a list"),
        (b'{"images": []} trailing', "extra data"),
        (b'{"images": [\xff]}', "not UTF-8"),
        (b'{"images": [{"file": "a", }]}', "is damaged"),
        # hostile: refused (exit 2), never an exception the command calls a bug (exit 3)
        (b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than Python's JSON"),
        (b'{"images": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested deeper than Python's JSON"),
        (b'{"images": [{"width": ' + b"9" * 5000 + b"}]}", "not a manifest the kit wrote .*4300 digits"),
    ],
)
def test_a_damaged_manifest_names_the_file_and_what_to_do(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(RunFolderError, match=message) as error:
        audit_run(tmp_path)
    assert str(tmp_path / "manifest.json") in str(error.value)
    assert main([str(tmp_path), "--no-write"]) == 2


def test_a_manifest_cut_anywhere_is_refused_never_misread(run: Path) -> None:
    """A manifest copied mid-write (or cut by a full disk outside the kit's atomic rename)."""
    text = (run / "manifest.json").read_bytes()
    for cut in range(1, len(text) - 2, max(1, len(text) // 150)):
        (run / "manifest.json").write_bytes(text[:cut])
        with pytest.raises(
            RunFolderError, match="manifest.json is (not valid JSON|not a kit manifest)"
        ) as error:
            audit_run(run)
        assert "cut short" in str(error.value) or "not a kit manifest" in str(error.value), cut
    assert main([str(run)]) == 2 and not (run / "audit.json").exists()


def test_old_manifests_and_odd_records_are_read(tmp_path: Path) -> None:
    """The first manifests had no 'interrupted'; fields a record lacks are tolerated."""
    (tmp_path / "manifest.json").write_text(json.dumps(OLD_MANIFEST))
    audit = audit_run(tmp_path)
    assert (audit.run["images"], audit.run["failed_images"], audit.run["interrupted"]) == (3, 1, None)
    total = audit.overall.total
    assert (total.n, total.measured, total.missing, total.no_gradient, total.median) == (4, 2, 1, 1, 0.5)
    assert [(c.class_id, c.class_name) for c in audit.overall.classes] == [(3, "3"), (3, "x"), (None, "cat")]
    assert len(audit.notes) == 2 and "not objects" in audit.notes[0]
    write_audit(audit)
    assert json.loads((tmp_path / "audit.json").read_text())["all"]["missing"] == 1


def test_nan_infinite_and_out_of_range_energies_are_invalid_not_values(run: Path) -> None:
    data = json.loads((run / "manifest.json").read_text())
    bad = [float("nan"), float("inf"), "0.3", -0.25, 1.5, True]
    dets = [d for image in data["images"] for d in image["detections"]]
    for d, value in zip(dets, bad):
        d["maps"]["74"]["energy_in_box"] = value
    d["score"] = float("nan")
    (run / "manifest.json").write_text(json.dumps(data))  # Python writes NaN and Infinity; json reads them
    audit = audit_run(run)
    total = audit.overall.total
    assert (total.n, total.invalid, total.measured) == (7, 6, 1)
    assert total.median == ENERGIES[("c.png", 0)][2]
    assert "invalid" in audit.format_table()
    write_audit(audit)
    json.loads((run / "audit.json").read_text(), parse_constant=_no_nan)


def test_odd_file_and_class_names_stay_on_their_line(tmp_path: Path, capsys: Any) -> None:
    names = ["new\nline.png", "esc\x1b[31mred.png", "tab\there.png", "Bild_ä.png", "x" * 300 + ".png"]
    images = {n: [det(0, 0, 0.9, {"74": energy_map(0.1 + 0.1 * k)})] for k, n in enumerate(names)}
    out = write_run(tmp_path / "run", images)
    data = json.loads((out / "manifest.json").read_text())
    data["images"][0]["file"] = "bytes_\\xff.png"  # how the manifest stores a name that is not UTF-8
    data["images"][1]["detections"][0]["class_name"] = "evil\u2028\x07class"
    data["images"][2]["file"] = "lone_\udcff.png"  # a surrogate written as \udcff by other tools
    (out / "manifest.json").write_text(json.dumps(data))
    assert main([str(out)]) == 0
    table = capsys.readouterr().out
    top = table[table.index("rank") :].split("\n\n")[0].splitlines()
    assert len(top) == 1 + len(names)  # one line per detection
    assert "\x1b" not in table and "\x07" not in table and "\u2028" not in table
    assert "esc\\x1b[31mred.png" in table and "bytes_\\xff.png" in table and "Bild_ä.png" in table
    files = [t["file"] for t in json.loads((out / "audit.json").read_text(encoding="utf-8"))["top"]]
    assert files[:3] == ["bytes_\\xff.png", "imgs/esc\x1b[31mred.png", "lone_\udcff.png"]


# ---- the command line and the module's layering -------------------------------------------
def test_the_command_line_refuses_bad_values(run: Path, capsys: Any) -> None:
    assert main([str(run), "--top", "-1"]) == 2 and "whole number >= 0" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--help"]) == 0 and "--layer" in capsys.readouterr().out
    with pytest.raises(AuditError, match="top must be"):
        audit_run(run, top=-1)


def test_the_schema_names_the_fused_map_as_the_results_do() -> None:
    from kit.core import results
    from kit.rundir import schema

    assert schema.FUSED == results.FUSED  # the schema is torch-free, so it cannot import it
    assert {schema.MANIFEST_NAME, schema.EVAL_NAME, schema.LOCK_NAME} <= schema.RESERVED_NAMES


def test_density_puts_the_energy_beside_the_boxs_share_of_the_image(tmp_path: Path) -> None:
    """A uniform map has energy_in_box = the box's share: a small box is low on energy_in_box alone."""
    uniform = np.ones((H, W), np.float32)
    small = det(0, 0, 0.9, {"74": uniform}, box=(0.0, 0.0, 1.0, 1.0))  # 1 pixel: energy 0.01, density 1
    large = det(1, 0, 0.8, {"74": energy_map(0.3)})  # half the image: energy 0.3, density 0.6
    out = write_run(tmp_path / "run", {"a.png": [small, large]})
    by_energy = audit_run(out)
    assert [t.id for t in by_energy.top] == [0, 1] and by_energy.rank == "energy"
    first, second = by_energy.top
    assert (first.box_share, first.density) == (pytest.approx(0.01), pytest.approx(1.0))
    assert (second.box_share, second.density) == (0.5, pytest.approx(0.6))
    by_density = audit_run(out, rank="density")
    assert [t.id for t in by_density.top] == [1, 0]
    assert main([str(out), "--rank", "density"]) == 0
    assert json.loads((out / "audit.json").read_text())["top_by"].startswith("lowest density")
    with pytest.raises(AuditError, match="unknown rank 'size'"):
        audit_run(out, rank="size")


def test_a_run_that_did_not_finish_is_audited_from_its_part_files(tmp_path: Path) -> None:
    """A run killed (SIGKILL: no handler wrote the manifest) keeps its last records in part files;
    the audit reads them, says the run did not finish, and counts every recorded detection."""
    writer = RunWriter(
        RunSettings(
            upstream="yolov7", weights="w.pt", method="gradcam", target="class-logit", layers=("74",)
        ),
        out_dir=tmp_path / "run",
    )
    writer.write_image(
        source=Path("imgs/a.jpg"), image_bgr=IMAGE, detections=[det(0, 0, 0.9, {"74": energy_map(0.2)})]
    )
    writer.write_image(
        source=Path("imgs/b.jpg"), image_bgr=IMAGE, detections=[det(0, 1, 0.8, {"74": energy_map(0.9)})]
    )
    # no finish(), no close(): what SIGKILL leaves
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["images"] == []  # the manifest alone would show an empty run
    audit = audit_run(tmp_path / "run")
    assert audit.run["images"] == 2 and audit.run["detections"] == 2
    assert [c.n for c in audit.overall.classes] == [1, 1]
    assert any("did not finish" in note and "--resume" in note for note in audit.notes)


def test_read_map_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    import zipfile

    cam = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    out = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": cam})]})
    with zipfile.ZipFile(out / "maps" / "a.npz") as archive:
        read = reader.read_map(archive, "det0_74")
        assert reader.read_map(archive, "det9_74") is None and reader.read_map(archive, 3) is None
    assert read is not None
    np.testing.assert_array_equal(read, cam.astype(np.float16))
