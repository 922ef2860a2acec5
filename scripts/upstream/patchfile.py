"""Read patch files (git format-patch mails): subject, DEP-3 fields, content hash, failing paths.

A kit patch says why it exists in its commit message, DEP-3 style (see CONTRIBUTING.md):

    Subject: Return raw logits from Detect for Grad-CAM

    Description: The kit back-propagates from class logits; upstream returns sigmoids.
    Origin: vendor
    Upstream-Status: Inappropriate [kit-specific]
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from pathlib import Path

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
# The paths git names when `git apply` or `git am` refuse a hunk.
_FAILED_PATH_RES = (
    re.compile(r"^error: patch failed: (.+):\d+$"),
    re.compile(
        r"^error: (.+): (?:patch does not apply|does not exist in index|already exists in index"
        r"|already exists in working directory|does not match index|No such file or directory)$"
    ),
    re.compile(r"^CONFLICT \([^)]*\): .*Merge conflict in (.+)$"),
    re.compile(r"^error: sha1 information is lacking or useless \((.+)\)\.$"),
)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _message(path: Path) -> tuple[str, list[str], list[str]]:
    """(subject, header lines, body lines before the diff) of a format-patch mail."""
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    payload = msg.get_payload(decode=True)
    body = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(msg.get_payload())
    lines = []
    for line in body.splitlines():
        if line == "---" or line.startswith("diff --git "):
            break
        lines.append(line)
    headers = [f"{k}: {v}" for k, v in msg.items()]
    return str(msg.get("Subject", "")).strip(), headers, lines


def patch_subject(path: Path) -> str:
    return _message(path)[0]


def dep3_fields(path: Path) -> dict[str, str]:
    """DEP-3 fields found in the mail headers or the commit message body (keys lowercased)."""
    _, headers, body = _message(path)
    fields: dict[str, str] = {}
    for line in (*headers, *body):
        m = _FIELD_RE.match(line)
        if m:
            fields.setdefault(m.group(1).lower(), m.group(2).strip())
    return fields


def dep3_problems(path: Path) -> list[str]:
    """What `path`'s header lacks: a Description, and an Upstream-Status or Forwarded field."""
    fields = dep3_fields(path)
    problems = []
    if not fields.get("description"):
        problems.append("no 'Description:' line saying why the patch exists")
    if not (fields.get("upstream-status") or fields.get("forwarded")):
        problems.append("no 'Upstream-Status:' (or 'Forwarded:') line")
    return problems


def failed_paths(git_output: str) -> list[str]:
    """The files git says a patch failed on, in the order named, each once."""
    paths: list[str] = []
    for line in git_output.splitlines():
        for regex in _FAILED_PATH_RES:
            m = regex.match(line.strip())
            if m and m.group(1) not in paths:
                paths.append(m.group(1))
    return paths
