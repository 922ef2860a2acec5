"""kit.report.page: index.html from run folders written by the kit's own RunWriter (and by hand for old,
damaged and hostile ones), read back with an HTML parser: what a browser would build from it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest

from kit.evaluation.audit import audit_run, write_audit
from kit.report import page as report_module
from kit.report.page import main, read_run, render_report, write_report
from kit.rundir.schema import REPORT_NAME
from kit.rundir.writer import RunSettings, RunWriter
from tests.runs import (
    HOSTILE_CLASS,
    HOSTILE_NAMES,
    IMAGE,
    LEVELS,
    OLD_MANIFEST,
    det,
    energy_map,
    eval_run,
    hostile_run,
    picture_run,
    scene,
    write_run,
    yolo_detection,
)

# Elements the page is made of: anything else in it came from a name in the run folder.
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "strong", "b", "em",
    "nav", "a", "dl", "dt", "dd", "span", "ul", "ol", "li", "section", "details", "summary", "main", "form",
    "label", "select", "option", "input", "button", "output", "div", "article", "figure", "figcaption",
    "bdi", "table", "thead", "tbody", "tr", "th", "td", "svg", "path", "text", "rect", "i", "br",
    "script", "img", "noscript",
}  # fmt: skip


class Page(HTMLParser):
    """What the parser builds: every element's tag and attributes, each card's attributes and text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.cards: list[dict[str, str]] = []
        self.texts: list[str] = []
        self._card_depth = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.elements.append((tag, found))
        if tag == "article" and "detection" in found.get("class", "").split():
            self.cards.append({**found, "text": ""})
            self._card_depth = 1
        elif self._card_depth and tag not in ("img", "br", "input", "meta"):
            self._card_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._card_depth and tag not in ("img", "br", "input", "meta"):
            self._card_depth -= 1

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._card_depth:
            self.cards[-1]["text"] += data

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def links(self) -> list[str]:
        return [a["href"] for t, a in self.elements if t == "a" and "href" in a]


def page_of(run: Path) -> Page:
    return Page((run / REPORT_NAME).read_text(encoding="utf-8"))


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


def detections(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(image, d) for image in data["images"] for d in image.get("detections") or []]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def assert_links_stay_in(run: Path, page: Page) -> None:
    """Every link is an anchor of the page or a file of the run folder, by a relative, encoded path."""
    for href in page.links():
        if href.startswith("#"):
            assert page.find("section", id=href[1:]) or page.find("article", id=href[1:]) or href[1:] in {
                "detections", "eval", "audit", "failed"
            }, href  # fmt: skip
            continue
        assert ":" not in href.split("/")[0] and not href.startswith("/"), href  # relative, no scheme
        assert not set(href) & set(" \"'<>#?\\"), href  # every such character percent-encoded
        target = (run / unquote(href)).resolve()
        assert target.is_file() and target.is_relative_to(run.resolve()), href


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return picture_run(tmp_path / "run")


# ---- what the page holds ----------------------------------------------------------------------
def test_the_cards_are_the_manifests_detections(run: Path) -> None:
    path = write_report(run)
    assert path == run / REPORT_NAME
    page = page_of(run)
    data = manifest(run)
    expected = [
        (image["summary"][: -len("_summary.jpg")], str(d["id"]), d["class_name"], d["score"])
        for image, d in detections(data)
    ]
    found = [(c["data-image"], c["data-id"], c["data-class"], float(c["data-score"])) for c in page.cards]
    assert found == expected and len(found) == 5
    assert all("hidden" not in c for c in page.cards)
    assert_links_stay_in(run, page)
    # every drawn map's overlay is linked from its card, and nothing else of the run's pictures
    overlays = {m["overlay"] for _, d in detections(data) for m in d["maps"].values() if m["overlay"]}
    summaries = {image["summary"] for image in data["images"] if image.get("summary")}
    assert {unquote(h) for h in page.links() if not h.startswith("#")} == overlays | summaries
    # every picture is loaded with the page (a run this small is all first screens), none lazily
    pictures = [a["href"] for a in page.find("a") if "pic" in a.get("class", "").split()]
    assert [i["src"] for i in page.find("img")] == pictures and len(pictures) == 3 + 5 * 2
    assert not [i for i in page.find("img") if "loading" in i] and "lazy" not in page.text


