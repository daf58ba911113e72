"""Files that readers see whole or not at all: written under a temporary name beside their final
one (the same directory, so the same filesystem), then renamed or linked into place.

The local artifact store, the read cache and the embedded MLflow store's kept empty copy all
write this way. A temporary name ends in `PARTIAL_SUFFIX`: whoever lists such a directory skips
those (a write in progress, or one a crash left behind).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def written_beside(path: Path, data: bytes, durable: bool = True) -> Path:
    """`data` in a new file next to `path`, for the caller to rename or link into place; on disk
    before this returns when `durable`. The file takes the umask's permissions, as any file this
    process creates (`tempfile.mkstemp`'s would be 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """`data` at `path`, replacing what was there in one rename."""
    temporary = written_beside(path, data, durable)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
