"""Files that appear whole or not at all: write beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """Yield ``(file, temporary path)``; ``path`` gets the file only if the block ends normally.

    The temporary file is hidden in ``path``'s folder (so the rename is atomic) and removed if the
    block raises. The block may close the file itself to check it by its path before the move.
    The result is an ordinary 0644 file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out, tmp
        tmp.chmod(0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