def test_a_level_no_gradient_reached_is_said_in_words_not_drawn(run: Path) -> None:
    write_report(run)
    page = page_of(run)
    for (_, d), card in zip(detections(manifest(run)), page.cards):
        none = [layer for layer, m in d["maps"].items() if m["no_gradient"]]
        said = ", ".join(f"head input, level {LEVELS.index(la)} · layer {la}" for la in none)
        assert len(none) == 2 and f"no gradient reached {said}" in card["text"]
        assert f"found at level {d['level']}" in card["text"] and f"{d['score']:.3f}" in card["text"]
        drawn = [a["data-layer"] for a in page.find("figure") if a["data-layer"] not in none]
        assert set(drawn) <= {"74", "75", "76", "fused"}
    figures = page.find("figure")
    assert len([f for f in figures if "data-layer" in f]) == 5 * 2  # own level + fused, per detection
    energy = {f["data-energy"] for f in figures if "data-layer" in f}
    assert "" not in energy  # every drawn map has its energy_in_box


def test_the_header_names_the_run_and_counts_failed_images_with_their_errors(run: Path) -> None:
    write_report(run)
    page = page_of(run)
    text = page.text
    layers = "74 (head input, level 0), 75 (head input, level 1), 76 (head input, level 2)"
    for shown in ("yolov7", "runs/train/exp/weights/best.pt", "gradcam", "class-logit", layers):
        assert shown in text
    assert "img_size" in text and "320" in text and "conf_thres" in text and "0.45" in text
    assert "4 images, 5 detections, 1 failed" in text and "cat 3, dog 2" in text
    assert "cannot read image 'imgs/broken.jpg': not an image" in text
    assert text.count("not recorded in this manifest") == 2  # commit and sha256: this manifest has neither
    assert page.find("section", id="i3", **{"class": "image-head failed"})
    assert [o["value"] for o in page.find("option") if o.get("value") in ("cat", "dog")] == ["cat", "dog"]
    data = manifest(run)  # a manifest that records them (a newer run) shows them
    data["upstream_commit"], data["weights_sha256"] = "a207844b" * 5, "e3b0c442" * 8
    data["fuse"] = False
    (run / "manifest.json").write_text(json.dumps(data))
    text = render_report(read_run(run))
    assert "a207844b" * 5 in text and "e3b0c442" * 8 in text and "not recorded" not in text
    assert "<dt>fuse</dt><dd>false</dd>" in text


def test_zero_detections_only_failed_images_and_an_interrupted_run(tmp_path: Path) -> None:
    empty = write_run(tmp_path / "empty", {"a.png": [], "b.png": []})
    assert main([str(empty)]) == 0
    page = page_of(empty)
    assert page.cards == [] and "This run has no detections." in page.text and "0 of 0" in page.text
    failed = tmp_path / "failed"
    with RunWriter(
        RunSettings(upstream="yolov3", weights="w", method="m", target="t", layers=["9"]), out_dir=failed
    ) as w:
        w.add_error("x.jpg", "cannot read image 'x.jpg'")
        w.add_error("y.jpg", "out of memory\nin the forward pass")
        w.interrupted()
    assert main([str(failed)]) == 0
    page = page_of(failed)
    assert "2 images, 0 detections, 2 failed" in page.text
    assert "out of memory\nin the forward pass" in page.text
    assert "This run was interrupted (Ctrl-C): the page shows the 2 images it finished" in page.text


def test_a_killed_run_shows_the_records_of_its_parts(tmp_path: Path) -> None:
    """A run killed before its end (SIGKILL, a crash): manifest.json holds its header alone, every
    finished image's record is in the run's part files (kit.rundir.journal)."""
    out = tmp_path / "run"
    with RunWriter(
        RunSettings(upstream="yolov7", weights="w", method="m", target="t", layers=LEVELS), out_dir=out
    ) as w:
        w.write_image(source="a.png", image_bgr=scene(1), detections=[yolo_detection(0, 0, 0.9, 1)])
        w.add_error("b.png", "cannot read image 'b.png'")
    assert manifest(out)["images"] == [] and manifest(out)["finished"] is False
    assert main([str(out)]) == 0
    page = page_of(out)
    assert [(c["data-image"], c["data-id"]) for c in page.cards] == [("a", "0")]
    assert "This run did not finish (it was killed, or its last step failed)" in page.text
    assert "part files in .kit-parts/ hold records that manifest.json does not index yet" in page.text
    assert "2 images, 1 detection, 1 failed" in page.text
    assert_links_stay_in(out, page)


