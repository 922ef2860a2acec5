"""`refresh-patches`: export the commits on top of the pin back to patches/<name>/ and the series list.

The export flags make export(apply(patches)) == patches byte for byte: zero From-line hashes, full
index lines, no signature or diffstat, subjects kept verbatim (`git am --keep` on the way in),
fixed a/ b/ prefixes and no user or system git config. No `--base`: the pin lives in
upstreams.yaml, and a base-commit line in the first patch would only churn when the pin moves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from scripts.upstream import command
from scripts.upstream.checkout import UPSTREAM_HEAD, lock_file_for, locked
from scripts.upstream.config import Project, checkout_path, load_project
from scripts.upstream.errors import CheckoutError, ConfigError, DirtyCheckoutError
from scripts.upstream.gitutil import ISOLATED_CONFIG, git, subject
from scripts.upstream.patchfile import file_sha256, patch_subject
from scripts.upstream.series import AppliedPatch, SeriesState, inspect_checkout, read_state, write_state

FORMAT_PATCH = (
    "format-patch",
    *("--stdout", "--zero-commit", "--full-index", "--no-signature", "--no-stat", "--keep-subject"),
    *("--binary", "--src-prefix=a/", "--dst-prefix=b/", "--no-notes", "--no-thread", "--no-to", "--no-cc"),
)


def export_patch(repo: Path, commit: str) -> bytes:
    """The patch mail of one commit, independent of the user's git config."""
    return git(*FORMAT_PATCH, "-1", commit, cwd=repo, env=ISOLATED_CONFIG).stdout


