"""Atomic files and JSON: written to a temporary name in the same folder and renamed, read with a clear error.

Readers never see a partial file, so an interrupted job leaves nothing a rerun would trust.
Imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or mask file cannot be read; delete it and rerun the step that wrote it."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Readers never see a partial file, so an interrupted job leaves nothing a rerun would trust.
    The file gets the usual permissions (0666 less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(obj: Any, path: str | Path) -> None:
    """Atomically write JSON (indented, keys sorted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or unreadable file is an error that says how to repair it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; run the step that writes it first") from None
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(f"{path} is not valid JSON ({e}); delete it and rerun") from e