def test_old_manifests_and_odd_records_are_shown(tmp_path: Path) -> None:
    """The first manifests had no 'interrupted', maps as lists; fields a record lacks are tolerated."""
    (tmp_path / "manifest.json").write_text(json.dumps(OLD_MANIFEST))
    assert main([str(tmp_path)]) == 0
    page = page_of(tmp_path)
    assert [(c["data-image"], c["data-id"], c["data-class"], c["data-score"]) for c in page.cards] == [
        ("a", "0", "3", "0.5"),
        ("a", "1", "cat", ""),
        ("a", "2", "x", "0.1"),
        ("a", "3", "x", ""),
    ]
    assert "no picture" in page.cards[0]["text"]  # a map without its overlay in the folder: said, not drawn
    assert "no maps recorded for this detection" in page.cards[2]["text"]
    assert "no gradient reached layer 74" in page.cards[3]["text"]
    assert "not an image record" in page.text and "interrupted" not in page.text
    assert "3 images, 4 detections, 2 failed" in page.text


def test_hostile_names_are_escaped_in_html_and_in_urls(tmp_path: Path) -> None:
    out = hostile_run(tmp_path / "run")
    data = manifest(out)
    assert main([str(out)]) == 0
    text = (out / REPORT_NAME).read_text(encoding="utf-8")
    page = Page(text)
    assert {tag for tag, _ in page.elements} <= PAGE_TAGS
    assert len(page.find("script")) == 1
    assert "alert(" not in text.split("<script>")[1]  # the page's own script names none
    assert not any(k.startswith("on") for _, attrs in page.elements for k in attrs)  # no event handler
    stems = [i["summary"][: -len("_summary.jpg")] for i in data["images"]]
    assert [c["data-image"] for c in page.cards] == stems
    assert page.cards[0]["data-class"] == HOSTILE_CLASS
    titles = {a["title"] for tag, a in page.elements if tag == "bdi" and "title" in a}
    for name in HOSTILE_NAMES:
        assert f"imgs/{name}" in titles and name.rsplit("/", 1)[-1] in page.text  # shown as written
    assert "<b>w</b>.pt" in page.text
    assert_links_stay_in(out, page)  # and each picture reached through its percent-encoded name
    assert "%E7%94%BB%E5%83%8F" in text  # 画像, as UTF-8


def test_control_characters_and_bidi_names_stay_readable(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.5)})]})
    data = manifest(out)
    data["images"][0]["file"] = "esc\x1b[31m\u202eevil.png"
    data["images"][0]["detections"][0]["class_name"] = "lone \udcff"
    (out / "manifest.json").write_text(json.dumps(data))
    write_report(out)
    text = (out / REPORT_NAME).read_text(encoding="utf-8")
    assert "\x1b" not in text and "esc\\x1b[31m" in text
    # a right-to-left override is shown as its escape (it would reorder the text around it)
    assert ">esc\\x1b[31m\\u202eevil.png</bdi>" in text and "\u202e" not in text
    assert "lone \\xff" in text  # a class name with an undecodable byte, as file names show it


# ---- --eval and --audit -----------------------------------------------------------------------
def test_an_eval_run_shows_its_table_matches_and_missed_objects(tmp_path: Path) -> None:
    out = eval_run(tmp_path)
    write_report(out)
    page = page_of(out)
    assert page.find("section", id="eval") and "Missed objects (1)" in page.text
    assert "imgs/b.png: dog at [0, 0, 5, 10]" in page.text
    status = {(c["data-image"], c["data-id"]): c["text"] for c in page.cards}
    assert "matched, IoU 1.00" in status[("a", "0")] and "unmatched" in status[("a", "1")]
    assert "matched" not in status[("c", "0")]  # c.png is not in the labels
    assert "No deletion/insertion curves in this run" in page.text
    assert_links_stay_in(out, page)