def slug(text: str) -> str:
    """format-patch's file-name form of a subject: runs of other characters become '-', at most 52."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")[:52].rstrip("-.") or "patch"


def refresh_patches(
    name: str, *, project: Project | None = None, root: Path | str | None = None
) -> list[str]:
    """Write the checkout's commits on top of the pin as patches/<name>/ files and update the series
    list in upstreams.yaml (text edit of that list only). Returns the new series."""
    project = project if project is not None else load_project()
    upstream = project.upstream(name)
    repo = checkout_path(project, name, root)
    if not repo.is_dir():
        raise CheckoutError(f"{repo} does not exist; run setup for {name} first")
    with locked(lock_file_for(repo)):
        state = inspect_checkout(repo, upstream, project.patch_paths(name))
        if not state.on_pin:
            raise CheckoutError(
                f"{repo}: HEAD is not on top of the pin {upstream.pin_label} ({UPSTREAM_HEAD} is "
                f"{(state.upstream_head or 'missing')[:12]}); run setup for {name} first"
            )
        if state.changes:
            listing = "\n".join(f"  {c}" for c in state.changes)
            raise DirtyCheckoutError(
                f"{repo} has uncommitted changes; commit them (one commit per patch) or stash them, "
                f"then run refresh-patches again. Nothing was written.\n{listing}"
            )
        commits = git("rev-list", "--reverse", "--no-merges", f"{UPSTREAM_HEAD}..HEAD", cwd=repo).out.split()
        merges = git("rev-list", "--merges", f"{UPSTREAM_HEAD}..HEAD", cwd=repo).out.split()
        if merges:
            raise CheckoutError(
                f"{repo}: merge commit(s) {', '.join(m[:12] for m in merges)} cannot be "
                "exported as patches; rebase them into plain commits"
            )
        names = _choose_names(project, name, repo, commits)
        old_text = project.config_path.read_bytes().decode("utf-8")  # bytes: keep CRLF if there is any
        new_text = rewrite_patch_list(old_text, name, names) if list(upstream.patches) != names else old_text
        patch_dir = project.patch_dir(name)
        patch_dir.mkdir(parents=True, exist_ok=True)
        applied = []
        for commit, file_name in zip(commits, names):
            path = patch_dir / file_name
            data = export_patch(repo, commit)
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)
                print(f"wrote {path.relative_to(project.root)}")
            applied.append(AppliedPatch(file=file_name, sha256=file_sha256(path), commit=commit))
        for old in upstream.patches:
            if old not in names:
                (patch_dir / old).unlink(missing_ok=True)
                print(f"removed {(patch_dir / old).relative_to(project.root)} (no longer in the series)")
        if new_text != old_text:
            project.config_path.write_bytes(new_text.encode("utf-8"))
            print(f"updated the patches of {name} in {project.config_path.name}")
        write_state(repo, SeriesState(pin=state.upstream_head or "", patches=tuple(applied)))
    print(f"{name}: {len(names)} patch(es) in patches/{name}/")
    return names


def _choose_names(project: Project, name: str, repo: Path, commits: Sequence[str]) -> list[str]:
    """Keep the file name of a commit that came from a patch (by the setup record, else by subject);
    name new commits NNNN-<subject-slug>.patch."""
    upstream = project.upstream(name)
    state = read_state(repo)
    recorded = {p.commit: p.file for p in state.patches} if state else {}
    by_subject = {patch_subject(p): p.name for p in project.patch_paths(name)}
    taken = {p.name for p in project.patch_dir(name).glob("*.patch")} - set(upstream.patches)
    names: list[str] = []
    for index, commit in enumerate(commits, 1):
        candidate = recorded.get(commit)
        if candidate not in upstream.patches or candidate in names:
            candidate = by_subject.get(subject(repo, commit))
        if candidate is None or candidate in names:
            stem, n = f"{index:04d}-{slug(subject(repo, commit))}", 1
            candidate = f"{stem}.patch"
            while candidate in names or candidate in taken:
                n += 1
                candidate = f"{stem}-{n}.patch"
        names.append(candidate)
    return names


_PATCHES_LINE_RE = re.compile(
    r"^(?P<indent>[ \t]+)patches[ \t]*:(?P<value>[^#\r\n]*?)(?P<comment>[ \t]*#[^\r\n]*)?(?P<eol>\r?\n?)$"
)


def rewrite_patch_list(text: str, name: str, patches: Sequence[str]) -> str:
    """`text` of upstreams.yaml with only the `patches:` list of entry `name` replaced; every other
    byte stays. The result is re-parsed and compared; anything else changed is refused."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}[ \t]*:", line)), None)
    if start is None:
        raise ConfigError(f"no top-level entry {name!r} found in upstreams.yaml")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "\t", "\r", "\n", "#")),
        len(lines),
    )
    found = [(i, m) for i in range(start + 1, end) if (m := _PATCHES_LINE_RE.match(lines[i]))]
    if not found:
        raise ConfigError(f"upstreams.yaml: entry {name!r} has no 'patches:' line to rewrite")
    key, m = found[0]
    indent, value, comment, eol = m["indent"], m["value"].strip(), m["comment"] or "", m["eol"] or "\n"
    stop = key + 1
    item_indent = indent + "  "
    if not value:  # block list: its items, with comments or blank lines between items
        j = key + 1
        while j < end:
            item = re.match(r"^([ \t]*)- ", lines[j])
            if item and len(item.group(1)) >= len(indent):
                item_indent, stop = item.group(1), j + 1
            elif lines[j].strip() and not lines[j].lstrip().startswith("#"):
                break
            j += 1
    items = "".join(f"{item_indent}- {_yaml_scalar(p)}{eol}" for p in patches)
    head = f"{indent}patches: []{comment}{eol}" if not patches else f"{indent}patches:{comment}{eol}"
    new_text = "".join(lines[:key]) + head + items + "".join(lines[stop:])
    _verify_rewrite(text, new_text, name, patches)
    return new_text


def _yaml_scalar(value: str) -> str:
    return (
        value
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", value)
        else '"' + value.replace('"', '\\"') + '"'
    )


def _verify_rewrite(old_text: str, new_text: str, name: str, patches: Sequence[str]) -> None:
    expected = yaml.safe_load(old_text)
    expected[name]["patches"] = list(patches)
    try:
        same = yaml.safe_load(new_text) == expected
    except yaml.YAMLError:
        same = False
    if not same:
        raise ConfigError(
            f"cannot rewrite the patches list of {name!r} in upstreams.yaml by text; "
            f"set it by hand to {list(patches)}"
        )


def main(argv: Sequence[str]) -> int:
    """`python -m scripts refresh-patches <name>` (`make refresh-patches UPSTREAM=<name>`)."""
    parser = command.parser("refresh-patches", "export the checkout's commits as patches", root=True)
    parser.add_argument("name")
    args = parser.parse_args(argv)

    def body() -> int:
        refresh_patches(args.name, project=load_project(args.config), root=args.root)
        return 0

    return command.run(body)
