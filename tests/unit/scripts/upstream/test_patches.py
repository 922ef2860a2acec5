"""check-patches, refresh-patches and status on local fixture repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.upstream.errors import ConfigError
from scripts.upstream.patchfile import dep3_problems, failed_paths
from scripts.upstream.refresh import rewrite_patch_list, slug


def test_forwarded_counts_as_upstream_status(tmp_path: Path) -> None:
    patch = tmp_path / "x.patch"
    patch.write_text(
        "From: a <a@b>\nSubject: x\n\nDescription: why\nForwarded: not-needed\n---\ndiff --git a/x b/x\n"
    )
    assert dep3_problems(patch) == []


def test_failed_paths_reads_git_messages() -> None:
    output = (
        "error: patch failed: src/a.py:12\nerror: src/a.py: patch does not apply\n"
        "error: b.txt: does not exist in index\nCONFLICT (content): Merge conflict in c.py\n"
    )
    assert failed_paths(output) == ["src/a.py", "b.txt", "c.py"]


def test_slug_follows_format_patch() -> None:
    assert slug("Detect/IDetect: optional raw class logits") == "Detect-IDetect-optional-raw-class-logits"
    assert len(slug("x" * 100)) == 52


YAML = """\
# header comment
a:
  url: u  # keep me
  patches:  # the series
    - 0001-x.patch
    # between items
    - 0002-y.patch
  # after the list
  exclude: []
b:
  patches: []  # none yet
  entry_point: e
"""


def test_rewrite_patch_list_touches_only_that_list() -> None:
    assert rewrite_patch_list(YAML, "a", ["0001-x.patch"]) == YAML.replace(
        "    - 0001-x.patch\n    # between items\n    - 0002-y.patch\n", "    - 0001-x.patch\n"
    )
    assert rewrite_patch_list(YAML, "a", []) == YAML.replace(
        "  patches:  # the series\n    - 0001-x.patch\n    # between items\n    - 0002-y.patch\n",
        "  patches: []  # the series\n",
    )
    assert rewrite_patch_list(YAML, "b", ["0001-z.patch"]) == YAML.replace(
        "  patches: []  # none yet\n", "  patches:  # none yet\n    - 0001-z.patch\n"
    )
    assert rewrite_patch_list(YAML, "a", ["0001-x.patch", "0002-y.patch"]) == YAML.replace(
        "    # between items\n", ""
    )


def test_rewrite_patch_list_refuses_what_it_cannot_edit_by_text() -> None:
    with pytest.raises(ConfigError, match="no top-level entry 'c'"):
        rewrite_patch_list(YAML, "c", [])
    with pytest.raises(ConfigError, match="no 'patches:' line"):
        rewrite_patch_list("a:\n  url: u\n", "a", [])
    with pytest.raises(ConfigError, match="by hand"):
        rewrite_patch_list("a:\n  patches: [\n    x.patch]\n", "a", ["y.patch"])


def test_rewrite_patch_list_keeps_crlf_line_ends() -> None:
    crlf = YAML.replace("\n", "\r\n")
    assert rewrite_patch_list(crlf, "b", ["0001-z.patch"]) == crlf.replace(
        "  patches: []  # none yet\r\n", "  patches:  # none yet\r\n    - 0001-z.patch\r\n"
    )