def test_curves_are_plotted_and_an_older_eval_json_is_said_in_words(tmp_path: Path) -> None:
    out = eval_run(tmp_path)
    report = json.loads((out / "eval.json").read_text())
    row = report["detections"][0]["maps"]["74"]
    row |= {"deletion_curve": [1.0, 0.4, 0.1], "insertion_curve": [0.2, 0.9, 1.0]}
    (out / "eval.json").write_text(json.dumps(report))
    page = Page(render_report(read_run(out)))
    plots = page.find("svg", role="img")
    assert [p["aria-label"] for p in plots] == ["deletion curves", "insertion curves"]
    del row["deletion_curve"], row["insertion_curve"], report["missed"]
    report["summary"]["layers"][0]["n_curves"] = 1
    (out / "eval.json").write_text(json.dumps(report))
    text = Page(render_report(read_run(out))).text
    assert "holds the curves' areas only" in text and "run --eval again to see which" in text
    assert "Missed objects (1)" in text  # from the counts: 2 ground-truth boxes, 1 matched


def test_the_audit_lists_the_detections_most_outside_and_links_their_cards(run: Path) -> None:
    write_audit(audit_run(run, top=3))
    write_report(run)
    page = page_of(run)
    audit = json.loads((run / "audit.json").read_text())
    items = page.find("ol", **{"class": "top"})
    assert items and "Audit: where the maps lie against their boxes" in page.text
    anchors = [h for h in page.links() if re.fullmatch(r"#d\d+-\d+", h)]
    assert len(anchors) == 3 and all(page.find("article", id=h[1:]) for h in anchors)
    first = audit["top"][0]
    assert f"{first['energy_in_box']:.3f}" in page.text
    assert page.find("svg", **{"aria-label": "share outside per class"})


def test_a_damaged_eval_or_audit_json_is_noted_and_left_out(run: Path) -> None:
    (run / "eval.json").write_text("{not json")
    (run / "audit.json").write_text('{"top": 3}')
    assert main([str(run)]) == 0
    page = page_of(run)
    assert not page.find("section", id="eval") and not page.find("section", id="audit")
    assert "eval.json is not valid JSON" in page.text and "audit.json is not the audit" in page.text
    (run / "eval.json").write_text('{"detections": ' + "[" * 100_000 + "]" * 100_000 + "}")  # hostile
    (run / "audit.json").write_text('{"top": [' + "9" * 5000 + "]}")
    assert main([str(run)]) == 0
    page = page_of(run)
    assert "eval.json is not valid JSON (RecursionError)" in page.text
    assert "audit.json is not valid JSON (Exceeds the limit (4300 digits)" in page.text


# ---- writing, refusals, the command line ------------------------------------------------------
def test_index_html_is_the_only_file_written_and_is_replaced_whole(run: Path, capsys: Any) -> None:
    before = snapshot(run)
    assert main([str(run)]) == 0
    assert f"report written to {run / REPORT_NAME}" in capsys.readouterr().out
    assert set(snapshot(run)) - set(before) == {REPORT_NAME}
    first = (run / REPORT_NAME).read_bytes()
    assert main([str(run / "manifest.json")]) == 0  # the manifest stands for its folder
    assert (run / REPORT_NAME).read_bytes() == first and set(snapshot(run)) - set(before) == {REPORT_NAME}


def test_a_write_that_fails_leaves_the_old_page_and_no_temporary_file(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    write_report(run)
    old = (run / REPORT_NAME).read_bytes()

    def full_disk(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device" in err
    assert (run / REPORT_NAME).read_bytes() == old
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b'{"upstream": "yolov7", "images": [{"file": "a.png"', "cut short"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"layers": []}', "no 'images' list"),
        (b"[1, 2]", "not a kit manifest"),
    ],
)
def test_a_corrupt_manifest_is_refused_with_exit_2(
    tmp_path: Path, content: bytes, message: str, capsys: Any
) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / "manifest.json") in err
    assert not (tmp_path / REPORT_NAME).exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path, capsys: Any) -> None:
    picture_run(tmp_path / "exp")
    assert main([str(tmp_path)]) == 2
    assert "run folders in it: exp" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2 and "does not exist" in capsys.readouterr().err
    assert main([]) == 2 and main(["--help"]) == 0


def test_an_image_named_index_html_keeps_its_pictures_and_the_report_says_why_not(
    tmp_path: Path, capsys: Any
) -> None:
    out = write_run(tmp_path / "run", {"index.html.png": [det(0, 0, 0.9, {"74": energy_map(0.5)})]})
    if not (out / "index.html").is_dir():  # the writer reserves the name: as a run made before it did
        (out / "index.html").mkdir()
    assert main([str(out)]) == 2 and (out / "index.html").is_dir()
    assert "is a folder (the pictures of an image named index.html.*)" in capsys.readouterr().err


