"""Download a file (e.g. released weights) once, verified, never leaving a half-written file behind.

Bytes go to ``<dest>.part`` and are renamed to ``dest`` only when complete and, if a SHA-256 was
given, verified; a failed or interrupted transfer deletes the ``.part``. The digest is kept next to
the file in ``<dest>.sha256`` (``sha256sum`` format) so later runs and people can check it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Union

from tqdm import tqdm

from kit.core.errors import ChecksumError, DownloadError
from kit.core.files import file_sha256

PathLike = Union[str, Path]
CHUNK = 1 << 20
LOCAL_FILE_HINT = "if you have the file, pass it with --weights PATH (or WEIGHTS=path with make)"


def download(
    url: str, dest: PathLike, *, sha256: str | None = None, timeout: float = 30, progress: bool = True
) -> Path:
    """Return ``dest``, downloading ``url`` to it first unless it is already there (and matches)."""
    dest = Path(dest)
    expected = sha256.strip().lower() if sha256 else None
    if dest.is_file() and (expected is None or file_sha256(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        digest = _fetch(url, part, timeout=timeout, progress=progress)
        if expected is not None and digest != expected:
            raise ChecksumError(
                f"downloaded {url} but its SHA-256 is {digest}, expected {expected}; the file was "
                "deleted (the server's file changed or the transfer was corrupted); "
                f"{LOCAL_FILE_HINT}"
            )
        os.replace(part, dest)
    except BaseException:  # including Ctrl-C: never leave a partial file that looks like progress
        part.unlink(missing_ok=True)
        raise
    sidecar(dest).write_text(f"{digest}  {dest.name}\n")
    return dest


def sidecar(dest: PathLike) -> Path:
    """The ``<dest>.sha256`` file that records a download's digest."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def _fetch(url: str, part: Path, *, timeout: float, progress: bool) -> str:
    """Stream ``url`` into ``part`` with a progress bar; return the SHA-256 of what was written."""
    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "kit-download"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            name = part.name[: -len(".part")]
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            written = out.tell()
    except urllib.error.HTTPError as e:
        raise DownloadError(
            f"could not download {url}: the server answered {e.code} {e.reason}; {LOCAL_FILE_HINT}"
        ) from e
    except urllib.error.URLError as e:
        raise DownloadError(f"could not reach {url} ({e.reason}); {LOCAL_FILE_HINT}") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DownloadError(f"could not download {url} ({type(e).__name__}: {e}); {LOCAL_FILE_HINT}") from e
    if total is not None and written != total:
        raise DownloadError(f"download of {url} stopped after {written} of {total} bytes; {LOCAL_FILE_HINT}")
    return h.hexdigest()
