"""Run git with a clean environment (pre-commit's `no_git_env`), plus URL and repository helpers.

Every call strips inherited GIT_* variables (GIT_CONFIG_COUNT/KEY/VALUE too, so that no injected
config reaches `am` or `format-patch`), so a hook or an enclosing repository cannot redirect it,
and sets LC_ALL=C so that git's messages can be matched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast
from urllib.parse import unquote, urlparse

from scripts.upstream.errors import GitError

# Variables that configure how git reaches a server rather than which repository it works on.
_KEEP_GIT_ENV = frozenset(
    {
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_ALLOW_PROTOCOL",
        "GIT_ASKPASS",
        "GIT_TERMINAL_PROMPT",
    }
)
# Serves a blobless fetch by SHA from a plain local git dir, even one that lacks some blobs.
LOCAL_UPLOAD_PACK = "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"
# The committer of every commit setup makes; with --committer-date-is-author-date it fixes commit ids.
KIT_COMMITTER = {"GIT_COMMITTER_NAME": "kit", "GIT_COMMITTER_EMAIL": "kit@localhost"}
# Neutralise user and system config for commands whose output must not depend on it.
ISOLATED_CONFIG = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def no_git_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without the GIT_* variables that would redirect git."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}


@dataclass(frozen=True)
class GitResult:
    """What a git command returned; `stdout` stays bytes so patches keep their exact bytes."""

    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape").strip()


def git(
    *args: str,
    cwd: Path | str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    stream: bool = False,
    timeout: float | None = None,
) -> GitResult:
    """Run `git args...` in `cwd`; raise GitError on failure when `check`.

    `env` adds variables to the cleaned environment. With `stream`, git's stderr (progress) is
    copied to ours as it arrives and still kept for the error message; `timeout` is then ignored.
    """
    full_env = no_git_env()
    full_env["LC_ALL"] = "C"
    full_env["LANGUAGE"] = "C"
    full_env.update(env or {})
    cmd = ["git", *args]
    try:
        if stream:
            rc, out, err = _run_streaming(cmd, cwd, full_env)
        else:
            proc = subprocess.run(
                cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
            )
            rc, out, err = proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        raise GitError(f"{_show(args)} timed out after {timeout:g}s in {cwd or os.getcwd()}") from e
    result = GitResult(returncode=rc, stdout=out, stderr=err)
    if check and rc != 0:
        raise GitError(f"{_show(args)} failed (exit {rc}) in {cwd or os.getcwd()}:\n{err.strip()}")
    return result


def _show(args: Sequence[str]) -> str:
    return "git " + " ".join(a if a and " " not in a else repr(a) for a in args)


def _run_streaming(cmd: list[str], cwd: Path | str | None, env: dict[str, str]) -> tuple[int, bytes, str]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = cast(IO[bytes], proc.stdout), cast(IO[bytes], proc.stderr)
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(stdout.read()))
    reader.start()
    err_chunks: list[str] = []
    with stdout, stderr:
        while chunk := os.read(stderr.fileno(), 4096):
            text = chunk.decode("utf-8", "replace")
            err_chunks.append(text)
            sys.stderr.write(text)
            sys.stderr.flush()
        reader.join()
    return proc.wait(), b"".join(out_chunks), "".join(err_chunks)


# --- repository queries ----------------------------------------------------------------------------


def rev_parse(repo: Path, rev: str) -> str | None:
    """The full SHA `rev` names in `repo`, or None if it names nothing."""
    result = git("rev-parse", "--verify", "--quiet", "--end-of-options", rev, cwd=repo, check=False)
    return result.out if result.returncode == 0 else None


def is_ancestor(repo: Path, ancestor: str, rev: str) -> bool:
    return git("merge-base", "--is-ancestor", ancestor, rev, cwd=repo, check=False).returncode == 0


def commits_between(repo: Path, base: str, head: str) -> list[str]:
    """Commits reachable from `head` but not `base`, oldest first."""
    return git("rev-list", "--reverse", f"{base}..{head}", cwd=repo).out.split()


def changed_files(repo: Path) -> list[str]:
    """`git status --porcelain` lines (staged, unstaged and untracked, not ignored); empty when clean."""
    result = git("status", "--porcelain=v1", "--untracked-files=all", "--ignore-submodules=none", cwd=repo)
    return [line for line in result.stdout.decode("utf-8", "replace").splitlines() if line]


def subject(repo: Path, rev: str) -> str:
    return git("log", "-1", "--format=%s", rev, cwd=repo).out


# --- URLs ------------------------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_RE = re.compile(r"[^/]+:")


def is_local_url(url: str) -> bool:
    """True for a path or file:// URL (served by a local upload-pack), False for ssh/https/scp-style."""
    if url.startswith("file://"):
        return True
    return not (_SCHEME_RE.match(url) or _SCP_RE.match(url))


def local_path(url: str) -> Path:
    """The filesystem path of a local URL."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    return Path(url)


def normalize_url(url: str, *, base: Path) -> str:
    """Local paths become absolute (relative ones count from `base`); other URLs stay as they are."""
    if is_local_url(url) and not url.startswith("file://"):
        path = Path(url).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    return url


def is_reachable(url: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Whether git can list `url` within `timeout` seconds, and why not if it cannot."""
    if is_local_url(url) and not local_path(url).exists():
        return False, f"{local_path(url)} does not exist"
    try:
        result = git(
            "ls-remote", "--", url, "HEAD", check=False, timeout=timeout, env={"GIT_TERMINAL_PROMPT": "0"}
        )
    except GitError as e:
        return False, str(e)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["no message"]
        return False, f"git ls-remote {url} failed: {last[0]}"
    return True, f"git ls-remote {url} answered"