def test_the_scripts_hash_is_the_one_the_page_allows(run: Path) -> None:
    """The Content-Security-Policy runs the page's own script by its hash and nothing else."""
    import base64

    text = render_report(read_run(run))
    digest = base64.b64encode(hashlib.sha256(report_module.SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in text and "default-src 'none'" in text
    assert "img-src 'self'" in text
    assert "http://" not in text and "https://" not in text  # nothing fetched from anywhere


# ---- size ------------------------------------------------------------------------------------
def test_a_5000_image_run_gives_a_page_of_reasonable_size(large_run_5000: Path) -> None:
    path = write_report(large_run_5000)
    text = path.read_text(encoding="utf-8")
    size = len(text.encode("utf-8"))
    cards, heads = text.count("<article class=detection"), text.count('<section class="image-head"')
    assert (cards, heads) == (10_000, 5_000)
    print(f"5,000 images, 10,000 detections: {size / 1e6:.1f} MB, {size / cards:.0f} bytes a card")
    assert size < 1000 * cards  # about 890 bytes a card, its maps and its share of its image's head
    body = text.split("<script>")[0]
    # the first screens' pictures load with the page; the rest as they near the screen, none lazily
    assert body.count("<img ") == report_module.EAGER_PICTURES and "lazy" not in text
    assert body.count('<a class="pic') == 15_000  # 5,000 images with their boxes, 10,000 maps


def test_render_report_reads_only(run: Path) -> None:
    before = snapshot(run)
    render_report(read_run(run))
    assert snapshot(run) == before


def test_an_image_with_many_pictures_keeps_its_order(tmp_path: Path) -> None:
    """Cards follow the manifest: image by image, detection by detection."""
    dets = [yolo_detection(i, i % 2, 0.9 - i / 20, i % 3, fused=False) for i in range(6)]
    out = tmp_path / "run"
    layers = ["74", "75", "76"]
    with RunWriter(
        RunSettings(upstream="y", weights="w", method="m", target="t", layers=layers), out_dir=out
    ) as w:
        w.write_image(source="one.png", image_bgr=scene(1), detections=dets)
        w.write_image(source="two.png", image_bgr=IMAGE, detections=[])
        w.finish()
    write_report(out)
    assert [c["data-id"] for c in page_of(out).cards] == [str(i) for i in range(6)]


def test_integers_beyond_a_float_in_a_manifest_are_shown_as_unknown_not_a_crash(
    tmp_path: Path, capsys: Any
) -> None:
    """A manifest from someone else with 10**400 as a detection's score, box and energy_in_box (valid
    JSON, 401 digits: below Python's limit on digits): make report and make audit write the page and
    the table, those values unknown (float() of it raised OverflowError: exit 3)."""
    from kit.evaluation import audit as audit_module

    out = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.9)})]})
    manifest = json.loads((out / "manifest.json").read_text())
    d = manifest["images"][0]["detections"][0]
    d["score"], d["box_xyxy"][2], d["maps"]["74"]["energy_in_box"] = 10**400, 10**400, 10**400
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main([str(out)]) == 0
    assert audit_module.main([str(out)]) == 0
    audited = json.loads((out / "audit.json").read_text())
    assert audited["all"]["n"] == 1 and audited["all"]["measured"] == 0  # its energy is unknown
    assert 'data-energy=""' in (out / REPORT_NAME).read_text()


