"""Reading a file from outside in bounded memory, and its digest (standard library only, so that
every reader, torch-free ones included, can use it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

READ_CHUNK = 1 << 24  # a file that grew after its size was checked is read on in chunks of 16 MiB
HASH_CHUNK = 1 << 20


def read_at_most(f: IO[bytes], most: int, *, expected: int = 0) -> bytes:
    """Up to ``most`` bytes of ``f``: the ``expected`` size (plus one, to see EOF) in one read, then
    chunks if the file grew meanwhile. Never one ``read(most)``, which allocates ``most`` bytes at
    once (a limit-sized buffer failed small reads under an address-space limit). Callers pass their
    limit plus one and refuse what comes back longer than the limit."""
    chunks = [f.read(min(most, expected + 1))]
    total = len(chunks[0])
    while total < most:
        more = f.read(min(READ_CHUNK, most - total))
        if not more:
            break
        chunks.append(more)
        total += len(more)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def file_sha256(path: Path | str) -> str:
    """The hex SHA-256 of the file at ``path``, read in chunks of 1 MiB (OSError as raised)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