# ---- the first screen ------------------------------------------------------------------------
def test_detections_come_first_with_each_image_and_its_numbered_boxes(run: Path) -> None:
    write_audit(audit_run(run, top=3))
    write_report(run)
    page = page_of(run)
    tags = [(tag, a) for tag, a in page.elements]
    main_at = next(i for i, (tag, _) in enumerate(tags) if tag == "main")
    assert tags[main_at + 1] == ("section", {"id": "detections", "class": "block"})  # then eval, audit
    # the provenance table is folded: every settings row inside <details id=provenance>
    details_at = next(
        i for i, (tag, a) in enumerate(tags) if tag == "details" and a.get("id") == "provenance"
    )
    dl_at = next(i for i, (tag, a) in enumerate(tags) if tag == "dl")
    assert details_at < dl_at < main_at and "open" not in tags[details_at][1]
    # an image head before its cards: the image's boxes cropped out of its summary sheet, numbered
    heads = page.find("section", **{"class": "image-head"})
    assert [h["data-image"] for h in heads] == ["street", "park", "empty"]
    boxes = page.find("div", **{"class": "boxes"})
    assert len(boxes) == 3 and all(b["style"].startswith("aspect-ratio:") for b in boxes)
    crops = [a for a in page.find("a") if a.get("class") == "pic crop on"]
    # street: 3 detections and the image, 4 tiles a row: the sheet is 4 tiles and 3 gaps wide
    assert crops[0]["style"] == f"width:{100 * (4 * 480 + 3 * 4) / 480:.4f}%"
    assert crops[2]["style"] == "width:100.0000%"  # empty: a sheet of the image alone
    badges = [t for tag, a in tags if tag == "span" and a.get("class") == "badge" for t in [a]]
    assert len(badges) == 5  # one per detection, at its box's corner
    assert "4 images, 5 detections, 1 failed · gradcam on class-logit · yolov7" in page.text


def test_recorded_head_layers_are_named_in_words_beside_their_index(run: Path) -> None:
    data = manifest(run)
    data |= {"head_layers": ["74", "75", "76"], "strides": [8, 16, 32], "backbone_layers": 29}
    (run / "manifest.json").write_text(json.dumps(data))
    page = Page(render_report(read_run(run)))
    first = page.cards[0]["text"]  # cat, found at level 0: its map at layer 74, the others not reached
    assert "head input, level P3 (stride 8) · layer 74 · in box" in first
    assert "found at level P3 (stride 8)" in first
    assert "no gradient reached head input, level P4 (stride 16) · layer 75, head input, level P5" in first
    assert "all layers fused · in box" in first
    assert "74 (head input, level P3 (stride 8)), 75 (head input, level P4 (stride 16))" in page.text


def test_an_eval_run_shows_each_detections_numbers_and_its_images_missed_objects(tmp_path: Path) -> None:
    out = eval_run(tmp_path)
    write_report(out)
    page = page_of(out)
    status = {(c["data-image"], c["data-id"]): c["text"] for c in page.cards}
    assert "matched, IoU 1.00" in status[("a", "0")] and "PG hit · EBPG 0.700" in status[("a", "0")]
    assert "gradcam of class-logit, class cat" in status[("a", "0")]


def test_an_images_missed_objects_are_listed_under_it_with_why_and_their_maps(tmp_path: Path) -> None:
    """--explain-missed: the image head lists each missed object, its reason in words and its maps."""
    from kit.core.detection import Detection, MissedObject, MissedReason
    from kit.core.results import MissedResult

    found = yolo_detection(0, 0, 0.9, 0)
    box = (30.0, 30.0, 50.0, 50.0)
    candidate = Detection(image_index=0, box_xyxy=box, class_id=1, score=0.1, row=3, level=1)
    lost = MissedObject(
        image_index=0, gt_box=box, class_id=1, box=box, score=0.1, iou=1.0,
        reason=MissedReason.BELOW_THRESHOLD, candidate=candidate,
    )  # fmt: skip
    cam = np.full(scene(1).shape[:2], 0.5, np.float32)
    missed = MissedResult(id=0, missed=lost, class_name="dog", maps={"74": None, "75": cam})
    out = tmp_path / "run"
    with RunWriter(
        RunSettings(upstream="yolov7", weights="w", method="gradcam", target="class-logit", layers=LEVELS),
        out_dir=out,
    ) as w:
        w.write_image(source="a.png", image_bgr=scene(1), detections=[found], missed=[missed])
        w.finish()
    write_report(out)
    page = page_of(out)
    head = (
        (out / REPORT_NAME).read_text().split('<section class="image-head" id="i0"')[1].split("</section>")[0]
    )
    assert (
        "1 detection · 1 missed" in head
        and "missed <bdi>dog</bdi> at [30, 30, 50, 50]: below the threshold" in head
    )
    maps = [a for a in page.find("a") if a.get("class", "").startswith("pic small")]
    assert [unquote(a["href"]) for a in maps] == ["a/missed0_75.jpg"]  # the one map a gradient reached
    assert "1 image, 1 detection · 1 missed explained" in page.text
    assert_links_stay_in(out, page)
